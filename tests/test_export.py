"""kmdb.extract.export: the source that --source names, and finding the revisions not imported yet."""

from __future__ import annotations

from tests.helpers import (
    run,
)


def test_a_missing_source_is_one_sentence(sqlite_url: str, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": sqlite_url}
    missing = run("kmdb-import", "--inline", env=env, check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "Error: No export to import: pass --source (a folder or s3://bucket), or set KMDB_SOURCE or AWS_BUCKET."
    )
    nowhere = run("kmdb-import", "--inline", "--source", "/no/such/folder", env=env, check=False)
    assert nowhere.returncode == 2
    assert "The export folder /no/such/folder does not exist" in nowhere.stderr
