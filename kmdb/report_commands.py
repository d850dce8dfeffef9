"""The `kmdb report` commands: KM's reports (kmdb.reports) over the imported data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from kmdb.console import friendly, load_settings


@click.group()
def report() -> None:
    """KM's reports over the imported data: funnel, cohort, revenue, abtest.

    Each takes --from/--to (days, inclusive, UTC), --format table|json|csv and
    --chart FILE.png|FILE.svg (needs pip install 'kmdb[charts]'). See docs/reports.md.
    """


def _report_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--from", "from_", metavar="DAY", help="First day, e.g. 2013-01-01."),
            click.option("--to", metavar="DAY", help="Last day, included."),
            click.option(
                "--format", "fmt", default="table", show_default=True, help="table, json or csv."
            ),
            click.option(
                "--chart", metavar="FILE", help="Also draw the report to FILE.png or FILE.svg."
            ),
        ]
    ):
        command = option(command)
    return command


def _show_report(
    build: Callable[..., dict[str, Any]], fmt: str, chart: str | None, **options: Any
) -> None:
    from kmdb.errors import ReportError
    from kmdb.load.engine import make_engine
    from kmdb.reports import FORMATS, check_chart, draw, render

    if fmt not in FORMATS:
        raise ReportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}.")
    if chart:
        check_chart(chart)
    data = build(make_engine(load_settings()), **options)
    click.echo(render(data, fmt))
    if chart:
        draw(data, chart)
        click.echo(f"Chart written to {chart}.", err=True)


@report.command(name="funnel")
@click.argument("steps", nargs=-1, required=True)
@click.option("--skips", is_flag=True, help="Count people who skipped steps at the steps they did.")
@click.option("--by", metavar="KEY", help="Segment by this property's value.")
@click.option(
    "--attribution",
    default="first",
    show_default=True,
    help="first, last, first-in-range, last-in-range or at-entry.",
)
@_report_options
@friendly
def report_funnel(
    steps: tuple[str, ...],
    skips: bool,
    by: str | None,
    attribution: str,
    fmt: str,
    chart: str | None,
    **range_: Any,
) -> None:
    """People who did STEP, then the next STEP, and so on.

    Example:

        kmdb report funnel 'visited site' 'signed up' purchased --from 2013-01-01
    """
    from kmdb.reports import funnel

    _show_report(
        funnel,
        fmt,
        chart,
        steps=list(steps),
        mode="skips" if skips else "strict",
        by=by,
        attribution=attribution,
        **range_,
    )


@report.command(name="cohort")
@click.argument("first")
@click.argument("return_", metavar="RETURN")
@click.option("--period", default="week", show_default=True, help="Cohorts by day, week or month.")
@click.option("--bucket", default="week", show_default=True, help="Returns by day or week.")
@click.option("--buckets", default=8, show_default=True, type=int, help="How many buckets.")
@click.option(
    "--count",
    default="first",
    show_default=True,
    help="first: the earliest return only; every: each bucket with a return.",
)
@_report_options
@friendly
def report_cohort(
    first: str,
    return_: str,
    period: str,
    bucket: str,
    buckets: int,
    count: str,
    fmt: str,
    chart: str | None,
    **range_: Any,
) -> None:
    """Retention: people by when they first did FIRST, and when they did RETURN after.

    Example:

        kmdb report cohort 'signed up' purchased --period month --bucket week
    """
    from kmdb.reports import cohort

    _show_report(
        cohort,
        fmt,
        chart,
        first=first,
        return_=return_,
        period=period,
        bucket=bucket,
        buckets=buckets,
        count=count,
        **range_,
    )


@report.command(name="revenue")
@click.option(
    "--property",
    "property_",
    default="billing amount",
    show_default=True,
    help="The property holding amounts.",
)
@click.option("--period", default="month", show_default=True, help="day, week or month.")
@click.option(
    "--churn-days",
    default=30,
    show_default=True,
    type=int,
    help="Days without a payment after which a paying person churns.",
)
@_report_options
@friendly
def report_revenue(
    property_: str, period: str, churn_days: int, fmt: str, chart: str | None, **range_: Any
) -> None:
    """Revenue, refunds, paying, new and churned people per period.

    Example:

        kmdb report revenue --property amount --period month
    """
    from kmdb.reports import revenue

    _show_report(
        revenue, fmt, chart, property=property_, period=period, churn_days=churn_days, **range_
    )


@report.command(name="abtest")
@click.option("--property", "property_", required=True, help="The experiment's property.")
@click.option("--goal", required=True, help="The event that counts as converting.")
@click.option("--baseline", help="The variant to compare with (default: the biggest).")
@_report_options
@friendly
def report_abtest(
    property_: str, goal: str, baseline: str | None, fmt: str, chart: str | None, **range_: Any
) -> None:
    """Each variant's conversion rate, and how sure it is to beat the baseline.

    Example:

        kmdb report abtest --property plan --goal purchased
    """
    from kmdb.reports import abtest

    _show_report(abtest, fmt, chart, property=property_, goal=goal, baseline=baseline, **range_)
