"""What the import benchmark prints: its tables of runs, and the checks of their row counts."""

from __future__ import annotations

import statistics
from typing import TextIO

from kmdb.bench.runs import Run

# The targets for import time / reload time, by worker count.
TARGETS = {1: 1.6, 2: 1.3}
RSS_TARGET_MB = 300
STAGES = ("download", "parse", "identities", "rows", "load")


def _mb(kib: float) -> float:
    return kib / 1024


def _ratio(seconds: float, base: float | None) -> str:
    return f"{seconds / base:.2f}x" if base else "-"


def median_ratios(runs: list[Run]) -> dict[int, list[float]]:
    """Each worker count's import/reload ratios, one per round (rounds without a reload left out)."""
    ratios: dict[int, list[float]] = {}
    for r in runs:
        if r.baseline:
            ratios.setdefault(r.workers, []).append(r.seconds / r.baseline)
    return ratios


def report(
    runs: list[Run], inline: list[Run], baseline: float | None, lines: int, out: TextIO
) -> None:
    """The tables of the runs: speed against the reload, memory, where the time goes."""

    def p(text: str = "") -> None:
        print(text, file=out)

    rounds = max((r.round for r in runs), default=1)
    p()
    p("Import with W burst workers (wall time from kmdb-import to the last worker's exit)")
    p(
        f"{'round ' if rounds > 1 else ''}{'W':>2} {'seconds':>8} {'lines/s':>9} {'events/s':>9} "
        f"{'import/reload':>14} {'target':>7} {'import/best':>12}  "
        f"peak RSS MB per worker (target < {RSS_TARGET_MB})"
    )
    for r in runs:
        target = TARGETS.get(r.workers)
        rss = ", ".join(f"{_mb(kib):.0f}" for kib in r.rss_kib)
        p(
            f"{f'{r.round:>5} ' if rounds > 1 else ''}"
            f"{r.workers:>2} {r.seconds:>8.1f} {lines / r.seconds:>9,.0f} "
            f"{r.counts['events'] / r.seconds:>9,.0f} {_ratio(r.seconds, r.baseline):>14} "
            f"{f'{target}x' if target else '-':>7} {_ratio(r.seconds, r.best):>12}  {rss}"
        )
    p(
        "  best: the same rows loaded into the tables without secondary indexes, then indexed "
        "(target import/best <= 1.0x at 300,000 lines)"
    )
    if rounds > 1:
        for w, ratios in sorted(median_ratios(runs).items()):
            p(
                f"  W={w}: median import/reload {statistics.median(ratios):.2f}x over {len(ratios)} "
                f"rounds (from {min(ratios):.2f}x to {max(ratios):.2f}x)"
            )
    p()
    p(
        "Where the workers' time goes (seconds summed over jobs; import stages from the jobs' timings)"
    )
    extra = sorted({s for r in runs for s in r.stages} - set(STAGES))
    stages = [*STAGES, *extra]
    head = " ".join(f"{s:>10}" for s in stages)
    p(f"{'W':>2} {head} {'imports':>8} {'scan':>6} {'settle':>13} {'enqueue':>8} {'idle':>6}")
    for r in runs:
        cells = " ".join(f"{r.stages.get(s, 0.0):>10.1f}" for s in stages)
        settle = "+".join(f"{s:.1f}" for s in r.settles) or "-"
        busy = r.import_jobs + r.scan + sum(r.settles)
        idle = r.workers * (r.seconds - r.enqueue) - busy
        p(
            f"{r.workers:>2} {cells} {r.import_jobs:>8.1f} {r.scan:>6.1f} {settle:>13} "
            f"{r.enqueue:>8.1f} {idle:>6.1f}"
        )
    p("  imports: import jobs' run time (stages + the rest); idle: worker-seconds outside jobs")
    if inline:
        p()
        p("In-process import (kmdb-import --inline --source FOLDER)")
        p(f"{'database':>8} {'seconds':>8} {'lines/s':>9} {'events/s':>9} {'vs reload':>10}")
        for r in inline:
            p(
                f"{r.label.split()[-1]:>8} {r.seconds:>8.1f} {lines / r.seconds:>9,.0f} "
                f"{r.counts['events'] / r.seconds:>9,.0f} {_ratio(r.seconds, baseline):>10}"
            )


def cpu_table(runs: list[Run], baseline: float | None, reload_cpu: float, out: TextIO) -> None:
    """The CPU seconds of each process during each run, and of the server during the reload."""
    print("\nCPU seconds used (2 cores give 2 CPU seconds a second)", file=out)
    if baseline is not None:
        print(f"  reload: MariaDB {reload_cpu:.1f}", file=out)
    for r in runs:
        print(
            f"  W={r.workers}: MariaDB {r.cpu['server']:.1f}, workers {r.cpu['workers']:.1f}, "
            f"kmdb-import {r.cpu['import']:.1f}, S3 server and bench {r.cpu['s3']:.1f}",
            file=out,
        )


def timelines(runs: list[Run], out: TextIO) -> None:
    """When each job ran, on which worker (--timeline)."""
    for r in runs:
        print(f"\nTimeline of W={r.workers} (seconds from the start of kmdb-import)", file=out)
        workers = sorted({w for _, _, w, _ in r.timeline})
        for start, end, worker, what in sorted(r.timeline):
            print(
                f"  {start:6.2f} {end:6.2f}  worker {workers.index(worker) + 1}  {what}",
                file=out,
            )


def compare_counts(runs: list[Run]) -> list[str]:
    """Differences in the final row counts between runs (there should be none)."""
    if not runs:
        return []
    first, problems = runs[0], []
    for r in runs[1:]:
        for name in ("events", "properties", "users", "people", "keys", "aliases"):
            if r.counts[name] != first.counts[name]:
                problems.append(
                    f"{name}: {first.label} has {first.counts[name]:,}, "
                    f"{r.label} has {r.counts[name]:,}"
                )
    return problems
