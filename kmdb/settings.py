"""Settings from the environment, with a `.env` file that never overrides it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from kmdb.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///kmdb.sqlite3"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


@dataclass(frozen=True)
class Settings:
    """Every knob kmdb has; see `.env.example` for what each one means."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    queue: str = "kmdb"
    source: str | None = None
    min_date: dt.date | None = None
    max_date: dt.date | None = None
    days_per_partition: int = 7
    min_revision: int = 0
    revision_lookahead: int = 10
    batch_size: int = 20_000
    part_size: int = 8 << 20
    tmp_dir: str | None = None
    keep_files: bool = False
    workers: int = 0  # 0: as many as the machine has cores

    def pool_size(self) -> int:
        """The workers a pool runs (KMDB_WORKERS, else this machine's cores): kmdb-import
        cuts work into jobs whose count is a multiple of it, so that they finish together."""
        return self.workers or os.cpu_count() or 1

    def replace(self, **changes: object) -> Settings:
        """A copy with some settings changed (command-line options win over the environment)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def load_dotenv_file(path: str = ".env") -> None:
    """Read `.env` into the environment without overriding what is already set."""
    from dotenv import load_dotenv

    load_dotenv(path, override=False)


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the environment (or `env`), raising ConfigError on bad values."""
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value and value.strip() else None

    bucket = get("AWS_BUCKET")
    return Settings(
        database_url=normalize_database_url(get("DATABASE_URL") or DEFAULT_DATABASE_URL),
        redis_url=get("KMDB_REDIS_URL") or DEFAULT_REDIS_URL,
        queue=_name(get("KMDB_QUEUE") or "kmdb", "KMDB_QUEUE"),
        source=get("KMDB_SOURCE") or (f"s3://{bucket}" if bucket else None),
        min_date=_date(get("KMDB_MIN_DATE"), "KMDB_MIN_DATE"),
        max_date=_date(get("KMDB_MAX_DATE"), "KMDB_MAX_DATE"),
        days_per_partition=_int(get("KMDB_DAYS_PER_PARTITION"), "KMDB_DAYS_PER_PARTITION", 7, 1),
        min_revision=_int(get("KMDB_MIN_REVISION"), "KMDB_MIN_REVISION", 0, 0),
        revision_lookahead=_int(get("KMDB_REVISION_LOOKAHEAD"), "KMDB_REVISION_LOOKAHEAD", 10, 1),
        batch_size=_int(get("KMDB_BATCH_SIZE"), "KMDB_BATCH_SIZE", 20_000, 1),
        part_size=_int(get("KMDB_PART_SIZE"), "KMDB_PART_SIZE", 8 << 20, 1),
        tmp_dir=get("KMDB_TMP_DIR"),
        keep_files=_bool(get("KMDB_KEEP_FILES"), "KMDB_KEEP_FILES"),
        workers=_int(get("KMDB_WORKERS"), "KMDB_WORKERS", 0, 0),
    )


def normalize_database_url(url: str) -> str:
    """Accept the Ruby original's `mysql://` and `mysql2://` URLs as MySQL through PyMySQL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(
            f"DATABASE_URL is not a URL ({url!r}); set it like "
            "mysql+pymysql://user:password@127.0.0.1:3306/kmdb or sqlite:///kmdb.sqlite3."
        )
    if scheme in ("mysql", "mysql2", "mysql+mysql2"):
        scheme = "mysql+pymysql"
    if scheme in ("mariadb", "mariadb+mysql2"):
        scheme = "mariadb+pymysql"
    if scheme.split("+")[0] not in ("mysql", "mariadb", "sqlite"):
        raise ConfigError(
            f"DATABASE_URL uses {scheme}://, which kmdb does not support; use "
            "mysql+pymysql://user:password@host/db or sqlite:///path.sqlite3."
        )
    return f"{scheme}://{rest}"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for anything shown to people."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _int(value: str | None, name: str, default: int, minimum: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ConfigError(
            f"{name} must be a whole number of at least {minimum}, e.g. {name}={default}; it is {value!r}."
        )
    return number


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{name} must be a date like 2014-01-31; it is {value!r}.") from None


def _bool(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "yes", "true", "on", "y"):
        return True
    if value.lower() in ("0", "no", "false", "off", "n"):
        return False
    raise ConfigError(f"{name} must be YES or NO; it is {value!r}.")


def _name(value: str, name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise ConfigError(
            f"{name} may only hold letters, digits, '.', '_' and '-', e.g. {name}=kmdb; it is {value!r}."
        )
    return value
