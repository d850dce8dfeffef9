"""Files that others left in KMDB_TMP_DIR: load files of killed processes, kept copies no import took."""

from __future__ import annotations

from kmdb.extract.stash import remove_stale
from kmdb.load.bulk import remove_stale_load_files


def remove_leftovers(tmp_dir: str | None) -> None:
    """Remove what others left in KMDB_TMP_DIR (a worker or inline import calls it as it starts)."""
    remove_stale_load_files(tmp_dir)
    remove_stale(tmp_dir)
