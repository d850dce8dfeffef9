"""kmdb.extract.local: an export copied to a folder, FOLDER/revisions/N.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmdb.errors import ConfigError, SourceError
from kmdb.extract.local import CHUNK, LocalSource, file_chunks
from tests.helpers import write_export


def test_a_folder_lists_its_revisions_and_says_what_it_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_export(tmp_path / "export", {n: [b"{}"] for n in (10, 2, 1)})
    (folder / "revisions" / "07.json").write_bytes(b"{}\n")
    (folder / "revisions" / "3").mkdir()  # a folder, even named like a number: not a revision
    (folder / "index.csv").write_text("Filename,Start\n1.json,2013-01-01\n")
    source = LocalSource(str(folder))
    assert source.list_revisions() == [1, 2, 10]
    assert source.skipped == ["07.json", "3/"]
    assert "Skipping 2 files in" in caplog.text
    assert source.exists(2) and not source.exists(3) and not source.exists(7)
    assert source.size(10) == 3 and source.size(4) is None
    assert source.read_text("index.csv") == "Filename,Start\n1.json,2013-01-01\n"
    assert source.read_text("status.csv") is None


def test_a_folder_without_revisions_lists_none_and_a_missing_one_is_one_sentence(
    tmp_path: Path,
) -> None:
    assert LocalSource(str(tmp_path)).list_revisions() == []
    with pytest.raises(
        ConfigError, match="^The export folder .*/nowhere does not exist; pass --source"
    ):
        LocalSource(str(tmp_path / "nowhere"))


def test_a_span_of_a_file_is_read_in_chunks_from_its_offset_to_its_end(tmp_path: Path) -> None:
    data = bytes(range(256)) * (3 * CHUNK // 256 + 1)
    path = tmp_path / "1.json"
    path.write_bytes(data)
    whole = list(file_chunks(path, 1, "export"))
    assert b"".join(whole) == data and max(map(len, whole)) == CHUNK
    assert b"".join(file_chunks(path, 1, "export", 100, 100 + CHUNK + 5)) == data[100 : 105 + CHUNK]
    assert list(file_chunks(path, 1, "export", len(data))) == []
    assert b"".join(file_chunks(path, 1, "export", 7, 7)) == b""


def test_a_file_that_cannot_be_read_names_its_revision(tmp_path: Path) -> None:
    source = LocalSource(str(write_export(tmp_path / "export", {})))
    with pytest.raises(SourceError, match=r"^Cannot read revision 4 in .*export: .*No such file"):
        list(source.chunks(4))
