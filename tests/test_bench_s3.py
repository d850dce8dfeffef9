"""kmdb.bench.s3: moto's S3 server, an export uploaded to it and read back as kmdb reads it.

The tests' s3_endpoint fixture (conftest.py) is this server too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kmdb.bench import s3
from kmdb.extract.s3 import S3Source
from kmdb.sample import write_sample
from kmdb.settings import Settings


def test_an_uploaded_export_is_read_back_by_kmdbs_source(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_sample(tmp_path / "export", 1_000, seed=2, lines_per_revision=400)
    client = s3.client(s3_endpoint)
    s3.upload_export(tmp_path / "export", "bench-s3-test", prefix="km/", s3=client)
    for name, value in s3.aws_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    source = S3Source("s3://bench-s3-test/km", Settings(tmp_dir=str(tmp_path / "tmp")))
    assert source.list_revisions() == [1, 2, 3]
    got = b"".join(source.chunks(2))
    assert got == (tmp_path / "export" / "revisions" / "2.json").read_bytes()
    s3.remove_bucket(client, "bench-s3-test")
    assert "bench-s3-test" not in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_the_server_stops_at_the_end_of_its_block() -> None:
    import socket

    with s3.s3_server() as endpoint:
        port = int(endpoint.rsplit(":", 1)[1])
        # moto keeps its buckets per process, shared with the tests' own server: this one
        # is told to answer by a bucket of its own, not by an empty list.
        client = s3.client(endpoint)
        client.create_bucket(Bucket="bench-s3-block")
        assert "bench-s3-block" in [b["Name"] for b in client.list_buckets()["Buckets"]]
        s3.remove_bucket(client, "bench-s3-block")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
