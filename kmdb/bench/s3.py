"""moto's S3 server on a local port, and an export uploaded to it: for the benchmarks and the tests.

No real bucket is reachable from a test or a benchmark, so both serve their
exports from moto in server mode, over HTTP, as boto3 reads a real bucket.
moto is in the `test` extra, not a dependency of kmdb.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Credentials that moto accepts; boto3 needs some to sign its requests.
TESTING_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free local port, for the with block; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # Its request log would drown what the caller prints.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def aws_env(endpoint: str) -> dict[str, str]:
    """The environment that points boto3 (in this process or another) at the server."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        **TESTING_CREDENTIALS,
        # Never look for an instance role on the network.
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def client(endpoint: str | None = None) -> Any:
    """A boto3 S3 client for the server at endpoint (else for the environment's AWS settings)."""
    import boto3

    if endpoint is None:
        return boto3.client("s3")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=TESTING_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TESTING_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=TESTING_CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def upload_export(folder: Path, bucket: str, prefix: str = "", s3: Any = None) -> None:
    """Copy an export folder into a new bucket (with s3, that client's; else the environment's)."""
    s3 = client() if s3 is None else s3
    s3.create_bucket(Bucket=bucket)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, prefix + str(path.relative_to(folder)))


def remove_bucket(s3: Any, bucket: str) -> None:
    """Delete a bucket and everything in it."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)
