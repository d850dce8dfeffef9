"""The user's filters: ignored users, whitelisted events, blacklisted properties.

Applying them to a record is pure; kmdb.load.filter_tables reads them from their
tables when an import starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmdb.transform.parse import Record


@dataclass(frozen=True)
class Filters:
    """What the three filter tables held when the import started."""

    ignored_users: frozenset[str] = frozenset()
    whitelisted_events: frozenset[str] = frozenset()
    blacklisted_properties: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        """Whether any filter table has a row."""
        return bool(self.ignored_users or self.whitelisted_events or self.blacklisted_properties)

    def keep(self, record: Record) -> Record | None:
        """The record as it is to be stored, or None when a filter drops it."""
        if record.p in self.ignored_users or record.p2 in self.ignored_users:
            return None
        if (
            record.kind == "event"
            and self.whitelisted_events
            and record.n not in self.whitelisted_events
        ):
            return None
        if self.blacklisted_properties and record.properties:
            kept = tuple(p for p in record.properties if p[0] not in self.blacklisted_properties)
            if len(kept) != len(record.properties):
                return Record(record.kind, record.t, record.p, record.n, record.p2, kept)
        return record
