"""kmdb.reports.chart: a report drawn as PNG or SVG with matplotlib (the `charts` extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmdb.errors import ReportError
from kmdb.reports.chart import check_chart, draw

pytest.importorskip("matplotlib")

REPORTS = {
    "funnel": {
        "report": "funnel",
        "mode": "strict",
        "steps": ["visited", "paid\x07"],
        "segments": [
            {"value": None, "people": [10, 4], "from_previous": [1.0, 0.4], "overall": [1.0, 0.4]},
            {"value": "B\n", "people": [5, 5], "from_previous": [1.0, 1.0], "overall": [1.0, 1.0]},
        ],
    },
    "cohort": {
        "report": "cohort",
        "first": "a",
        "return": "b",
        "period": "week",
        "bucket": "day",
        "count": "first",
        "cohorts": [{"period": "2013-03-04", "people": 4, "returned": [1, 2, 0]}],
    },
    "revenue": {
        "report": "revenue",
        "property": "amount",
        "period": "month",
        "periods": [
            {
                "period": "2013-03",
                "revenue": "10.00",
                "refunds": "-1.00",
                "paying": 2,
                "new_paying": 2,
                "churned": 0,
            }
        ],
        "total": {"revenue": "10.00", "paying": 2, "revenue_per_paying": "5.00", "not_numbers": 0},
    },
    "abtest": {
        "report": "abtest",
        "property": "variant",
        "goal": "paid",
        "baseline": "A",
        "variants": [
            {
                "variant": "A",
                "people": 10,
                "converted": 2,
                "rate": 0.2,
                "certainty": None,
                "winner": False,
            },
            {
                "variant": "B",
                "people": 10,
                "converted": 6,
                "rate": 0.6,
                "certainty": 0.97,
                "winner": True,
            },
        ],
    },
}


@pytest.mark.parametrize("kind", sorted(REPORTS))
def test_each_report_is_drawn_as_png_and_svg(kind: str, tmp_path: Path) -> None:
    png, svg = tmp_path / f"{kind}.png", tmp_path / f"{kind}.svg"
    draw(REPORTS[kind], png)
    draw(REPORTS[kind], svg)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text


def test_labels_with_control_characters_are_drawn_with_them_replaced(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.rcParams["svg.fonttype"] = "none"  # text kept as text, to be read back
    try:
        draw(REPORTS["funnel"], tmp_path / "funnel.svg")
    finally:
        matplotlib.rcParams["svg.fonttype"] = "path"
    text = (tmp_path / "funnel.svg").read_text()
    assert "paid?" in text and "\x07" not in text


def test_a_chart_must_be_png_or_svg_before_any_work() -> None:
    with pytest.raises(ReportError, match=r"^--chart 'report.pdf' must end in .png or .svg.$"):
        check_chart("report.pdf")
    check_chart("Report.PNG")
