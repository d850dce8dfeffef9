"""What every command shares: its settings, output with passwords masked, and how it ends.

A command ends on a failure with one sentence on stderr and the exit status
that kmdb.errors.exit_status gives; `kmdb --traceback COMMAND` or KMDB_DEBUG=1
shows the whole trace instead of the sentence.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from kmdb import settings as settings_module
from kmdb.errors import exit_status
from kmdb.settings import Settings, url_secrets

# Where `kmdb --traceback` leaves its wish, in the click context shared by its commands.
TRACEBACK = "kmdb.traceback"


class _Masked:
    """A text stream that writes every known password as ***.

    URLs are masked where kmdb prints them; this catches the rest (a driver's
    message, a traceback, a library's log line) whatever prints it.
    """

    def __init__(self, stream: Any, secrets: list[str]) -> None:
        self.stream = stream
        self.secrets = secrets

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("a text stream takes str")
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return int(self.stream.write(text))

    def __getattr__(self, name: str) -> Any:
        # No .buffer: click would write bytes to it, past the masking.
        if name == "buffer":
            raise AttributeError(name)
        return getattr(self.stream, name)


def _mask_output() -> None:
    """Mask the passwords of DATABASE_URL, KMDB_REDIS_URL and AWS in all this process prints."""
    secrets = [
        s
        for name in ("DATABASE_URL", "KMDB_REDIS_URL")
        for s in url_secrets(os.environ.get(name, ""))
    ]
    secrets += [os.environ.get(n, "") for n in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    # Shorter ones would mask common words too; mask_url still hides them in URLs.
    secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    if not secrets:
        return
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        setattr(
            sys, name, _Masked(stream.stream if isinstance(stream, _Masked) else stream, secrets)
        )


def load_settings(*uses: str, every: bool = False) -> Settings:
    """The settings, with those named (or, with every, all of them) checked now.

    The others are checked where they are read: a command stops only for a bad
    setting it uses. Commands that run imports use nearly all, so check all first.
    """
    settings_module.load_dotenv_file()
    _mask_output()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    settings = settings_module.from_env()
    if uses or every:
        settings.check(*uses)
    return settings


def date_option(name: str, envvar: str, help_text: str) -> Callable[..., Any]:
    """An option that takes a day like 2014-01-31 (its default named by envvar in --help)."""

    def parse(_ctx: Any, _param: Any, value: str | None) -> dt.date | None:
        if value is None:
            return None
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a date like 2014-01-31.") from None

    return click.option(name, type=str, callback=parse, help=f"{help_text} (default ${envvar}).")


def tracebacks_wanted() -> bool:
    """Whether a failure shows its whole trace: `kmdb --traceback`, or KMDB_DEBUG=1."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(TRACEBACK):
        return True
    return os.environ.get("KMDB_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """End a command on kmdb's failures as kmdb.errors.exit_status says, not with a traceback.

    A failure exit_status does not know (a bug of kmdb's) keeps its traceback.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            end = exit_status(exc)
            if end is None:
                raise
            if end.status and tracebacks_wanted():
                traceback.print_exc()
            elif end.message:
                click.echo(end.message, err=end.status != 0)
            sys.exit(end.status)

    return wrapper


def exit_now(code: object) -> None:
    """Leave the process at once with the status of sys.exit(code), skipping Python's teardown."""
    end = exit_status(SystemExit(code))
    assert end is not None  # every SystemExit has a status
    if end.message:
        click.echo(end.message, err=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(end.status)
