"""kmdb.transform.rows: ids, time literals and LOAD DATA fields of the rows written."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st


@hsettings(max_examples=500)
@given(st.integers(0, 253402300799))
def test_timestamps_are_utc_datetime_literals(t: int) -> None:
    import time

    from kmdb.transform.rows import timestamp

    assert timestamp(t) == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
