"""A report as a terminal table, JSON or CSV, and as rows for a spreadsheet or a DataFrame."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from kmdb.errors import ReportError

FORMATS = ("table", "json", "csv")


def rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The report as a header and flat rows: what CSV prints and a DataFrame holds."""
    kind = report["report"]
    if kind == "funnel":
        header = ["segment", "step", "event", "people", "from_previous", "overall"]
        body = [
            [s["value"], j + 1, name, s["people"][j], s["from_previous"][j], s["overall"][j]]
            for s in report["segments"]
            for j, name in enumerate(report["steps"])
        ]
    elif kind == "cohort":
        width = max((len(c["returned"]) for c in report["cohorts"]), default=0)
        header = ["period", "people"] + [f"{report['bucket']}_{k}" for k in range(width)]
        body = [[c["period"], c["people"], *c["returned"]] for c in report["cohorts"]]
    elif kind == "revenue":
        header = ["period", "revenue", "refunds", "paying", "new_paying", "churned"]
        body = [[p[h] for h in header] for p in report["periods"]]
    else:
        header = ["variant", "people", "converted", "rate", "certainty", "winner"]
        body = [[v[h] for h in header] for v in report["variants"]]
    return header, body


def render(report: dict[str, Any], fmt: str = "table") -> str:
    """The report as text in one of FORMATS (no trailing newline)."""
    if fmt == "json":
        return json.dumps(report, indent=2, ensure_ascii=False)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        header, body = rows(report)
        writer.writerow(header)
        writer.writerows([["" if x is None else x for x in row] for row in body])
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise ReportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}.")
    return "\n".join(_TABLES[report["report"]](report))


def _percent(x: float) -> str:
    return f"{x * 100:.1f}%"


def _grid(header: list[str], body: list[list[str]], left: int = 1) -> list[str]:
    """Columns aligned: the first `left` ones to the left, the others (numbers) to the right."""
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    return [
        "  ".join(
            str(cell).ljust(w) if i < left else str(cell).rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *body]
    ]


def _missing(report: dict[str, Any]) -> list[str]:
    if report.get("missing"):
        names = ", ".join(repr(n) for n in report["missing"])
        return [f"Not found in the database: {names}; the report is empty.", ""]
    return []


def _funnel(report: dict[str, Any]) -> list[str]:
    lines = _missing(report) + [
        f"Funnel ({report['mode']}): " + " -> ".join(report["steps"]),
    ]
    for segment in report["segments"]:
        lines.append("")
        if segment["value"] is not None or len(report["segments"]) > 1:
            shown = "(none)" if segment["value"] is None else segment["value"]
            lines.append(f"Segment: {shown}")
        body = [
            [
                f"{j + 1}. {name}",
                f"{segment['people'][j]:,}",
                _percent(segment["from_previous"][j]),
                _percent(segment["overall"][j]),
            ]
            for j, name in enumerate(report["steps"])
        ]
        lines += _grid(["step", "people", "from previous", "overall"], body)
    if not report["segments"]:
        lines += ["", "Nobody entered this funnel."]
    return lines


def _cohort(report: dict[str, Any]) -> list[str]:
    counted = "first return" if report["count"] == "first" else "every return"
    lines = _missing(report) + [
        f"Cohort: {report['first']} then {report['return']}; cohorts by {report['period']}, "
        f"returns by {report['bucket']} ({counted}), as a share of the cohort",
        "",
    ]
    if not report["cohorts"]:
        return [*lines, "Nobody is in a cohort."]
    width = len(report["cohorts"][0]["returned"])
    header = ["cohort", "people"] + [f"{report['bucket']} {k}" for k in range(width)]
    body = [
        [c["period"], f"{c['people']:,}"] + [_percent(n / c["people"]) for n in c["returned"]]
        for c in report["cohorts"]
    ]
    return lines + _grid(header, body)


def _revenue(report: dict[str, Any]) -> list[str]:
    lines = _missing(report) + [f"Revenue from {report['property']!r} by {report['period']}", ""]
    header = ["period", "revenue", "refunds", "paying", "new paying", "churned"]
    body = [
        [
            p["period"],
            _money(p["revenue"]),
            _money(p["refunds"]),
            f"{p['paying']:,}",
            f"{p['new_paying']:,}",
            f"{p['churned']:,}",
        ]
        for p in report["periods"]
    ]
    total = report["total"]
    lines += _grid(header, body) if body else ["No amounts in the range."]
    lines += [
        "",
        f"Total revenue {_money(total['revenue'])} from {total['paying']:,} paying people "
        f"({_money(total['revenue_per_paying'])} each); "
        f"{total['not_numbers']:,} values were not numbers.",
    ]
    return lines


def _money(text: str) -> str:
    whole, cents = text.split(".")
    return f"{int(whole):,}.{cents}" if not whole.startswith("-0") else f"{whole}.{cents}"


def _abtest(report: dict[str, Any]) -> list[str]:
    lines = _missing(report) + [
        f"A/B test: {report['property']!r}, goal {report['goal']!r}, "
        f"baseline {report['baseline']!r}",
        "",
    ]
    if not report["variants"]:
        return [*lines, "Nobody took part."]
    header = ["variant", "people", "converted", "rate", "certainty", "winner"]
    body = [
        [
            v["variant"],
            f"{v['people']:,}",
            f"{v['converted']:,}",
            _percent(v["rate"]),
            "baseline" if v["certainty"] is None else _percent(v["certainty"]),
            "yes" if v["winner"] else "",
        ]
        for v in report["variants"]
    ]
    return lines + _grid(header, body)


_TABLES = {"funnel": _funnel, "cohort": _cohort, "revenue": _revenue, "abtest": _abtest}
