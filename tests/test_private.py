"""kmdb.extract.private: KMDB_TMP_DIR's private folder, and files read only if this user's alone.

The stash's use of it against planted files is in tests/test_stash.py.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest

from kmdb.errors import NotPrivate
from kmdb.extract import private


def test_the_folder_and_its_levels_are_made_closed_to_everyone_else(tmp_path: Path) -> None:
    made = private.folder(str(tmp_path / "tmp"), "stash", "abc")
    assert made == tmp_path / "tmp" / f"kmdb-{os.geteuid()}" / "stash" / "abc"
    for level in (made.parent.parent, made.parent, made):
        assert stat.S_IMODE(level.lstat().st_mode) == 0o700
    assert private.folder(str(tmp_path / "tmp"), "stash", "abc") == made  # again: the same


def test_a_folder_that_is_a_symlink_open_or_not_a_folder_is_refused(tmp_path: Path) -> None:
    root = private.root(str(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root.symlink_to(elsewhere)
    with pytest.raises(NotPrivate, match="is a symlink; remove it") as refused:
        private.folder(str(tmp_path), "stash")
    assert refused.value.path == str(root)
    root.unlink()
    root.write_text("")
    with pytest.raises(NotPrivate, match="is not a folder"):
        private.check(root)
    root.unlink()
    root.mkdir(mode=0o700)
    root.chmod(0o755)
    with pytest.raises(NotPrivate, match=r"is open to other users \(mode 755\); run chmod 700"):
        private.folder(str(tmp_path), "stash")
    assert not (root / "stash").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    root = private.root(str(tmp_path))
    root.mkdir(mode=0o700)
    os.lchown(root, 65534, 65534)
    with pytest.raises(NotPrivate, match="belongs to user id 65534, not to this user"):
        private.check(root)


def test_only_regular_files_of_this_users_alone_are_read(tmp_path: Path) -> None:
    own = tmp_path / "own.json"
    fd = private.open_private(own)
    os.write(fd, b"mine\n")
    os.close(fd)
    assert stat.S_IMODE(own.stat().st_mode) == 0o600
    assert private.read_own(own) == b"mine\n" and private.read_size(own) == 5
    # A part of the file: its own bytes, and the whole file's size.
    assert private.read_own_range(own, 1, 3) == (b"in", 5)
    assert private.read_own_range(own, 2) == (b"ne\n", 5)
    with pytest.raises(FileExistsError):  # never written over, nor through a symlink
        private.open_private(own)
    link = tmp_path / "link.json"
    link.symlink_to(own)
    open_to_all = tmp_path / "open.json"
    open_to_all.write_bytes(b"theirs\n")
    open_to_all.chmod(0o666)
    hard = tmp_path / "hard.json"
    os.link(own, hard)  # a second name: someone else may hold it
    for path in (link, open_to_all, tmp_path / "missing.json"):
        assert private.read_own(path) is None and private.read_size(path) is None
    assert private.read_own(hard) is None
    assert private.read_own_range(link, 1, 3) is None


def test_old_files_are_removed_and_fresh_ones_and_others_names_kept(tmp_path: Path) -> None:
    old, fresh, other = (tmp_path / name for name in ("kmdb-1.json", "kmdb-2.json", "notes.txt"))
    for path in (old, fresh, other):
        path.write_text("x")
    long_ago = time.time() - 7200
    for path in (old, other):
        os.utime(path, (long_ago, long_ago))
    (tmp_path / "kmdb-dir").mkdir()
    named = re.compile(r"kmdb-\d+\.json")
    assert private.remove_old_files(str(tmp_path), 3600, named) == 1
    assert not old.exists() and fresh.exists() and other.exists()
    assert private.remove_old_files(str(tmp_path), 3600) == 1  # any name: notes.txt too
    assert not other.exists() and (tmp_path / "kmdb-dir").is_dir()
    assert private.remove_old_files(str(tmp_path / "missing"), 0) == 0
