"""kmdb.extract.export: the source that --source names, and finding the revisions not imported yet."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmdb.errors import ConfigError
from kmdb.extract.export import find_new, open_source
from kmdb.extract.local import LocalSource
from kmdb.extract.s3 import S3Source
from kmdb.settings import Settings
from tests.helpers import run, write_export


def test_a_missing_source_is_one_sentence(sqlite_url: str, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": sqlite_url}
    missing = run("kmdb-import", "--inline", env=env, check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "Error: No export to import: pass --source (a folder or s3://bucket), or set KMDB_SOURCE or AWS_BUCKET."
    )
    nowhere = run("kmdb-import", "--inline", "--source", "/no/such/folder", env=env, check=False)
    assert nowhere.returncode == 2
    assert "The export folder /no/such/folder does not exist" in nowhere.stderr


def test_the_source_is_a_bucket_or_a_folder_whichever_setting_names_it(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    folder = write_export(tmp_path / "export", {1: [b"{}"]})
    assert isinstance(open_source(str(folder), Settings()), LocalSource)
    bucket = open_source("s3://km-bucket/prefix", Settings(tmp_dir=str(tmp_path)))
    assert isinstance(bucket, S3Source) and bucket.name == "s3://km-bucket/prefix"
    # --source first; else KMDB_SOURCE or AWS_BUCKET (settings.source).
    assert open_source(None, Settings(source=str(folder))).name == str(folder)
    with pytest.raises(ConfigError, match="^No export to import: pass --source"):
        open_source(None, Settings())


class Probed:
    """A source that cannot be listed (as a bucket without s3:ListBucket): probed by number."""

    name = "probed"

    def __init__(self, present: set[int]) -> None:
        self.present = present
        self.asked: list[int] = []

    def list_revisions(self) -> list[int] | None:
        return None

    def exists(self, revision: int) -> bool:
        self.asked.append(revision)
        return revision in self.present


def test_revisions_are_listed_when_the_source_can_list_them(tmp_path: Path) -> None:
    folder = write_export(tmp_path / "export", {n: [b"{}"] for n in (1, 2, 5, 9)})
    source = LocalSource(str(folder))
    assert find_new(source, {2}, Settings(), start=3) == [1, 5, 9]
    assert find_new(source, set(), Settings(min_revision=5), start=5) == [5, 9]


def test_unlisted_revisions_are_probed_until_lookahead_numbers_in_a_row_are_missing() -> None:
    source = Probed({1, 2, 5, 9})
    settings = Settings(revision_lookahead=3)
    assert find_new(source, set(), settings, start=1) == [1, 2, 5]  # 6, 7, 8 missing: stop
    assert source.asked == [1, 2, 3, 4, 5, 6, 7, 8]
    assert find_new(source, set(), settings.replace(revision_lookahead=4), start=1) == [1, 2, 5, 9]
    # Done ones are not asked for, and reset the count; unfinished ones below start are taken.
    source.asked.clear()
    assert find_new(source, {5, 6, 7}, settings, start=5, unfinished={2}) == [2, 9]
    assert source.asked == [8, 9, 10, 11, 12]
