"""Settings from the environment, with a `.env` file that never overrides it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote, unquote_plus

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
    # Seconds a worker rides out a lost Redis or database: long enough for a restart
    # or a failover, short enough that a wrong URL is noticed.
    outage_wait: int = 300
    # Seconds kmdb-import --wait lets jobs wait with no live worker before it gives up:
    # long enough to start kmdb-pool in another terminal.
    wait_for_workers: int = 120

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
    parse("redis_url", lambda: _redis_url(get("KMDB_REDIS_URL") or DEFAULT_REDIS_URL))
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
        ("outage_wait", "KMDB_OUTAGE_WAIT", 300, 0),
        ("wait_for_workers", "KMDB_WAIT_FOR_WORKERS", 120, 1),
    ]:
        parse(field, functools.partial(_int, get(name), name, default, minimum))
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
            f"DATABASE_URL is not a URL ({mask_url(url)!r}); set it like "
            "mysql+pymysql://user:password@127.0.0.1:3306/kmdb or sqlite:///kmdb.sqlite3."
        )
    if scheme in ("mysql", "mysql2", "mysql+mysql2"):
        scheme = "mysql+pymysql"
    if scheme in ("mariadb", "mariadb+mysql2"):
        scheme = "mariadb+pymysql"
    # SQLAlchemy ends the password at its first '@' and takes the rest for the host.
    _check_userinfo(url, "DATABASE_URL", "@", password_only=True)
    if scheme.split("+")[0] not in ("mysql", "mariadb", "sqlite"):
        raise ConfigError(
            f"DATABASE_URL uses {scheme}://, which kmdb does not support; use "
            "mysql+pymysql://user:password@host/db or sqlite:///path.sqlite3."
        )
    return f"{scheme}://{rest}"


# A password given as a query parameter: ?password=..., as SQLAlchemy and redis-py accept.
_QUERY_SECRET = re.compile(r"([?&;](?:password|passwd|pwd)=)([^&;#]*)", re.IGNORECASE)


def _userinfo(rest: str) -> tuple[str, str] | None:
    """(user[:password], @host...) of a URL without its scheme, or None without a user.

    The last '@' before any query password ends the user part, so that a
    password holding an unencoded '@' is still taken whole.
    """
    query = _QUERY_SECRET.search(rest)
    at = rest.rfind("@", 0, query.start() if query else len(rest))
    return (rest[:at], rest[at:]) if at >= 0 else None


def _without_scheme(url: str) -> tuple[str, str]:
    head, sep, rest = url.partition("://")
    return (head + sep, rest) if sep else ("", url)


def mask_url(url: str) -> str:
    """The URL with every password (user:password@, ?password=) replaced by ***, for people."""
    head, rest = _without_scheme(url)
    found = _userinfo(rest)
    if found is not None:
        user, colon, _password = found[0].partition(":")
        if colon:
            rest = f"{user}:***{found[1]}"
    return head + _QUERY_SECRET.sub(r"\1***", rest)


def url_secrets(url: str) -> list[str]:
    """The passwords a URL holds, as written and percent-decoded, longest first."""
    _head, rest = _without_scheme(url)
    found = [m.group(2) for m in _QUERY_SECRET.finditer(rest)]
    userinfo = _userinfo(rest)
    if userinfo is not None and ":" in userinfo[0]:
        found.append(userinfo[0].partition(":")[2])
    forms = {form for secret in found for form in (secret, unquote(secret), unquote_plus(secret))}
    return sorted((f for f in forms if f), key=len, reverse=True)


def _check_userinfo(url: str, name: str, unsafe: str, password_only: bool) -> None:
    found = _userinfo(_without_scheme(url)[1])
    if found is None:
        return
    part = found[0].partition(":")[2] if password_only else found[0]
    present = [c for c in unsafe if c in part]
    if present:
        raise ConfigError(
            f"{name} ({mask_url(url)}) has {' and '.join(repr(c) for c in present)} in its "
            f"{'password' if password_only else 'user or password'}, which breaks the URL; "
            "percent-encode them (@ is %40, / is %2F, ? is %3F, # is %23), e.g. with "
            "python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=\"\"))' "
            "'PASSWORD'."
        )


def _redis_url(url: str) -> str:
    # redis-py splits the URL as urllib does: the host part ends at the first / ? or #.
    _check_userinfo(url, "KMDB_REDIS_URL", "/?#", password_only=False)
    return url


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
