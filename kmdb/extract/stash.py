"""Revision files kept on local disk between their scan and the imports of their parts.

Every revision file is read twice: by its scan (for aliases), then by its
import. For a small file, or a small part of a big one, each read is a GET,
whose fixed cost (the request's CPU on both sides and a round trip to S3) is
most of what reading it costs.
So a scan keeps each file it reads whole, as its bytes go by, in
KMDB_TMP_DIR/kmdb-stash, and the imports of its parts that run next on the same
machine read their bytes from there; the import that finds the revision done
removes it (a file of one part: its one read). An import on another machine
reads the file from S3 as before. Revision files never change once written,
so a kept copy is the file.

The kept copies are in kmdb's private folder (kmdb.extract.private), files of mode 0600
that nobody else can read or plant; a folder that is not private (a symlink,
another user's, open to others) is not used, and the import reads from S3. A
kept copy whose size is not the size S3 listed is not used either.

The stash holds at most STASH_BYTES of an export on a machine (checked once
per job, so it may pass that by a job's worth); what an import elsewhere never
took is removed after an hour by the next worker or inline import that starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import BinaryIO

from kmdb.errors import NotPrivate
from kmdb.extract import private
from kmdb.extract.private import STALE_AFTER, remove_old_files

log = logging.getLogger(__name__)

STASH_BYTES = 256 << 20
FOLDER = "stash"


def _root(tmp_dir: str | None) -> Path:
    return private.root(tmp_dir) / FOLDER


class Stash:
    """The kept copies of one export's small files, in a folder of their own."""

    def __init__(self, tmp_dir: str | None, export: str, budget: int = STASH_BYTES) -> None:
        # One folder per export (endpoint, bucket and prefix), so that two exports'
        # revisions of the same number never meet.
        self._name = hashlib.sha256(export.encode()).hexdigest()[:20]
        self._tmp_dir = tmp_dir
        self.folder = _root(tmp_dir) / self._name
        self.budget = budget
        self._room: int | None = None
        self._lock = threading.Lock()
        self._private: bool | None = None

    def _usable(self) -> bool:
        """Whether the folder is private (made so if missing); checked once per Stash."""
        with self._lock:
            if self._private is None:
                try:
                    private.folder(self._tmp_dir, FOLDER, self._name)
                    self._private = True
                except NotPrivate as exc:
                    log.warning("Not keeping copies of revision files on disk: %s", exc)
                    self._private = False
            return self._private

    def _path(self, revision: int) -> Path:
        return self.folder / f"{int(revision)}.json"

    def _take_room(self, size: int) -> bool:
        with self._lock:
            if self._room is None:
                self._room = self.budget - _size_of(self.folder)
            if size > self._room:
                return False
            self._room -= size
            return True

    def forget(self, revision: int) -> None:
        """Remove a kept file whose revision is imported (never fails)."""
        if self._usable():
            with contextlib.suppress(OSError):
                self._path(revision).unlink()

    def keeping(self, revision: int, size: int) -> Keeping | None:
        """A whole file of size bytes kept as a scan streams it by, if the stash has room
        (None: not kept). It is put in place only if all of it went by."""
        if not size or not self._usable() or not self._take_room(size):
            return None
        path = self._path(revision)
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()  # a killed process's, of the same pid and thread id
            return Keeping(path, partial, size, os.fdopen(private.open_private(partial), "wb"))
        except OSError as exc:  # a full or read-only disk: the import reads from S3
            log.debug("Could not keep revision %s on disk: %s", revision, exc)
            return None

    def take(
        self, revision: int, offset: int = 0, end: int | None = None, size: int | None = None
    ) -> bytes | None:
        """The kept bytes of a file from offset up to end (None: not kept). A read of the
        whole file removes it: its one part is then imported. The parts of a file cut in
        several leave it for each other, in whatever order they run; the import that
        finds the revision done removes it (forget).

        Only a file this user wrote in the private folder is used, and only if it has
        the file's size where that is known.
        """
        if not self._usable():
            return None
        path = self._path(revision)
        found = private.read_own_range(path, offset, end)
        if found is None:
            return None
        data, whole = found
        if (size is not None and whole != size) or (offset == 0 and (end is None or end >= whole)):
            with contextlib.suppress(OSError):
                path.unlink()
        if size is not None and whole != size:
            log.warning("Ignored a kept copy of revision %s: not the size S3 lists.", revision)
            return None
        return data


class Keeping:
    """A file being kept as its bytes go by: put in place whole, or not at all.

    Never fails its reader: a full or read-only disk only means that the import
    reads the file from S3.
    """

    def __init__(self, path: Path, partial: Path, size: int, out: BinaryIO) -> None:
        self._path, self._partial, self._size = path, partial, size
        self._out: BinaryIO | None = out
        self._written = 0

    def write(self, data: bytes) -> None:
        if self._out is None:
            return
        try:
            self._out.write(data)
            self._written += len(data)
        except OSError as exc:
            log.debug("Could not keep %s on disk: %s", self._path.name, exc)
            self._discard()

    def _discard(self) -> None:
        if self._out is not None:
            with contextlib.suppress(OSError):
                self._out.close()
            self._out = None
        with contextlib.suppress(OSError):
            self._partial.unlink()

    def __enter__(self) -> Keeping:
        return self

    def __exit__(self, failed: type[BaseException] | None, *exc: object) -> None:
        if self._out is None:
            return
        if failed is not None or self._written != self._size:
            self._discard()  # a reader that stopped half-way, or a file not its listed size
            return
        try:
            self._out.close()
            self._out = None
            os.replace(self._partial, self._path)  # whole, for a reader on another process
        except OSError as exc:
            log.debug("Could not keep %s on disk: %s", self._path.name, exc)
            self._discard()


def _size_of(folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                total += entry.stat().st_size
    return total


def remove_stale(tmp_dir: str | None, older_than: float = STALE_AFTER) -> int:
    """Remove kept files that no import took within older_than seconds; return how many."""
    try:
        private.check(private.root(tmp_dir))
        private.check(_root(tmp_dir))
        folders = [
            entry.path
            for entry in os.scandir(_root(tmp_dir))
            if entry.is_dir(follow_symlinks=False)
        ]
    except (OSError, NotPrivate):
        return 0
    removed = sum(remove_old_files(folder, older_than) for folder in folders)
    if removed:
        log.info("Removed %s kept revision files that no import took.", removed)
    return removed
