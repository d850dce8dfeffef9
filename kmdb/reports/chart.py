"""A report as a picture (PNG or SVG), with matplotlib from the optional `charts` extra."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kmdb.errors import ConfigError, ReportError

KINDS = (".png", ".svg")


def check_chart(path: str | Path) -> None:
    """Raise before any work when path cannot be drawn: not PNG/SVG, or no matplotlib."""
    if Path(path).suffix.lower() not in KINDS:
        raise ReportError(f"--chart {str(path)!r} must end in .png or .svg.")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("Charts need matplotlib; run pip install 'kmdb[charts]'.") from None


def _label(value: object) -> str:
    # Names and values may hold control characters, which no font can draw.
    return "".join(c if c.isprintable() else "?" for c in str(value))


def draw(report: dict[str, Any], path: str | Path) -> None:
    """Write the report's chart to path; the extension picks PNG or SVG."""
    check_chart(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = 5.0
    if report["report"] == "cohort":  # one row per cohort, each readable
        height = min(40.0, max(5.0, 0.3 * len(report["cohorts"]) + 2))
    figure, axes = plt.subplots(figsize=(9, height), dpi=110)
    try:
        _DRAW[report["report"]](report, axes, figure)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)


def _funnel(report: dict[str, Any], axes: Any, _figure: Any) -> None:
    steps = report["steps"]
    segments = report["segments"][:8]
    width = 0.8 / max(1, len(segments))
    for i, segment in enumerate(segments):
        label = "(none)" if segment["value"] is None else _label(segment["value"])
        xs = [j + (i - (len(segments) - 1) / 2) * width for j in range(len(steps))]
        bars = axes.bar(xs, segment["people"], width=width, label=label)
        for bar, share in zip(bars, segment["overall"], strict=True):
            axes.annotate(
                f"{share * 100:.0f}%",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    axes.set_xticks(range(len(steps)), [f"{j + 1}. {_label(s)}" for j, s in enumerate(steps)])
    axes.set_ylabel("people")
    axes.set_title(f"Funnel ({report['mode']})")
    if len(segments) > 1:
        axes.legend(title="segment")


def _cohort(report: dict[str, Any], axes: Any, figure: Any) -> None:
    cohorts = report["cohorts"]
    width = len(cohorts[0]["returned"]) if cohorts else 1
    grid = [[n / c["people"] * 100 for n in c["returned"]] for c in cohorts] or [[0.0] * width]
    image = axes.imshow(grid, aspect="auto", cmap="Blues", vmin=0)
    darkest = max(max(line) for line in grid) or 1
    for r, line in enumerate(grid if cohorts and width <= 16 else []):
        for k, value in enumerate(line):
            color = "white" if value > 0.6 * darkest else "black"
            axes.text(k, r, f"{value:.0f}%", ha="center", va="center", fontsize=7, color=color)
    axes.set_xticks(range(width), [str(k) for k in range(width)])
    axes.set_yticks(range(len(cohorts)), [f"{c['period']} ({c['people']})" for c in cohorts])
    axes.set_xlabel(f"{report['bucket']}s after the first '{_label(report['first'])}'")
    axes.set_title(
        f"Retention: '{_label(report['return'])}' (% of cohort, {report['count']} return)"
    )
    figure.colorbar(image, ax=axes, label="% of cohort")


def _revenue(report: dict[str, Any], axes: Any, _figure: Any) -> None:
    periods = report["periods"]
    names = [p["period"] for p in periods]
    axes.bar(names, [float(p["revenue"]) for p in periods], label="revenue")
    axes.bar(names, [float(p["refunds"]) for p in periods], label="refunds", color="tab:red")
    axes.axhline(0, color="black", linewidth=0.5)
    axes.set_ylabel(f"{_label(report['property'])} per {report['period']}")
    right = axes.twinx()
    right.plot(names, [p["paying"] for p in periods], color="tab:green", marker="o", label="paying")
    right.set_ylabel("paying people")
    right.set_ylim(bottom=0)
    axes.set_title(f"Revenue by {report['period']}")
    axes.tick_params(axis="x", labelrotation=45)
    lines, labels = axes.get_legend_handles_labels()
    more, more_labels = right.get_legend_handles_labels()
    axes.legend(lines + more, labels + more_labels, loc="upper left")


def _abtest(report: dict[str, Any], axes: Any, _figure: Any) -> None:
    variants = report["variants"]
    names = [_label(v["variant"]) for v in variants]
    rates = [v["rate"] * 100 for v in variants]
    # A 95% interval of each rate, from the same normal approximation as the certainty.
    errors = [
        196 * math.sqrt(v["rate"] * (1 - v["rate"]) / v["people"]) if v["people"] else 0
        for v in variants
    ]
    colors = [
        "tab:gray"
        if v["variant"] == report["baseline"]
        else ("tab:green" if v["winner"] else "tab:blue")
        for v in variants
    ]
    axes.bar(names, rates, yerr=errors, capsize=6, color=colors)
    for i, v in enumerate(variants):
        note = "baseline" if v["certainty"] is None else f"{v['certainty'] * 100:.1f}% sure"
        axes.annotate(
            note, (i, 0), ha="center", va="bottom", xytext=(0, 4), textcoords="offset points",
            fontsize=8, color="white",
        )  # fmt: skip
    axes.set_ylabel(f"% who did '{_label(report['goal'])}'")
    axes.set_title(f"A/B test '{_label(report['property'])}' (bars: 95% interval)")


_DRAW = {"funnel": _funnel, "cohort": _cohort, "revenue": _revenue, "abtest": _abtest}
