"""kmdb.reports.render: a report as a terminal table, JSON, CSV, and rows (pure: hand-made reports)."""

from __future__ import annotations

import json

import pytest

from kmdb.errors import ReportError
from kmdb.reports.render import render, rows

FUNNEL = {
    "report": "funnel",
    "mode": "strict",
    "steps": ["visited", "paid"],
    "segments": [
        {
            "value": None,
            "people": [1200, 30],
            "from_previous": [1.0, 0.025],
            "overall": [1.0, 0.025],
        },
        {"value": "B", "people": [7, 7], "from_previous": [1.0, 1.0], "overall": [1.0, 1.0]},
    ],
}
REVENUE = {
    "report": "revenue",
    "property": "amount",
    "period": "month",
    "periods": [
        {
            "period": "2013-03",
            "revenue": "12345.50",
            "refunds": "-0.50",
            "paying": 1500,
            "new_paying": 3,
            "churned": 0,
        }
    ],
    "total": {
        "revenue": "12345.50",
        "paying": 1500,
        "revenue_per_paying": "8.23",
        "not_numbers": 2,
    },
    "missing": ["amount"],
}


def test_a_funnel_as_a_table_has_a_block_per_segment_with_its_steps() -> None:
    assert render(FUNNEL) == "\n".join(
        [
            "Funnel (strict): visited -> paid",
            "",
            "Segment: (none)",
            "step        people  from previous  overall",
            "1. visited   1,200         100.0%   100.0%",
            "2. paid         30           2.5%     2.5%",
            "",
            "Segment: B",
            "step        people  from previous  overall",
            "1. visited       7         100.0%   100.0%",
            "2. paid          7         100.0%   100.0%",
        ]
    )


def test_csv_and_rows_are_one_row_per_segment_and_step_with_none_left_empty() -> None:
    header, body = rows(FUNNEL)
    assert header == ["segment", "step", "event", "people", "from_previous", "overall"]
    assert body[0] == [None, 1, "visited", 1200, 1.0, 1.0]
    assert render(FUNNEL, "csv").splitlines() == [
        "segment,step,event,people,from_previous,overall",
        ",1,visited,1200,1.0,1.0",
        ",2,paid,30,0.025,0.025",
        "B,1,visited,7,1.0,1.0",
        "B,2,paid,7,1.0,1.0",
    ]


def test_json_is_the_report_itself() -> None:
    assert json.loads(render(REVENUE, "json")) == REVENUE


def test_money_gets_thousands_separators_and_missing_names_are_said_first() -> None:
    table = render(REVENUE).splitlines()
    assert table[0] == "Not found in the database: 'amount'; the report is empty."
    assert table[2] == "Revenue from 'amount' by month"
    assert table[5].split() == ["2013-03", "12,345.50", "-0.50", "1,500", "3", "0"]
    assert table[-1] == (
        "Total revenue 12,345.50 from 1,500 paying people (8.23 each); 2 values were not numbers."
    )


def test_empty_reports_say_so() -> None:
    cohort = {
        "report": "cohort",
        "first": "a",
        "return": "b",
        "period": "week",
        "bucket": "day",
        "count": "first",
        "cohorts": [],
    }
    assert render(cohort).splitlines()[-1] == "Nobody is in a cohort."
    abtest = {"report": "abtest", "property": "v", "goal": "g", "baseline": None, "variants": []}
    assert render(abtest).splitlines()[-1] == "Nobody took part."
    funnel = {**FUNNEL, "segments": []}
    assert render(funnel).splitlines()[-1] == "Nobody entered this funnel."


def test_an_unknown_format_is_one_sentence() -> None:
    with pytest.raises(ReportError, match=r"^--format 'xml' is not one of table, json, csv\.$"):
        render(FUNNEL, "xml")
