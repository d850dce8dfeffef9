"""What a revision file is called: revisions/N.json, N a decimal number without leading zeros.

An export's revisions/ folder may hold other files too (a copy, a note, 007.json);
only these names are revisions, so that no file is ever read as two revisions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

log = logging.getLogger(__name__)

# A revision file is revisions/N.json, N a decimal number without leading zeros (so
# that 07.json and 7.json are never both revision 7); [0-9], not \d, which takes
# other scripts' digits too.
_REVISION = re.compile(r"(0|[1-9][0-9]*)\.json")

SHOWN_SKIPPED = 10


def revision_names(names: Iterable[str]) -> tuple[list[int], list[str]]:
    """The revision numbers among names found in revisions/ (N.json, directly in it),
    and the other names, each sorted."""
    found: set[int] = set()
    skipped: set[str] = set()
    for name in names:
        match = _REVISION.fullmatch(name)
        if match:
            found.add(int(match.group(1)))
        elif name:
            skipped.add(name)
    return sorted(found), sorted(skipped)


def say_skipped(where: str, skipped: list[str]) -> None:
    """Warn of the names in a revisions/ folder that are not revisions (the first few by name)."""
    if skipped:
        shown = ", ".join(skipped[:SHOWN_SKIPPED])
        more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
        log.warning(
            "Skipping %s in %s that %s not named N.json (N a number without leading zeros): %s%s.",
            f"{len(skipped)} files" if len(skipped) > 1 else "a file",
            where,
            "are" if len(skipped) > 1 else "is",
            shown,
            more,
        )
