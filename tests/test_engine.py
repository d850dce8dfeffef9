"""kmdb.load.engine: connections as kmdb makes them, and the one file LOAD DATA LOCAL may send."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from kmdb.load.database import create_schema
from kmdb.load.engine import make_engine
from kmdb.settings import Settings


def test_load_data_local_sends_only_kmdbs_own_files(mysql_url: str, tmp_path: Path) -> None:
    engine = make_engine(Settings(database_url=mysql_url))
    create_schema(engine)
    foreign = tmp_path / "secret.tsv"
    foreign.write_text("1\t1\ta\tb\t2014-01-01 00:00:00\n")
    with pytest.raises(OperationalError, match="kmdb refused to send"), engine.begin() as conn:
        conn.execute(text(f"LOAD DATA LOCAL INFILE '{foreign}' INTO TABLE alias_sightings"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM alias_sightings")).scalar_one() == 0
