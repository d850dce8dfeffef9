"""kmdb.report_commands: `kmdb report ...` as a user runs it: JSON, table, CSV, charts and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.engine import make_engine
from kmdb.pipeline.discovery import new_revisions
from kmdb.pipeline.inline import import_inline
from kmdb.settings import Settings
from tests import reports_oracle as oracle
from tests.helpers import run


@pytest.fixture
def world_env(
    sqlite_url: str, cli_env: dict[str, str], tmp_path: Path
) -> tuple[oracle.World, dict[str, str]]:
    """A generated export imported into SQLite, and an environment pointing kmdb at it."""
    world = oracle.generate(11)
    settings = Settings(database_url=sqlite_url, tmp_dir=str(tmp_path / "tmp"))
    engine = make_engine(settings)
    source = LocalSource(str(oracle.write(world, tmp_path / "export")))
    create_schema(engine)
    import_inline(engine, source, settings, new_revisions(engine, source, settings))
    engine.dispose()
    return world, {**cli_env, "DATABASE_URL": sqlite_url}


def report(env: dict[str, str], *args: str, check: bool = True):
    return run("kmdb", "report", *args, env=env, check=check)


def test_json_is_the_contract_shape(world_env) -> None:
    world, env = world_env
    got = json.loads(report(env, "funnel", "a", "b", "c", "--skips", "--format", "json").stdout)
    assert got == oracle.funnel(world, ["a", "b", "c"], skips=True)
    got = json.loads(
        report(
            env, "funnel", "a", "b", "--by", "variant", "--attribution", "at-entry",
            "--from", "2013-03-10", "--format", "json",
        ).stdout
    )  # fmt: skip
    assert got == oracle.funnel(
        world, ["a", "b"], by="variant", attribution="at-entry", from_="2013-03-10"
    )
    args = ["cohort", "a", "b", "--period", "month", "--bucket", "day", "--buckets", "14"]
    got = json.loads(report(env, *args, "--count", "every", "--format", "json").stdout)
    assert got == oracle.cohort(
        world, "a", "b", period="month", bucket="day", buckets=14, count="every"
    )
    args = ["revenue", "--property", "amount", "--period", "week", "--churn-days", "7"]
    got = json.loads(report(env, *args, "--to", "2013-04-30", "--format", "json").stdout)
    assert got == oracle.revenue(world, "amount", "week", 7, to="2013-04-30")
    got = json.loads(
        report(env, "abtest", "--property", "variant", "--goal", "b", "--format", "json").stdout
    )
    want = oracle.abtest(world, "variant", "b")
    for variant in want["variants"]:
        if variant["certainty"] is not None:
            variant["certainty"] = pytest.approx(variant["certainty"], abs=2e-6)
    assert got == want


def test_table_and_csv_are_readable(world_env) -> None:
    world, env = world_env
    want = oracle.funnel(world, ["a", "b"])["segments"][0]
    lines = report(env, "funnel", "a", "b").stdout.splitlines()
    assert lines[0] == "Funnel (strict): a -> b"
    assert lines[2].split() == ["step", "people", "from", "previous", "overall"]
    assert lines[3].split() == ["1.", "a", f"{want['people'][0]:,}", "100.0%", "100.0%"]
    second = f"{want['overall'][1] * 100:.1f}%"
    assert lines[4].split() == ["2.", "b", f"{want['people'][1]:,}", second, second]
    table = report(env, "revenue", "--property", "amount").stdout
    assert "period" in table and "Total revenue" in table
    csv = report(env, "cohort", "a", "b", "--buckets", "3", "--format", "csv").stdout.splitlines()
    assert csv[0] == "period,people,week_0,week_1,week_2"
    cohorts = oracle.cohort(world, "a", "b", buckets=3)["cohorts"]
    assert csv[1:] == [
        ",".join(map(str, [c["period"], c["people"], *c["returned"]])) for c in cohorts
    ]
    abtest = report(env, "abtest", "--property", "variant", "--goal", "a", "--format", "csv")
    assert abtest.stdout.splitlines()[0] == "variant,people,converted,rate,certainty,winner"


def test_unknown_names_are_said_in_the_table_and_the_json(world_env) -> None:
    _, env = world_env
    table = report(env, "cohort", "a", "never done").stdout
    assert table.splitlines()[0] == (
        "Not found in the database: 'never done'; the report is empty."
    )
    got = json.loads(report(env, "cohort", "a", "never done", "--format", "json").stdout)
    assert (got["cohorts"], got["missing"]) == ([], ["never done"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["funnel", "a", "b", "--from", "2013-03-02", "--to", "2013-03-01"],
            "Error: --to 2013-03-01 is before --from 2013-03-02; give the earlier day first.",
        ),
        (["funnel", "a"], "Error: A funnel needs at least two steps."),
        (
            ["cohort", "a", "b", "--period", "year"],
            "Error: --period 'year' is not one of day, week, month.",
        ),
        (
            ["cohort", "a", "b", "--bucket", "month"],
            "Error: --bucket 'month' is not one of day, week.",
        ),
        (
            ["cohort", "a", "b", "--buckets", "0"],
            "Error: --buckets 0 must be a whole number of at least 1.",
        ),
        (
            ["revenue", "--period", "fortnight"],
            "Error: --period 'fortnight' is not one of day, week, month.",
        ),
        (
            ["revenue", "--churn-days", "0"],
            "Error: --churn-days 0 must be a whole number of at least 1.",
        ),
        (
            ["abtest", "--property", "variant", "--goal", "a", "--baseline", "nope"],
            None,
        ),
        (
            ["funnel", "a", "b", "--format", "xml"],
            "Error: --format 'xml' is not one of table, json, csv.",
        ),
        (
            ["funnel", "a", "b", "--chart", "f.gif"],
            "Error: --chart 'f.gif' must end in .png or .svg.",
        ),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(world_env, args: list[str], message) -> None:
    _, env = world_env
    result = report(env, *args, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    if message is None:
        assert lines[0].startswith("Error: --baseline 'nope' is not a variant of 'variant'")
    else:
        assert lines[0] == message


def test_a_chart_without_matplotlib_says_how_to_install_it(world_env, tmp_path: Path) -> None:
    _, env = world_env
    fake = tmp_path / "no-matplotlib" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**env, "PYTHONPATH": str(fake.parent)}
    result = report(env, "funnel", "a", "b", "--chart", str(tmp_path / "f.png"), check=False)
    assert result.returncode == 2
    assert result.stderr == "Error: Charts need matplotlib; run pip install 'kmdb[charts]'.\n"
    assert not (tmp_path / "f.png").exists()


def test_charts_are_written_as_png_and_svg(world_env, tmp_path: Path) -> None:
    _, env = world_env
    calls = {
        "funnel.png": ["funnel", "a", "b", "c", "--by", "variant"],
        "cohort.png": ["cohort", "a", "b", "--period", "week", "--bucket", "day"],
        "revenue.svg": ["revenue", "--property", "amount", "--period", "week"],
        "abtest.png": ["abtest", "--property", "variant", "--goal", "b"],
    }
    for name, args in calls.items():
        path = tmp_path / name
        result = report(env, *args, "--chart", str(path))
        assert result.stderr == f"Chart written to {path}.\n"
        head = path.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if name.endswith(".png") else b"<svg" in head


def test_every_report_command_has_help(cli_env: dict[str, str]) -> None:
    for name in ("funnel", "cohort", "revenue", "abtest"):
        result = run("kmdb", "report", name, "--help", env=cli_env)
        assert "Example:" in result.stdout and "--format" in result.stdout
