from __future__ import annotations

import datetime as dt

import pytest

from kmdb.errors import ConfigError
from kmdb.settings import from_env, mask_url, normalize_database_url


def test_defaults_are_the_embedded_setup() -> None:
    s = from_env({})
    assert s.database_url == "sqlite:///kmdb.sqlite3"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.source is None
    assert s.revision_lookahead == 10


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("mysql://u:p@h/db", "mysql+pymysql://u:p@h/db"),
        ("mysql2://u:p@h:3307/db", "mysql+pymysql://u:p@h:3307/db"),
        ("mysql+pymysql://u@h/db", "mysql+pymysql://u@h/db"),
        ("sqlite:///x.sqlite3", "sqlite:///x.sqlite3"),
    ],
)
def test_ruby_style_mysql_urls_mean_pymysql(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


def test_unsupported_database_says_what_to_use() -> None:
    with pytest.raises(ConfigError, match="mysql\\+pymysql://user:password@host/db"):
        _ = from_env({"DATABASE_URL": "postgresql://h/db"}).database_url


def test_password_is_masked() -> None:
    assert mask_url("mysql+pymysql://bob:s3cret@h/db") == "mysql+pymysql://bob:***@h/db"
    assert mask_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("sqlite:///a.db") == "sqlite:///a.db"


def test_bucket_gives_the_default_source() -> None:
    assert from_env({"AWS_BUCKET": "my-km"}).source == "s3://my-km"
    assert from_env({"AWS_BUCKET": "b", "KMDB_SOURCE": "/data/km"}).source == "/data/km"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("KMDB_BATCH_SIZE", "lots", "KMDB_BATCH_SIZE must be a whole number of at least 1"),
        ("KMDB_DAYS_PER_PARTITION", "0", "KMDB_DAYS_PER_PARTITION must be a whole number"),
        ("KMDB_MIN_DATE", "01/02/2014", "KMDB_MIN_DATE must be a date like 2014-01-31"),
        ("KMDB_KEEP_FILES", "maybe", "KMDB_KEEP_FILES must be YES or NO"),
        ("KMDB_QUEUE", "a b", "KMDB_QUEUE may only hold"),
        ("KMDB_OUTAGE_WAIT", "soon", "KMDB_OUTAGE_WAIT must be a whole number of at least 0"),
        ("KMDB_WAIT_FOR_WORKERS", "0", "KMDB_WAIT_FOR_WORKERS must be a whole number"),
    ],
)
def test_malformed_settings_say_how_to_fix_them(name: str, value: str, message: str) -> None:
    settings = from_env({name: value})
    with pytest.raises(ConfigError, match=message):
        settings.check()
    field = {"KMDB_DAYS_PER_PARTITION": "days_per_partition", "KMDB_KEEP_FILES": "keep_files"}
    with pytest.raises(ConfigError, match=message):
        getattr(settings, field.get(name, name.removeprefix("KMDB_").lower()))


def test_a_bad_setting_stops_only_what_reads_it() -> None:
    settings = from_env({"KMDB_MIN_DATE": "soon", "DATABASE_URL": "sqlite:///a.db"})
    assert settings.database_url == "sqlite:///a.db"
    assert settings.max_date is None
    settings.check("database_url", "redis_url", "queue")
    with pytest.raises(ConfigError, match="KMDB_MIN_DATE must be a date"):
        settings.check("queue", "min_date")
    with pytest.raises(ConfigError, match="KMDB_MIN_DATE must be a date"):
        _ = settings.min_date
    # A copy keeps the problem, unless the copy sets that setting (an option given).
    with pytest.raises(ConfigError, match="KMDB_MIN_DATE"):
        _ = settings.replace(batch_size=5).min_date
    fixed = settings.replace(min_date=dt.date(2014, 1, 1))
    assert fixed.min_date == dt.date(2014, 1, 1)
    fixed.check()


def test_dates_and_flags_parse() -> None:
    s = from_env({"KMDB_MIN_DATE": "2014-01-01", "KMDB_KEEP_FILES": "YES"})
    assert s.min_date == dt.date(2014, 1, 1)
    assert s.keep_files is True


def test_the_pool_size_is_kmdb_workers_else_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env({"KMDB_WORKERS": "3"}).pool_size() == 3
    monkeypatch.setattr("os.cpu_count", lambda: 5)
    assert from_env({}).pool_size() == 5
    with pytest.raises(ConfigError, match="KMDB_WORKERS"):
        from_env({"KMDB_WORKERS": "two"}).pool_size()


def test_a_password_that_breaks_its_url_says_to_percent_encode_it() -> None:
    broken = from_env(
        {"DATABASE_URL": "mysql://kmadv:S3c@Pw!@h/db", "KMDB_REDIS_URL": "redis://:a/b?c@h/0"}
    )
    with pytest.raises(ConfigError, match="DATABASE_URL .* has '@' in its password") as db:
        _ = broken.database_url
    with pytest.raises(ConfigError, match="has '/' and '\\?' in its user or password") as redis:
        _ = broken.redis_url
    assert "S3c" not in str(db.value) and "a/b" not in str(redis.value)
    # An '@' in a user name (no password), or in a Redis password, parses as meant.
    fine = from_env({"DATABASE_URL": "mysql://me@x.com@h/db", "KMDB_REDIS_URL": "redis://:a@b@h/0"})
    assert fine.database_url == "mysql+pymysql://me@x.com@h/db"
    assert fine.redis_url == "redis://:a@b@h/0"
