"""The import against the contract, on SQLite and MariaDB, compared with an independent model."""

from __future__ import annotations

import gc
import random
import weakref
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, text

from kmdb.errors import ConcurrentImport, Unreadable
from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.flush import flush
from kmdb.load.ledger import Part
from kmdb.load.settle import settle
from kmdb.pipeline import import_pass, scan_pass
from kmdb.pipeline.chunks import Segment
from kmdb.pipeline.discovery import new_revisions
from kmdb.pipeline.import_pass import import_parts, import_revision
from kmdb.pipeline.inline import import_inline, summary
from kmdb.pipeline.scan_pass import scan_revision, scan_revisions
from kmdb.pipeline.steps import Importer, Prepared
from kmdb.sample import write_sample
from kmdb.settings import Settings
from kmdb.transform.parse import Record, parse_line
from tests.model import assert_same, dump, expected, read_export


def write_export(folder: Path, revisions: dict[int, list[bytes]]) -> Path:
    (folder / "revisions").mkdir(parents=True, exist_ok=True)
    for number, lines in revisions.items():
        (folder / "revisions" / f"{number}.json").write_bytes(
            b"".join(line + b"\n" for line in lines)
        )
    return folder


def line(**fields: object) -> bytes:
    return orjson.dumps(fields)


def run_import(engine: Engine, folder: Path, settings: Settings) -> list[int]:
    source = LocalSource(str(folder))
    create_schema(engine)
    todo = new_revisions(engine, source, settings)
    import_inline(engine, source, settings, todo)
    return todo


def test_sample_export_matches_the_model(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 6_000, seed=3, lines_per_revision=700, first_revision=140)
    settings = settings.replace(batch_size=500)
    assert run_import(engine, folder, settings)[0] == 140
    wanted = expected(read_export(folder))
    assert_same(dump(engine), wanted)
    assert len(wanted.aliases) > 50 and len(wanted.rejected) > 5


def test_filters_apply(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 3_000, seed=5, lines_per_revision=1_000)
    lines = read_export(folder)
    create_schema(engine)
    people = [r.p for raw in lines[1] if (r := parse_line(raw)) and hasattr(r, "p")]
    ignored = frozenset(people[:3])
    with engine.begin() as conn:
        for name in sorted(ignored):
            conn.execute(text("INSERT INTO ignored_users (name) VALUES (:n)"), {"n": name})
        conn.execute(
            text("INSERT INTO whitelisted_events (name) VALUES ('purchased'), ('signed up')")
        )
        conn.execute(text("INSERT INTO blacklisted_properties (name) VALUES ('url'), ('plan')"))
    run_import(engine, folder, settings)
    wanted = expected(
        lines,
        ignored=ignored,
        whitelist=frozenset({"purchased", "signed up"}),
        blacklist=frozenset({"url", "plan"}),
    )
    assert_same(dump(engine), wanted)
    assert {e[1] for e in wanted.events} == {"purchased", "signed up"}


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
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A scan folds its sightings into aliases itself; the settle after it must still
    # see that people changed, even when it finds no sightings left, and a settle
    # with nothing new must leave people alone.
    monkeypatch.setattr(scan_pass, "SCAN_MERGE_MIN", 1)
    folder = tmp_path / "export"
    write_export(
        folder,
        {1: [line(_p="anon", _p2="bob@x", _t=5), line(_n="paid", _p="anon", _t=6)]},
    )
    create_schema(engine)
    source = LocalSource(folder)
    assert scan_revision(engine, source, 1, settings) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM alias_sightings")).scalar() == 0
        assert conn.execute(text("SELECT name1, name2 FROM aliases")).all() == [("anon", "bob@x")]
    first = settle(engine)
    assert (first.sightings, first.people_changed) == (0, 1)
    again = settle(engine)
    assert again.people_changed == 0
    import_revision(engine, source, 1, settings)
    settle(engine)
    assert {e[2] for e in dump(engine).events} == {"anon"}


def test_alias_rules(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    folder = write_export(
        tmp_path / "export",
        {
            1: [
                line(_p="12", _p2="34", _t=10),  # two accounts: ignored
                line(_p="a", _p2="a", _t=11),  # itself: ignored
                line(_p="b", _p2="a", _t=50),  # stored as (a, b)
                line(_p="a", _p2="b", _t=20),  # same pair, earlier
                line(_p="x", _p2=7, _t=30),  # numeric first
                line(_p="007", _p2="x", _t=31),  # 007 and 7 tie by value: lower text wins
                line(_n="e", _p="x", _t=40),
                line(_n="e", _p="12", _t=41),
                line(_n="e", _p="34", _t=42),
                line(_n="e", _p="b", _t=43),
            ]
        },
    )
    run_import(engine, folder, settings)
    result = dump(engine)
    assert result.aliases == {
        ("a", "b", "1970-01-01 00:00:20"),
        ("7", "x", "1970-01-01 00:00:30"),
        ("007", "x", "1970-01-01 00:00:31"),
    }
    assert sorted(e[2] for e in result.events) == ["007", "12", "34", "a"]


@pytest.mark.parametrize(
    "key", [rb"\u005fp2", rb"\u005Fp2", rb"_\u00702", rb"_p\u0032", rb"\u005f\u0070\u0032"]
)
def test_an_alias_key_written_with_escapes_is_still_an_alias(
    engine: Engine, settings: Settings, tmp_path: Path, key: bytes
) -> None:
    # The scan looks only at lines that may hold the key _p2; \u escapes spell it too.
    alias = b'{"_p":"anon","' + key + b'":"bob","_t":5}'
    folder = write_export(tmp_path / "export", {1: [line(_n="e", _p="anon", _t=4)], 2: [alias]})
    run_import(engine, folder, settings)
    result = dump(engine)
    assert result.aliases == {("anon", "bob", "1970-01-01 00:00:05")}
    assert [e[2] for e in result.events] == ["anon"]  # canonical: the lower of the two


def test_names_with_awkward_characters_round_trip(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    awkward = [
        "tab\there",
        "new\nline",
        "back\\slash",
        'quo"te',
        "nul\0byte",
        "emoji 😀",
        "trail ",
        "\\N",
        "cr\r",
    ]
    folder = write_export(
        tmp_path / "export",
        {
            1: [
                line(_n=name, _p=name, _t=1_000_000 + i, **{name: name})
                for i, name in enumerate(awkward)
            ]
        },
    )
    run_import(engine, folder, settings)
    result = dump(engine)
    assert sorted(result.events) == sorted(
        (e[0], e[1], e[2], e[3]) for e in expected(read_export(folder)).events
    )
    assert {e[2] for e in result.events} == set(awkward)
    assert {e[3] for e in result.events} == {((n, n),) for n in awkward}


def test_people_differ_by_case_and_trailing_space(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "export",
        {1: [line(_n="e", _p=p, _t=5) for p in ("bob", "Bob", "bob ", "böb")]},
    )
    run_import(engine, folder, settings)
    assert sorted(e[2] for e in dump(engine).events) == sorted(["bob", "Bob", "bob ", "böb"])


def test_rejected_lines_are_recorded_and_the_rest_goes_on(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "export",
        {
            3: [
                line(_n="ok", _p="a", _t=1),
                b'{"_n":"viewed","_p":"x","_t":13511',
                b"",
                line(_n="ok", _p="a", _t="yesterday"),
                line(_n="ok", _p="b", _t=2),
            ]
        },
    )
    run_import(engine, folder, settings)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT revision, line, reason, text FROM rejected_lines ORDER BY line")
        ).all()
    assert [(r[0], r[1]) for r in rows] == [(3, 2), (3, 4)]
    assert rows[0][2].startswith("not valid JSON")
    assert rows[0][3] == '{"_n":"viewed","_p":"x","_t":13511'
    assert "_t is not a time" in rows[1][2]
    assert len(dump(engine).events) == 2
    assert summary(engine).rejected == 2


def test_importing_twice_changes_nothing(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 2_000, seed=9, lines_per_revision=500)
    run_import(engine, folder, settings)
    first = dump(engine)
    assert run_import(engine, folder, settings) == []
    source = LocalSource(str(folder))
    again = import_revision(engine, source, 1, settings)
    assert again.lines == 0
    settle(engine)
    assert_same(dump(engine), first)


class Interrupted(Exception):
    pass


class FlakySource(LocalSource):
    """A folder source whose reads stop after some chunks, like a killed worker."""

    def __init__(self, folder: str, fail_after: int) -> None:
        super().__init__(folder)
        self.fail_after = fail_after

    def chunks(self, revision: int, offset: int = 0, end: int | None = None):
        for i, chunk in enumerate(super().chunks(revision, offset, end)):
            if i >= self.fail_after:
                raise Interrupted("stopped")
            yield chunk


def test_an_interrupted_import_resumes_exactly(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 4_000, seed=11, lines_per_revision=4_000)
    monkeypatch.setattr("kmdb.extract.local.CHUNK", 4096)
    # Streamed, not read ahead whole: the reads then stop between commits.
    monkeypatch.setattr("kmdb.extract.read_ahead.READ_AHEAD_SPAN", 0)
    settings = settings.replace(batch_size=97)
    create_schema(engine)
    with pytest.raises(Interrupted):  # in the alias scan
        scan_revision(engine, FlakySource(str(folder), 50), 1, settings)
    scan_revision(engine, LocalSource(str(folder)), 1, settings)
    for fail_after in (3, 20, 30):
        with pytest.raises(Interrupted):
            import_revision(engine, FlakySource(str(folder), fail_after), 1, settings)
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status, lines_done FROM revisions")).one()
    assert status[0] == "failed" and 0 < status[1] < 4_000
    run_import(engine, folder, settings)
    assert_same(dump(engine), expected(read_export(folder)))


def test_revisions_are_found_from_any_number(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "export",
        {n: [line(_n="e", _p="a", _t=n)] for n in (140, 141, 150, 1000)},
    )
    (folder / "hello.txt").write_text("hi")
    (folder / "revisions" / "notes.txt").write_text("not a revision")
    create_schema(engine)
    source = LocalSource(str(folder))
    assert new_revisions(engine, source, settings) == [140, 141, 150, 1000]
    assert new_revisions(engine, source, settings.replace(min_revision=150)) == [150, 1000]


def test_revisions_beyond_the_id_range_are_refused(
    engine: Engine, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kmdb.errors import KmdbError
    from kmdb.transform.rows import MAX_REVISION

    folder = write_export(
        tmp_path / "export",
        {n: [line(_n="e", _p="a", _t=1, x=1)] for n in (5, MAX_REVISION, MAX_REVISION + 1)},
    )
    create_schema(engine)
    source = LocalSource(str(folder))
    assert new_revisions(engine, source, settings) == [5, MAX_REVISION]
    assert f"Skipping revisions {MAX_REVISION + 1}" in caplog.text
    with pytest.raises(KmdbError, match="beyond the largest number"):
        import_revision(engine, source, MAX_REVISION + 1, settings)
    import_inline(engine, source, settings, [5, MAX_REVISION])
    with engine.connect() as conn:
        ids = sorted(conn.execute(text("SELECT id FROM events")).scalars())
        props = sorted(conn.execute(text("SELECT id FROM properties")).scalars())
    assert ids == [5 * 10**12 + 1, MAX_REVISION * 10**12 + 1]
    assert props == ids


class NoListing(LocalSource):
    def list_revisions(self):
        return None


def test_without_listing_revisions_are_probed(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "export", {n: [line(_n="e", _p="a", _t=n)] for n in (1, 2, 5, 20)}
    )
    create_schema(engine)
    source = NoListing(str(folder))
    assert new_revisions(engine, source, settings.replace(revision_lookahead=3)) == [1, 2, 5]
    assert new_revisions(engine, source, settings.replace(revision_lookahead=15)) == [1, 2, 5, 20]
    import_inline(engine, source, settings, [1, 2])
    assert new_revisions(engine, source, settings.replace(revision_lookahead=3)) == [5]
    # A revision begun but not finished below the last finished one is taken again.
    with engine.begin() as conn:
        conn.execute(text("UPDATE revisions SET status = 'failed' WHERE number = 1"))
    assert new_revisions(engine, source, settings.replace(revision_lookahead=3)) == [1, 5]


# --- Any order and any split of the same lines gives the same rows --------------------

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


@hsettings(max_examples=500)
@given(st.integers(0, 253402300799))
def test_timestamps_are_utc_datetime_literals(t: int) -> None:
    import time

    from kmdb.transform.rows import timestamp

    assert timestamp(t) == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _check_part_plans(engine: Engine, folder: Path) -> int:
    """Every revision's parts tile its file: contiguous bytes, consecutive lines, all done."""
    with engine.connect() as conn:
        parts = conn.execute(
            text(
                "SELECT revision, part, start_byte, end_byte, start_line, lines_done, bytes_done, "
                "status FROM revision_parts ORDER BY revision, part"
            )
        ).all()
        revisions = {
            row[0]: row[1:]
            for row in conn.execute(
                text("SELECT number, lines_done, bytes_done, status FROM revisions")
            )
        }
    by_revision: dict[int, list] = {}
    for row in parts:
        by_revision.setdefault(row[0], []).append(row)
    for revision, rows in by_revision.items():
        data = (folder / "revisions" / f"{revision}.json").read_bytes()
        lines = len(data.split(b"\n")) - (1 if data.endswith(b"\n") or not data else 0)
        assert rows[0][2] == 0 and rows[0][4] == 1
        for before, after in zip(rows, rows[1:], strict=False):
            assert before[3] == after[2]  # this part ends where the next one starts
            assert before[5] == after[4] - 1  # and its last line is the one before
        assert rows[-1][3] == len(data)
        assert all(row[6] == row[3] and row[7] == "done" for row in rows)
        assert revisions[revision] == (lines, len(data), "done")
    return len(parts)


def test_revisions_in_parts_give_the_same_rows(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kmdb.extract.local.CHUNK", 512)
    folder = tmp_path / "export"
    write_sample(folder, 3_000, seed=4, lines_per_revision=1_000, bad_every=40)
    settings = settings.replace(part_size=4_000, batch_size=70)
    source = LocalSource(str(folder))
    create_schema(engine)
    # Interrupted in its first part, revision 1 goes on from there in the full run.
    with pytest.raises(Interrupted):
        import_revision(engine, FlakySource(str(folder), 1), 1, settings)
    run_import(engine, folder, settings)
    wanted = expected(read_export(folder))
    assert_same(dump(engine), wanted)
    assert len(wanted.rejected) > 20
    assert _check_part_plans(engine, folder) > 3 * 10
    # Property ids count from their part's offset, on SQLite as on MySQL: none repeats.
    with engine.connect() as conn:
        total, distinct = conn.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT id) FROM properties")
        ).one()
    assert total == distinct > 1_000
    assert new_revisions(engine, source, settings) == []


def test_parts_handle_long_lines_empty_files_and_no_last_newline(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    body = [line(_n=f"e{i}", _p=f"u{i % 7}", _t=i) for i in range(40)]
    body[10] = line(_n="long", _p="a", _t=5, blob="x" * 5_000)  # spans several parts
    body[25] = b"{not json"
    (folder / "revisions").mkdir(parents=True)
    (folder / "revisions" / "1.json").write_bytes(b"\n".join(body))  # no newline at the end
    (folder / "revisions" / "2.json").write_bytes(b"")
    (folder / "revisions" / "3.json").write_bytes(line(_n="only", _p="b", _t=1) + b"\n")
    settings = settings.replace(part_size=700, batch_size=3)
    run_import(engine, folder, settings)
    assert_same(dump(engine), expected(read_export(folder)))
    assert dump(engine).rejected == {(1, 26)}
    assert _check_part_plans(engine, folder) > 8


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


def test_a_small_scan_leaves_its_few_sightings_to_the_settle(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # Below SCAN_MERGE_MIN waiting sightings a merge is not worth its round trips.
    folder = tmp_path / "export"
    write_export(folder, {1: [line(_p="anon", _p2="bob@x", _t=5), line(_n="a", _p="anon", _t=6)]})
    create_schema(engine)
    source = LocalSource(folder)
    assert scan_revision(engine, source, 1, settings) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM alias_sightings")).scalar() == 1
        assert conn.execute(text("SELECT COUNT(*) FROM aliases")).scalar() == 0
    settled = settle(engine)
    assert (settled.sightings, settled.new_aliases, settled.people_changed) == (1, 1, 1)
    import_revision(engine, source, 1, settings)
    assert_same(dump(engine), expected(read_export(folder)))


def _one_alias_on_mariadb(
    mysql_url: str, tmp_path: Path, revision: int
) -> tuple[Engine, Settings, LocalSource]:
    """A MariaDB schema and an export of one revision: an alias line, then an event."""
    from kmdb.load.engine import make_engine

    settings = Settings(database_url=mysql_url, tmp_dir=str(tmp_path / "tmp"))
    engine = make_engine(settings)
    create_schema(engine)
    folder = tmp_path / "export"
    write_export(
        folder, {revision: [line(_p="anon", _p2="bob@x", _t=5), line(_n="a", _p="anon", _t=6)]}
    )
    return engine, settings, LocalSource(folder)


def test_a_scan_leaves_its_sightings_when_another_merge_runs(
    mysql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scans do not queue up behind each other's merges: one that finds the settle
    # lock taken leaves its sightings, and the settle step folds them in.
    monkeypatch.setattr(scan_pass, "SCAN_MERGE_MIN", 1)
    import threading

    from kmdb.load.locks import SETTLE_LOCK, held

    engine, settings, source = _one_alias_on_mariadb(mysql_url, tmp_path, 1)
    found: list[int] = []
    with held(engine, SETTLE_LOCK):
        scan = threading.Thread(
            target=lambda: found.append(scan_revision(engine, source, 1, settings))
        )
        scan.start()
        scan.join(timeout=60)
        assert not scan.is_alive(), "the scan waited for the merge lock"
    assert found == [1]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM alias_sightings")).scalar() == 1
        assert conn.execute(text("SELECT COUNT(*) FROM aliases")).scalar() == 0
    settled = settle(engine)
    assert (settled.sightings, settled.new_aliases) == (1, 1)
    import_revision(engine, source, 1, settings)
    assert {e[2] for e in dump(engine).events} == {"anon"}
    engine.dispose()


def _part_statuses(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT revision, status FROM revision_parts")).all())


def test_small_files_share_chunks_and_a_missing_one_does_not_stop_the_others(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 2_000, seed=6, lines_per_revision=400)
    settings = settings.replace(batch_size=1_000)
    source = LocalSource(str(folder))
    create_schema(engine)
    parts = [(n, 0) for n in range(1, 6)]
    scan_revisions(engine, source, [n for n, _ in parts], settings)
    settle(engine, before_import=True)
    (folder / "revisions" / "3.json").rename(tmp_path / "3.json")
    chunks: list[int] = []
    with pytest.raises(Unreadable, match=r"1 of 5 parts could not be read: revision 3"):
        import_parts(engine, source, parts, settings, on_chunk=lambda c: chunks.append(c.lines))
    assert _part_statuses(engine) == {1: "done", 2: "done", 3: "failed", 4: "done", 5: "done"}
    # Four files of 400 lines went in, in chunks that span files.
    assert sum(chunks) == 1_600 and max(chunks) > 400
    (tmp_path / "3.json").rename(folder / "revisions" / "3.json")
    import_parts(engine, source, parts, settings)
    settle(engine)
    assert_same(dump(engine), expected(read_export(folder)))


def test_a_job_that_fails_leaves_the_files_it_did_not_reach_pending(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 1_200, seed=7, lines_per_revision=400)
    monkeypatch.setattr(
        "kmdb.extract.read_ahead.READ_AHEAD_SPAN", 0
    )  # streamed: the failure comes in order
    settings = settings.replace(batch_size=100)
    create_schema(engine)
    scan_revisions(engine, LocalSource(str(folder)), [1, 2, 3], settings)

    class BrokenSecond(LocalSource):
        def chunks(self, revision: int, offset: int = 0, end: int | None = None):
            if revision == 2:
                raise Interrupted("the disk went away")
            yield from super().chunks(revision, offset, end)

    with pytest.raises(Interrupted):
        import_parts(engine, BrokenSecond(str(folder)), [(1, 0), (2, 0), (3, 0)], settings)
    assert _part_statuses(engine) == {1: "done", 2: "failed", 3: "pending"}
    with engine.connect() as conn:
        revisions = dict(conn.execute(text("SELECT number, status FROM revisions")).all())
    assert revisions == {1: "done", 2: "failed", 3: "pending"}
    run_import(engine, folder, settings)
    assert_same(dump(engine), expected(read_export(folder)))


def test_a_scan_holds_its_revision_lock_while_it_merges(
    mysql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Other workers call a started job dead when its first lock is free (kmdb.orchestrate.liveness.is_dead);
    # a big file's merge takes seconds, and merging after the locks were let go had a
    # waiting worker plan a live scan's graph again.
    monkeypatch.setattr(scan_pass, "SCAN_MERGE_MIN", 1)
    from kmdb.load.locks import is_held

    engine, settings, source = _one_alias_on_mariadb(mysql_url, tmp_path, 7)
    seen: list[bool | None] = []
    merge = scan_pass.merge_sightings

    def merge_and_look(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(is_held(engine, "revision:7"))
        return merge(*args, **kwargs)

    monkeypatch.setattr(scan_pass, "merge_sightings", merge_and_look)
    assert scan_revision(engine, source, 7, settings) == 1
    assert seen == [True]
    assert is_held(engine, "revision:7") is False
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM aliases")).scalar() == 1
    engine.dispose()


def test_an_import_that_scans_first_holds_its_first_lock_meanwhile(
    mysql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An import job scans a revision its scan job did not (one that failed, say); on a
    # big file that takes long, and with its first lock free meanwhile it looked dead.
    from kmdb.load.locks import is_held
    from kmdb.load.parts import plan_parts

    engine, settings, source = _one_alias_on_mariadb(mysql_url, tmp_path, 4)
    [part] = plan_parts(engine, source, 4, settings)
    seen: list[bool | None] = []
    scan = import_pass.scan_revision

    def scan_and_look(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(is_held(engine, f"revision:4:part:{part['part']}"))
        return scan(*args, **kwargs)

    monkeypatch.setattr(import_pass, "scan_revision", scan_and_look)
    counts = import_parts(engine, source, [(4, part["part"])], settings)
    assert seen == [True]
    assert counts.events == 1
    assert is_held(engine, f"revision:4:part:{part['part']}") is False
    engine.dispose()


def _chunk_of_two_files(engine: Engine, settings: Settings, folder: Path) -> Prepared:
    """A chunk with all of revision 1 (its lines and its end) and the first line of revision 2."""
    write_export(
        folder,
        {
            1: [line(_n="a", _p="u1", _t=1, x=1), line(_n="b", _p="u2", _t=2)],
            2: [line(_n="c", _p="u3", _t=3, y="z"), line(_n="d", _p="u1", _t=4)],
        },
    )
    source = LocalSource(str(folder))
    create_schema(engine)
    scan_revisions(engine, source, [1, 2], settings)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM revision_parts ORDER BY revision")).mappings()
        one, two = (Part.of(dict(row)) for row in rows)
    lines = {n: (folder / "revisions" / f"{n}.json").read_bytes().split(b"\n") for n in (1, 2)}
    return Importer(engine, settings).prepare(
        [
            Segment(one, 1, lines[1][:2], one.end_byte),
            Segment(one, 0, [], 0),
            Segment(two, 1, lines[2][:1], len(lines[2][0]) + 1),
        ]
    )


def _progress(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT revision, lines_done, events, properties, status FROM revision_parts "
                    "ORDER BY revision"
                )
            )
        ]


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def test_a_chunk_moves_all_its_parts_in_one_commit_and_a_retry_writes_nothing_twice(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    prepared = _chunk_of_two_files(engine, settings, tmp_path / "export")
    chunk_importer = Importer(engine, settings)
    chunk_importer._commit(prepared)
    assert _progress(engine) == [(1, 2, 2, 1, "done"), (2, 1, 1, 1, "pending")]
    assert (_count(engine, "events"), _count(engine, "properties")) == (3, 2)
    # The same chunk again, as after a connection lost once its commit went through.
    chunk_importer._commit(prepared)
    assert _progress(engine) == [(1, 2, 2, 1, "done"), (2, 1, 1, 1, "pending")]
    assert (_count(engine, "events"), _count(engine, "properties")) == (3, 2)


def test_a_chunk_whose_part_another_worker_moved_writes_nothing(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    prepared = _chunk_of_two_files(engine, settings, tmp_path / "export")
    with engine.begin() as conn:
        conn.execute(text("UPDATE revision_parts SET lines_done = 2 WHERE revision = 2"))
    with pytest.raises(ConcurrentImport, match=r"Revision 2 \(part 0\) was moved past"):
        Importer(engine, settings)._commit(prepared)
    # Revision 1's move was in the same statement and transaction: it did not happen either.
    assert _progress(engine) == [(1, 0, 0, 0, "pending"), (2, 2, 0, 0, "pending")]
    assert (_count(engine, "events"), _count(engine, "properties")) == (0, 0)


class _Cycle:
    """An object in a reference cycle: only the cycle collector frees it."""

    def __init__(self, freed: list[int], number: int) -> None:
        self.me = self
        weakref.finalize(self, freed.append, number)


def test_the_cycle_collector_is_off_between_chunks_and_run_every_few_chunks(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 3_000, seed=8, lines_per_revision=3_000)
    settings = settings.replace(batch_size=100)
    monkeypatch.setattr(import_pass, "COLLECT_EVERY", 4)
    create_schema(engine)
    source = LocalSource(str(folder))
    scan_revision(engine, source, 1, settings)
    settle(engine, before_import=True)
    enabled: list[bool] = []
    freed: list[int] = []
    late: list[int] = []  # cycles still there more than two rounds of collection after
    made = 0

    def on_chunk(_counts: object) -> None:
        nonlocal made
        enabled.append(gc.isenabled())
        late.extend(n for n in range(made - 2 * import_pass.COLLECT_EVERY) if n not in freed)
        _Cycle(freed, made)
        made += 1

    assert gc.isenabled()
    import_revision(engine, source, 1, settings, on_chunk)
    assert gc.isenabled()  # on again once the import is done
    assert made > 12 and not any(enabled)
    # Cycles made while it was off were collected along the way, a few chunks later.
    assert not late
