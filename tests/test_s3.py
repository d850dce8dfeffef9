"""kmdb.extract.s3: an export in a bucket (moto's S3 server), read with boto3."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from tests.helpers import (
    run,
    sample_bucket,
)
from tests.model import assert_same, dump, expected, read_export


def test_keep_files_downloads_once_to_the_tmp_dir(
    sqlite_url: str, s3_env: dict[str, str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    bucket = sample_bucket(folder, 3_000, seed=5, lines_per_revision=1_000, prefix="km/")
    keep = tmp_path / "downloads"
    env = {
        **cli_env,
        **s3_env,
        "DATABASE_URL": sqlite_url,
        "KMDB_KEEP_FILES": "YES",
        "KMDB_TMP_DIR": str(keep),
        "KMDB_BATCH_SIZE": "250",
    }
    run("kmdb-import", "--inline", "--source", f"s3://{bucket}/km", env=env)
    kept = sorted(p.name for p in keep.rglob("*.json"))
    assert kept == ["1.json", "2.json", "3.json"]
    for path in keep.rglob("*.json"):
        assert path.read_bytes() == (folder / "revisions" / path.name).read_bytes()
    assert_same(dump(create_engine(sqlite_url)), expected(read_export(folder)))


def test_missing_aws_credentials_are_one_sentence(
    sqlite_url: str, s3_endpoint: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **cli_env,
        "DATABASE_URL": sqlite_url,
        "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL": s3_endpoint,
    }
    result = run("kmdb-import", "--inline", "--source", "s3://some-bucket", env=env, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "Error: No AWS credentials to read s3://some-bucket: set AWS_ACCESS_KEY_ID"
    )
    assert "Traceback" not in result.stderr
