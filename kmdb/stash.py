"""Small revision files kept on local disk between their scan and their import.

Every revision file is read twice: by its scan (for aliases), then by its
import. For a small file each read is a GET, whose fixed cost (some 2 ms of
CPU here, as much again in an S3 emulator, and a round trip to S3) is most of
what reading it costs. So a scan that reads a small file whole keeps its bytes
in KMDB_TMP_DIR/kmdb-stash, and the import that reads it next on the same
machine takes them from there and removes them. An import on another machine
reads the file from S3 as before. Revision files never change once written,
so a kept copy is the file.

The stash holds at most STASH_BYTES of an export on a machine (checked once
per job, so it may pass that by a job's worth); what an import elsewhere never
took is removed after an hour by the next worker or inline import that starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from kmdb.load import STALE_AFTER, remove_old_files, remove_stale_load_files

log = logging.getLogger(__name__)

STASH_BYTES = 256 << 20
FOLDER = "kmdb-stash"


def _root(tmp_dir: str | None) -> Path:
    return Path(tmp_dir or tempfile.gettempdir()) / FOLDER


class Stash:
    """The kept copies of one export's small files, in a folder of their own."""

    def __init__(self, tmp_dir: str | None, export: str, budget: int = STASH_BYTES) -> None:
        # One folder per export (endpoint, bucket and prefix), so that two exports'
        # revisions of the same number never meet.
        name = hashlib.sha256(export.encode()).hexdigest()[:20]
        self.folder = _root(tmp_dir) / name
        self.budget = budget
        self._room: int | None = None
        self._lock = threading.Lock()

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

    def keep(self, revision: int, data: bytes) -> None:
        """Keep a whole file's bytes for its import, if the stash has room (never fails)."""
        if not data or not self._take_room(len(data)):
            return
        path = self._path(revision)
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            os.replace(partial, path)  # whole or not at all, for a reader on another process
        except OSError as exc:  # a full or read-only disk: the import reads from S3
            log.debug("Could not keep revision %s on disk: %s", revision, exc)
            with contextlib.suppress(OSError):
                partial.unlink()

    def take(self, revision: int, offset: int = 0, end: int | None = None) -> bytes | None:
        """The kept bytes of a file from offset up to end (None: not kept). A read that
        reaches the file's end removes it: its one part is then imported."""
        path = self._path(revision)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if end is None or end >= len(data):
            with contextlib.suppress(OSError):
                path.unlink()
        return data[offset:end]


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
        folders = [entry.path for entry in os.scandir(_root(tmp_dir)) if entry.is_dir()]
    except OSError:
        return 0
    removed = sum(remove_old_files(folder, older_than) for folder in folders)
    if removed:
        log.info("Removed %s kept revision files that no import took.", removed)
    return removed


def remove_leftovers(tmp_dir: str | None) -> None:
    """What others left in KMDB_TMP_DIR: load files of killed processes, kept files no
    import took (a worker or inline import calls it as it starts)."""
    remove_stale_load_files(tmp_dir)
    remove_stale(tmp_dir)
