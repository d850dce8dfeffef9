"""An export in an S3 bucket: s3://bucket[/prefix]/revisions/N.json, read with boto3 (its only user)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from kmdb.errors import ConfigError, KmdbError, NotPrivate, SourceError
from kmdb.extract import private
from kmdb.extract.local import CHUNK, file_chunks
from kmdb.extract.names import revision_names, say_skipped
from kmdb.extract.stash import Keeping, Stash
from kmdb.settings import Settings

T = TypeVar("T")

log = logging.getLogger(__name__)

_clients: dict[tuple[tuple[str, str], ...], Any] = {}


def _s3_client() -> Any:
    """boto3's S3 client, made once per process for the AWS settings of the environment.

    Making one costs CPU that a worker would otherwise pay on every job.
    boto3's clients are safe to share between threads.
    """
    import boto3
    from botocore.config import Config

    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    if key not in _clients:
        # Adaptive retries back off on throttling (503 SlowDown) as well as on errors.
        # Checksums only where S3 requires them (botocore's default since 1.36 is
        # always): an object's CRC computed on every GET is a large share of a small
        # file's read, on both sides, and TLS already guards what crosses the network.
        config = Config(
            retries={"max_attempts": 10, "mode": "adaptive"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        _clients[key] = boto3.client("s3", config=config)
    return _clients[key]


class S3Source:
    """An export in a bucket: s3://bucket[/prefix]/revisions/N.json, read with boto3."""

    def __init__(self, url: str, settings: Settings) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError("The source s3:// needs a bucket name, e.g. s3://my-km-export.")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.name = url
        self.settings = settings
        self.client = _s3_client()
        self._sizes: dict[str, int] = {}
        self.skipped: list[str] = []  # keys in revisions/ that are not revisions, once listed
        # KMDB_KEEP_FILES keeps every file on disk already.
        export = f"{self.client.meta.endpoint_url}|{bucket}|{self.prefix}"
        self.stash = None if settings.keep_files else Stash(settings.tmp_dir, export)

    def _key(self, revision: int) -> str:
        return f"{self.prefix}revisions/{revision}.json"

    def _error(self, exc: Exception, what: str) -> KmdbError:
        from botocore.exceptions import NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return ConfigError(
                f"No AWS credentials to read {self.name}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run where an instance role applies."
            )
        return SourceError(f"Cannot {what} in {self.name}: {exc}.")

    def list_revisions(self) -> list[int] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}revisions/"):
                for item in page.get("Contents", []):
                    keys.append(item["Key"])
                    # Kept so that planning parts needs no request per file.
                    self._sizes[item["Key"]] = int(item["Size"])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("AccessDenied", "403"):
                log.info("Listing %s is not allowed; probing revision numbers instead", self.name)
                return None
            if code == "NoSuchBucket":
                raise SourceError(
                    f"The bucket {self.bucket} does not exist; check --source or AWS_BUCKET."
                ) from None
            raise self._error(exc, "list revisions") from exc
        except BotoCoreError as exc:
            raise self._error(exc, "list revisions") from exc
        folder = f"{self.prefix}revisions/"
        numbers, self.skipped = revision_names(key.removeprefix(folder) for key in keys)
        say_skipped(f"s3://{self.bucket}/{folder}", self.skipped)
        return numbers

    def _unless_missing(self, call: Callable[[], T], doing: str) -> T | None:
        """call's answer, or None where S3 says the object is not there."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error(exc, doing) from exc
        except BotoCoreError as exc:
            raise self._error(exc, doing) from exc

    def _head(self, revision: int) -> dict[str, Any] | None:
        def head() -> dict[str, Any]:
            found: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self._key(revision)
            )
            return found

        return self._unless_missing(head, f"look up revision {revision}")

    def exists(self, revision: int) -> bool:
        return self._head(revision) is not None

    def read_text(self, name: str) -> str | None:
        def read() -> str:
            body = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}{name}")["Body"]
            text: str = body.read().decode("utf-8", errors="replace")
            return text

        return self._unless_missing(read, f"read {name}")

    def size(self, revision: int) -> int | None:
        if self._key(revision) in self._sizes:
            return self._sizes[self._key(revision)]
        head = self._head(revision)
        return int(head["ContentLength"]) if head else None

    def forget(self, revision: int) -> None:
        """Remove this machine's kept copy of a revision now imported, if there is one."""
        if self.stash is not None:
            self.stash.forget(revision)

    def keeping(self, revision: int, size: int) -> Keeping | None:
        """Keep a file that a scan reads whole, as it is read, for the imports of its parts
        on this machine."""
        return self.stash.keeping(revision, size) if self.stash is not None else None

    def _local_copy(self, revision: int) -> Path | None:
        """With KMDB_KEEP_FILES, the file is downloaded once to kmdb's private folder in
        KMDB_TMP_DIR and kept (None: not kept, read it from S3)."""
        if not self.settings.keep_files:
            return None
        # One folder per export, as for the stash.
        export = f"{self.client.meta.endpoint_url}|{self.bucket}|{self.prefix}"
        try:
            folder = private.folder(
                self.settings.tmp_dir, "files", hashlib.sha256(export.encode()).hexdigest()[:20]
            )
        except NotPrivate as exc:
            log.warning("Reading revision %s from S3, not keeping it: %s", revision, exc)
            return None
        path = folder / f"{revision}.json"
        size = self.size(revision)
        found = private.read_size(path)
        if found is not None and found == size:
            return path
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        try:
            partial.unlink(missing_ok=True)
            with os.fdopen(private.open_private(partial), "wb") as out:
                self.client.download_fileobj(self.bucket, self._key(revision), out)
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise self._error(exc, f"download revision {revision}") from exc
        os.replace(partial, path)
        return path

    def chunks(self, revision: int, offset: int = 0, end: int | None = None) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        if end is not None and end <= offset:
            return
        kept = (
            self.stash.take(revision, offset, end, self._sizes.get(self._key(revision)))
            if self.stash is not None
            else None
        )
        if kept is not None:
            if kept:
                yield kept
            return
        local = self._local_copy(revision)
        if local is not None:
            yield from file_chunks(local, revision, self.name, offset, end)
            return
        args = {"Bucket": self.bucket, "Key": self._key(revision)}
        if offset or end is not None:
            args["Range"] = f"bytes={offset}-{'' if end is None else end - 1}"
        try:
            body = self.client.get_object(**args)["Body"]
            yield from body.iter_chunks(CHUNK)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"read revision {revision}") from exc
