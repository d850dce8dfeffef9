"""kmdb.load.settle: people recomputed from aliases, rows re-pointed to canonical identities."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, text

from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.flush import flush
from kmdb.load.settle import settle
from kmdb.pipeline.import_pass import import_revision
from kmdb.pipeline.scan_pass import SCAN_MERGE_MIN, scan_revision
from kmdb.sample import write_sample
from kmdb.settings import Settings
from kmdb.transform.parse import Record, parse_line
from tests.helpers import aliases_a_scan_merges, line, run_import, write_export
from tests.model import assert_same, dump, expected, read_export


def test_transitive_aliases_across_files_and_runs(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_export(
        folder,
        {
            7: [
                line(_n="visited", _p="anon-b", _t=100, url="x"),
                line(_p="anon-b", _t=101, plan="free"),
                line(_n="visited", _p="zed", _t=102),
            ],
            8: [line(_p="anon-b", _p2="bob@x", _t=200), line(_n="paid", _p="bob@x", _t=201)],
        },
    )
    run_import(engine, folder, settings)
    result = dump(engine)
    assert {(e[1], e[2]) for e in result.events} == {
        ("visited", "anon-b"),
        ("paid", "anon-b"),
        ("visited", "zed"),
    }
    # A later run brings a numeric account that joins bob's person: it becomes canonical,
    # and so does the link through "zed".
    write_export(
        folder, {9: [line(_p="42", _p2="bob@x", _t=300), line(_p2="zed", _p="42", _t=301)]}
    )
    assert run_import(engine, folder, settings) == [9]
    result = dump(engine)
    assert {e[2] for e in result.events} == {"42"}
    assert {s[1] for s in result.sets} == {"42"}
    assert result.aliases == {
        ("anon-b", "bob@x", "1970-01-01 00:03:20"),
        ("42", "bob@x", "1970-01-01 00:05:00"),
        ("42", "zed", "1970-01-01 00:05:01"),
    }
    assert_same(result, expected(read_export(folder)))


def test_a_settle_recomputes_people_from_aliases_that_scans_merged(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # A scan folds its sightings into aliases itself; the settle after it must still
    # see that people changed, even when it finds no sightings left, and a settle
    # with nothing new must leave people alone.
    folder = write_export(tmp_path / "export", {1: aliases_a_scan_merges()})
    create_schema(engine)
    source = LocalSource(folder)
    assert scan_revision(engine, source, 1, settings) == SCAN_MERGE_MIN
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM alias_sightings")).scalar() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM aliases")).scalar() == SCAN_MERGE_MIN
    first = settle(engine)
    assert (first.sightings, first.people_changed) == (0, SCAN_MERGE_MIN)
    again = settle(engine)
    assert again.people_changed == 0
    import_revision(engine, source, 1, settings)
    settle(engine)
    # The event of user-0@x is anon-0's, the lower of the two names.
    assert {e[2] for e in dump(engine).events} == {"anon-0"}


def test_settling_in_small_pages_gives_the_same_people(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sightings are merged a page at a time; a pair seen again on a later page,
    # earlier in time, must move its alias's time back.
    monkeypatch.setattr("kmdb.load.settle.PAGE", 7)
    folder = tmp_path / "export"
    write_sample(folder, 2_000, seed=9, lines_per_revision=1_000)
    pairs = [
        (r.p, r.p2)
        for raw in (folder / "revisions" / "1.json").read_bytes().splitlines()
        if isinstance(r := parse_line(raw), Record) and r.kind == "alias"
    ][:20]
    (folder / "revisions" / "3.json").write_bytes(
        b"".join(line(_p=p, _p2=p2, _t=1) + b"\n" for p, p2 in pairs)
    )
    run_import(engine, folder, settings)
    wanted = expected(read_export(folder))
    assert_same(dump(engine), wanted)
    assert len(wanted.aliases) > 7 * 10
    assert sum(t == "1970-01-01 00:00:01" for *_, t in dump(engine).aliases) >= 15


IDENTITIES = ["1", "2", "07", "7", "a", "b", "c", "B", "b ", "é"]


record = st.one_of(
    st.builds(
        lambda p, t, n, v: line(_n=n, _p=p, _t=t, prop=v),
        st.sampled_from(IDENTITIES),
        st.integers(0, 50),
        st.sampled_from(["x", "y"]),
        st.integers(0, 3),
    ),
    st.builds(
        lambda p, t: line(_p=p, _t=t, plan="gold"), st.sampled_from(IDENTITIES), st.integers(0, 50)
    ),
    st.builds(
        lambda p, p2, t: line(_p=p, _p2=p2, _t=t),
        st.sampled_from(IDENTITIES),
        st.sampled_from(IDENTITIES),
        st.integers(0, 50),
    ),
    st.just(b"{broken"),
)


@hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    lines=st.lists(record, min_size=1, max_size=30),
    cuts=st.lists(st.integers(0, 30), max_size=4),
    seed=st.integers(0, 99),
)
def test_any_order_and_split_gives_the_same_rows(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], cuts: list[int], seed: int
) -> None:
    folder = tmp_path_factory.mktemp("export")
    bounds = sorted({0, len(lines), *(min(c, len(lines)) for c in cuts)})
    revisions = {
        i + 1: lines[a:b] for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)) if b > a
    }
    write_export(folder, revisions)
    engine = create_engine(f"sqlite:///{folder / 'db.sqlite3'}")
    flush(engine)
    order = list(revisions)
    rng = random.Random(seed)
    rng.shuffle(order)
    source = LocalSource(str(folder))
    settings = Settings(batch_size=rng.randint(1, 5))
    for number in order:
        import_revision(engine, source, number, settings)
        if rng.random() < 0.5:
            settle(engine)
    settle(engine)
    # The contract numbers lines per file; the model needs the same files.
    assert_same(dump(engine), expected(revisions))
