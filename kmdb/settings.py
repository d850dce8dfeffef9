"""Settings from the environment, with a `.env` file that never overrides it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from kmdb.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///kmdb.sqlite3"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


@dataclass(frozen=True)
class Settings:
    """Every knob kmdb has; see `.env.example` for what each one means.

    A malformed value from the environment is kept as a problem and raised
    (ConfigError) where the setting is read, so a command stops only for the
    settings it uses: a bad KMDB_MIN_DATE stops kmdb-partition, not kmdb-status.
    """

    # Setting name -> the sentence to raise when it is read; set by from_env only.
    _problems: ClassVar[Mapping[str, str]] = {}

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

    def __getattribute__(self, name: str) -> Any:
        problems = object.__getattribute__(self, "_problems")
        if problems and name in problems:
            raise ConfigError(problems[name])
        return object.__getattribute__(self, name)

    def check(self, *names: str) -> None:
        """Raise the first problem among these settings (all of them if none are named)."""
        problems = object.__getattribute__(self, "_problems")
        for name in names or tuple(problems):
            if name in problems:
                raise ConfigError(problems[name])

    def pool_size(self) -> int:
        """The workers a pool runs (KMDB_WORKERS, else this machine's cores): kmdb-import
        cuts work into jobs whose count is a multiple of it, so that they finish together."""
        return self.workers or os.cpu_count() or 1

    def replace(self, **changes: object) -> Settings:
        """A copy with some settings changed (command-line options win over the environment)."""
        kept = {
            f.name: object.__getattribute__(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in changes
        }
        changed = Settings(**kept, **changes)  # type: ignore[arg-type]
        problems = object.__getattribute__(self, "_problems")
        _set_problems(changed, {k: v for k, v in problems.items() if k not in changes})
        return changed


def _set_problems(settings: Settings, problems: Mapping[str, str]) -> None:
    if problems:
        object.__setattr__(settings, "_problems", dict(problems))


def load_dotenv_file(path: str = ".env") -> None:
    """Read `.env` into the environment without overriding what is already set."""
    from dotenv import load_dotenv

    load_dotenv(path, override=False)


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the environment (or `env`).

    A malformed value raises ConfigError when that setting is read (or on
    Settings.check), not here: each command stops only for what it uses.
    """
    env = os.environ if env is None else env
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value and value.strip() else None

    def parse(field: str, build: Callable[[], Any]) -> None:
        try:
            values[field] = build()
        except ConfigError as exc:
            problems[field] = str(exc)

    bucket = get("AWS_BUCKET")
    parse(
        "database_url",
        lambda: normalize_database_url(get("DATABASE_URL") or DEFAULT_DATABASE_URL),
    )
    values["redis_url"] = get("KMDB_REDIS_URL") or DEFAULT_REDIS_URL
    parse("queue", lambda: _name(get("KMDB_QUEUE") or "kmdb", "KMDB_QUEUE"))
    values["source"] = get("KMDB_SOURCE") or (f"s3://{bucket}" if bucket else None)
    parse("min_date", lambda: _date(get("KMDB_MIN_DATE"), "KMDB_MIN_DATE"))
    parse("max_date", lambda: _date(get("KMDB_MAX_DATE"), "KMDB_MAX_DATE"))
    for field, name, default, minimum in [
        ("days_per_partition", "KMDB_DAYS_PER_PARTITION", 7, 1),
        ("min_revision", "KMDB_MIN_REVISION", 0, 0),
        ("revision_lookahead", "KMDB_REVISION_LOOKAHEAD", 10, 1),
        ("batch_size", "KMDB_BATCH_SIZE", 20_000, 1),
        ("part_size", "KMDB_PART_SIZE", 8 << 20, 1),
        ("workers", "KMDB_WORKERS", 0, 0),
    ]:
        parse(field, lambda n=name, d=default, m=minimum: _int(get(n), n, d, m))
    values["tmp_dir"] = get("KMDB_TMP_DIR")
    parse("keep_files", lambda: _bool(get("KMDB_KEEP_FILES"), "KMDB_KEEP_FILES"))
    settings = Settings(**values)
    _set_problems(settings, problems)
    return settings


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
