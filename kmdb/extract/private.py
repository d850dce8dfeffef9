"""KMDB_TMP_DIR's private folder: local copies of an export, readable by this user alone.

KMDB_TMP_DIR is /tmp by default, where anyone may create a folder of the name kmdb
would use, or plant files in it. So kmdb keeps copies in KMDB_TMP_DIR/kmdb-<uid>,
which it makes with mode 0700 and uses only while it is a real folder (not a
symlink), owned by this user and closed to everyone else; files in it are 0600.
Files of kmdb's own that nobody took (a killed process's) are removed once stale.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from pathlib import Path

from kmdb.errors import NotPrivate

# A file of kmdb's own (a load file, a kept copy) that nothing took for this many
# seconds is a leftover: a load file lives for the seconds its load takes, and a
# kept copy until the import that follows its scan.
STALE_AFTER = 3600.0


def root(tmp_dir: str | None) -> Path:
    """Where the private folder is (whether it exists or not)."""
    return Path(tmp_dir or tempfile.gettempdir()) / f"kmdb-{os.geteuid()}"


def check(path: Path) -> None:
    """Raise NotPrivate unless path is a folder of this user's that no one else may enter."""
    try:
        found = os.lstat(path)
    except OSError as exc:
        raise NotPrivate(f"Cannot use {path}: {exc.strerror}.", str(path)) from None
    if stat.S_ISLNK(found.st_mode) or not stat.S_ISDIR(found.st_mode):
        why = "a symlink" if stat.S_ISLNK(found.st_mode) else "not a folder"
        raise NotPrivate(f"{path} is {why}; remove it, kmdb makes it anew.", str(path))
    if found.st_uid != os.geteuid():
        raise NotPrivate(
            f"{path} belongs to user id {found.st_uid}, not to this user; remove it, "
            "kmdb makes it anew, or set KMDB_TMP_DIR to a folder of your own.",
            str(path),
        )
    if found.st_mode & 0o077:
        raise NotPrivate(
            f"{path} is open to other users (mode {stat.S_IMODE(found.st_mode):o}); "
            "run chmod 700 on it, or remove it.",
            str(path),
        )


def folder(tmp_dir: str | None, *names: str) -> Path:
    """KMDB_TMP_DIR/kmdb-<uid>/names..., each level made with mode 0700 where missing
    and checked to be private (NotPrivate otherwise)."""
    base = Path(tmp_dir or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    path = root(tmp_dir)
    for name in (None, *names):
        if name is not None:
            path = path / name
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise NotPrivate(f"Cannot make {path}: {exc.strerror}.", str(path)) from None
        check(path)
    return path


def open_private(path: Path) -> int:
    """A new file at path, for writing, mode 0600 (fails if anything is there, a symlink too)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


def read_own(path: Path) -> bytes | None:
    """A file's bytes if it is a regular file of this user's that no one else may change;
    None otherwise (missing, a symlink, someone else's)."""
    found = read_own_range(path)
    return None if found is None else found[0]


def read_own_range(path: Path, offset: int = 0, end: int | None = None) -> tuple[bytes, int] | None:
    """The bytes from offset up to end of a file as read_own takes it, and the file's size;
    None where read_own gives None. A part of a big kept file reads only its own bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        found = os.fstat(file.fileno())
        if (
            not stat.S_ISREG(found.st_mode)
            or found.st_uid != os.geteuid()
            or found.st_mode & 0o077
            or found.st_nlink != 1
        ):
            return None
        file.seek(offset)
        data = file.read() if end is None else file.read(max(0, end - offset))
        return data, found.st_size


def read_size(path: Path) -> int | None:
    """The size of a regular file of this user's that no one else may change; None otherwise."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o077:
        return None
    return found.st_size


def remove_old_files(folder: str, older_than: float, named: re.Pattern[str] | None = None) -> int:
    """Delete the files in folder (named so, if given) not changed for older_than seconds;
    return how many. A folder that cannot be read has none."""
    cutoff = time.time() - older_than
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if named is not None and not named.fullmatch(entry.name):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
    return removed
