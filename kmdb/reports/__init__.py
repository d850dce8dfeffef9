"""KM's reports over the imported tables: Funnel, Cohort, Revenue and A/B test.

Each function takes an engine or a database URL and the report's options and
returns the report as plain Python data, in the JSON shape of `kmdb report ...
--format json`; `to_dataframe` turns one into a pandas DataFrame. Example:

    from kmdb.reports import funnel, render
    report = funnel("sqlite:///kmdb.sqlite3", ["visited site", "signed up"], from_="2013-01-01")
    print(render(report))
"""

from __future__ import annotations

from typing import Any

from kmdb.reports.abtest import abtest
from kmdb.reports.chart import check_chart, draw
from kmdb.reports.cohort import cohort
from kmdb.reports.funnel import funnel
from kmdb.reports.render import FORMATS, render, rows
from kmdb.reports.revenue import revenue

__all__ = [
    "FORMATS",
    "abtest",
    "check_chart",
    "cohort",
    "draw",
    "funnel",
    "render",
    "revenue",
    "rows",
    "to_dataframe",
]


def to_dataframe(report: dict[str, Any]) -> Any:
    """The report's rows (as `--format csv` prints them) as a pandas DataFrame."""
    try:
        import pandas  # type: ignore[import-untyped, unused-ignore]  # optional, stubs not required
    except ImportError:
        from kmdb.errors import ConfigError

        raise ConfigError("to_dataframe needs pandas; run pip install pandas.") from None
    header, body = rows(report)
    return pandas.DataFrame(body, columns=header)
