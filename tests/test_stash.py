"""Small files kept on disk between their scan and their import."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import time
from pathlib import Path

import boto3
import pytest
from sqlalchemy import Engine, text

from kmdb.extract import private, read_ahead
from kmdb.extract.s3 import S3Source
from kmdb.extract.stash import Stash, remove_stale
from kmdb.load.database import create_schema
from kmdb.load.ledger import revision_states
from kmdb.load.settle import settle
from kmdb.pipeline.import_pass import import_parts
from kmdb.pipeline.scan_pass import scan_revisions
from kmdb.settings import Settings
from tests.helpers import sample_bucket
from tests.model import assert_same, dump, expected, read_export


def _keep(stash: Stash, revision: int, data: bytes) -> None:
    """A whole file's bytes kept as a scan keeps them, if the stash has room."""
    keeping = stash.keeping(revision, len(data))
    if keeping is not None:
        with keeping:
            keeping.write(data)


def test_a_kept_file_is_taken_by_its_whole_read_or_forgotten_once_its_parts_are_in(
    tmp_path: Path,
) -> None:
    stash = Stash(str(tmp_path), "s3://km")
    _keep(stash, 7, b"line one\nline two\n")
    # Parts, in whatever order their jobs run: the file stays for the others.
    assert stash.take(7, 9, None) == b"line two\n"
    assert stash.take(7, 0, 9) == b"line one\n"
    stash.forget(7)  # the import that found the revision done
    assert stash.take(7) is None
    _keep(stash, 8, b"one part\n")
    assert stash.take(8) == b"one part\n"
    assert stash.take(8) is None
    # Another export's revision 7 is not this one's.
    _keep(Stash(str(tmp_path), "s3://other"), 7, b"other\n")
    assert stash.take(7) is None


def test_the_stash_keeps_no_more_than_its_budget(tmp_path: Path) -> None:
    _keep(Stash(str(tmp_path), "s3://km", budget=25), 1, b"x" * 20)
    later = Stash(str(tmp_path), "s3://km", budget=25)  # the next job sees what is there
    _keep(later, 2, b"y" * 10)
    _keep(later, 3, b"z" * 5)
    assert later.take(1) == b"x" * 20
    assert later.take(2) is None
    assert later.take(3) == b"z" * 5


def test_files_no_import_took_are_removed_after_an_hour(tmp_path: Path) -> None:
    stash = Stash(str(tmp_path), "s3://km")
    _keep(stash, 1, b"old\n")
    _keep(stash, 2, b"new\n")
    an_hour_ago = time.time() - 3700
    os.utime(stash.folder / "1.json", (an_hour_ago, an_hour_ago))
    assert remove_stale(str(tmp_path)) == 1
    assert stash.take(1) is None and stash.take(2) == b"new\n"
    assert remove_stale(str(tmp_path / "missing")) == 0


def test_the_import_reads_what_the_scan_kept_instead_of_s3(
    engine: Engine, settings: Settings, tmp_path: Path, s3_env: dict[str, str]
) -> None:
    folder = tmp_path / "export"
    bucket = sample_bucket(folder, 3_000, seed=8, lines_per_revision=1_000)
    create_schema(engine)
    source = S3Source(f"s3://{bucket}", settings)
    # As kmdb-import does: the sizes of listed files are recorded with their revisions.
    assert source.list_revisions() == [1, 2, 3]
    revision_states(engine, [1, 2, 3], {n: source.size(n) for n in (1, 2, 3)})
    scan_revisions(engine, source, [1, 2, 3], settings)
    settle(engine, before_import=True)
    kept = Stash(settings.tmp_dir, f"{s3_env['AWS_ENDPOINT_URL']}|{bucket}|")
    assert sorted(p.name for p in kept.folder.iterdir()) == ["1.json", "2.json", "3.json"]
    # Gone from the bucket: only the kept copies can give the import its lines.
    for n in (1, 2, 3):
        boto3.client("s3").delete_object(Bucket=bucket, Key=f"revisions/{n}.json")
    parts = [(n, 0) for n in (1, 2, 3)]
    import_parts(engine, S3Source(f"s3://{bucket}", settings), parts, settings)
    settle(engine)
    assert_same(dump(engine), expected(read_export(folder)))
    assert list(kept.folder.iterdir()) == []


def _import_from_s3(engine: Engine, settings: Settings, bucket: str, revisions: list[int]) -> None:
    """Scan, settle and import as the jobs do, each pass with a source of its own."""
    create_schema(engine)
    source = S3Source(f"s3://{bucket}", settings)
    assert source.list_revisions() == revisions
    revision_states(engine, revisions, {n: source.size(n) for n in revisions})
    scan_revisions(engine, source, revisions, settings)
    settle(engine, before_import=True)
    parts = [(n, 0) for n in revisions]
    import_parts(engine, S3Source(f"s3://{bucket}", settings), parts, settings)
    settle(engine)


FORGED = b'{"_n":"forged","_p":"mallory","_t":1351187280}\n{"_p":"mallory","_p2":"bob","_t":1}\n'


def test_kept_copies_are_private_to_this_user(tmp_path: Path) -> None:
    stash = Stash(str(tmp_path), "s3://km")
    _keep(stash, 1, b"line\n")
    root = private.root(str(tmp_path))
    for folder in (root, root / "stash", stash.folder):
        assert stat.S_IMODE(folder.lstat().st_mode) == 0o700, folder
        assert folder.lstat().st_uid == os.geteuid()
    assert stat.S_IMODE((stash.folder / "1.json").stat().st_mode) == 0o600
    assert stash.take(1) == b"line\n"


def test_a_planted_file_is_never_imported(
    engine: Engine, settings: Settings, tmp_path: Path, s3_env: dict[str, str]
) -> None:
    """Files planted where an older kmdb kept its copies, in a private folder taken by
    another user, or in kmdb's own folder but not of the size S3 lists, are all ignored."""
    folder = tmp_path / "export"
    bucket = sample_bucket(folder, 3_000, seed=8, lines_per_revision=1_000)
    export = f"{s3_env['AWS_ENDPOINT_URL']}|{bucket}|"
    name = hashlib.sha256(export.encode()).hexdigest()[:20]
    tmp = Path(settings.tmp_dir or "")
    # Where kmdb used to keep them, computable by anyone.
    (tmp / "kmdb-stash" / name).mkdir(parents=True)
    (tmp / "kmdb-stash" / name / "1.json").write_bytes(FORGED)
    # kmdb's own folder, with a file of the wrong size and a symlink to another's file.
    own = private.folder(settings.tmp_dir, "stash", name)
    (own / "2.json").write_bytes(FORGED)
    (own / "2.json").chmod(0o600)
    (tmp / "elsewhere.json").write_bytes(FORGED)
    (own / "3.json").symlink_to(tmp / "elsewhere.json")
    _import_from_s3(engine, settings, bucket, [1, 2, 3])
    assert_same(dump(engine), expected(read_export(folder)))


@pytest.mark.parametrize("how", ["symlink", "foreign", "open"])
def test_a_stash_folder_that_is_not_private_is_not_used(
    how: str, engine: Engine, settings: Settings, tmp_path: Path, s3_env: dict[str, str]
) -> None:
    folder = tmp_path / "export"
    bucket = sample_bucket(folder, 2_000, seed=9, lines_per_revision=1_000)
    name = hashlib.sha256(f"{s3_env['AWS_ENDPOINT_URL']}|{bucket}|".encode()).hexdigest()[:20]
    root = private.root(settings.tmp_dir)
    planted = tmp_path / "planted"
    (planted / "stash" / name).mkdir(parents=True)
    (planted / "stash" / name / "1.json").write_bytes(FORGED)
    for path in [planted, *planted.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    root.parent.mkdir(parents=True, exist_ok=True)
    if how == "symlink":
        root.symlink_to(planted)
    else:
        planted.rename(root)
        if how == "foreign":
            for path in [root, *root.rglob("*")]:
                os.lchown(path, 65534, 65534)
        else:
            root.chmod(0o777)
    _import_from_s3(engine, settings, bucket, [1, 2])
    assert_same(dump(engine), expected(read_export(folder)))
    # Nothing was written there, and the planted file is where it was.
    assert sorted(p.name for p in (root / "stash" / name).iterdir()) == ["1.json"]
    assert remove_stale(settings.tmp_dir, older_than=-1) == 0
    assert (root / "stash" / name / "1.json").read_bytes() == FORGED


def test_a_big_file_streamed_by_its_scan_is_kept_for_the_imports_of_its_parts(
    engine: Engine,
    settings: Settings,
    tmp_path: Path,
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Files too big to be read ahead whole: the scan streams them, keeping them as they go by.
    monkeypatch.setattr(read_ahead, "READ_AHEAD_SPAN", 1_000)
    settings = dataclasses.replace(settings, part_size=40_000)
    folder = tmp_path / "export"
    bucket = sample_bucket(folder, 3_000, seed=8, lines_per_revision=1_500)
    create_schema(engine)
    source = S3Source(f"s3://{bucket}", settings)
    assert source.list_revisions() == [1, 2]
    revision_states(engine, [1, 2], {n: source.size(n) for n in (1, 2)})
    scan_revisions(engine, source, [1, 2], settings)
    settle(engine, before_import=True)
    kept = Stash(settings.tmp_dir, f"{s3_env['AWS_ENDPOINT_URL']}|{bucket}|")
    assert sorted(p.name for p in kept.folder.iterdir()) == ["1.json", "2.json"]
    for n in (1, 2):
        assert (kept.folder / f"{n}.json").read_bytes() == (
            folder / f"revisions/{n}.json"
        ).read_bytes()
        boto3.client("s3").delete_object(Bucket=bucket, Key=f"revisions/{n}.json")
    with engine.connect() as conn:
        parts = conn.execute(text("SELECT revision, part FROM revision_parts ORDER BY 1, 2")).all()
    assert len(parts) > 2
    # A job per part, in the order RQ may release them (the last first): only the kept
    # copies hold the lines.
    for revision, part in reversed(parts):
        import_parts(engine, S3Source(f"s3://{bucket}", settings), [(revision, part)], settings)
    settle(engine)
    assert_same(dump(engine), expected(read_export(folder)))
    assert list(kept.folder.iterdir()) == []  # forgotten once its revision was done


def test_a_file_not_streamed_to_its_end_is_not_kept(tmp_path: Path) -> None:
    stash = Stash(str(tmp_path), "s3://km")
    keepings = [stash.keeping(n, 10) for n in (1, 2, 3)]
    assert None not in keepings
    first, second, third = (k for k in keepings if k is not None)
    with pytest.raises(RuntimeError), first:
        first.write(b"12345")
        raise RuntimeError("the reader stopped")
    with second:
        second.write(b"12345")  # ended early: not the size listed
    with third:
        third.write(b"12345")
        third.write(b"67890")
    assert sorted(p.name for p in stash.folder.iterdir()) == ["3.json"]
    assert stash.take(3, 2, 4) == b"34" and stash.take(3, 8) == b"90"
