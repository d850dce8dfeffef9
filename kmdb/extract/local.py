"""An export copied to a local folder: FOLDER/revisions/N.json."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from kmdb.errors import ConfigError, SourceError
from kmdb.extract.names import revision_names, say_skipped

# Bytes read at a time, from a file or an S3 object.
CHUNK = 1 << 20


class LocalSource:
    """An export copied to a folder: FOLDER/revisions/N.json."""

    def __init__(self, folder: str) -> None:
        self.root = Path(folder)
        self.name = str(self.root)
        self.skipped: list[str] = []  # names in revisions/ that are not revisions, once listed
        if not self.root.is_dir():
            raise ConfigError(
                f"The export folder {folder} does not exist; pass --source with a folder "
                "that holds revisions/N.json, or s3://bucket."
            )

    def _path(self, revision: int) -> Path:
        return self.root / "revisions" / f"{revision}.json"

    def list_revisions(self) -> list[int] | None:
        folder = self.root / "revisions"
        if not folder.is_dir():
            return []
        with os.scandir(folder) as entries:  # d_type: no stat per file
            names = [e.name + ("/" if e.is_dir(follow_symlinks=False) else "") for e in entries]
        numbers, self.skipped = revision_names(names)
        say_skipped(str(folder), self.skipped)
        return numbers

    def exists(self, revision: int) -> bool:
        return self._path(revision).is_file()

    def read_text(self, name: str) -> str | None:
        path = self.root / name
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None

    def size(self, revision: int) -> int | None:
        return self._path(revision).stat().st_size if self.exists(revision) else None

    def chunks(self, revision: int, offset: int = 0, end: int | None = None) -> Iterator[bytes]:
        return file_chunks(self._path(revision), revision, self.name, offset, end)


def file_chunks(
    path: Path, revision: int, name: str, offset: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """A local file's bytes from offset up to end (or its end), in chunks."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SourceError(f"Cannot read revision {revision} in {name}: {exc}.") from exc
    with handle:
        handle.seek(offset)
        left = None if end is None else end - offset
        while left is None or left > 0:
            chunk = handle.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            yield chunk
