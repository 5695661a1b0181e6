"""What every command shares: the two consoles, clear errors, settings, the store, the service, asking first."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable

import click
import sqlalchemy.exc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url

from ..config import ConfigurationError, Settings, database_url_origin, load_api_key, missing_key_message
from ..display import markup_safe
from ..elevenlabs.errors import ElevenLabsError, MalformedResponseError
from ..provisioning import ProvisioningService
from ..store import PersonaNotFoundError, PersonaStore, SchemaError
from ..voice_policy import InvalidPersonaError

console = Console(stderr=True)  # progress, warnings and errors
out = Console(highlight=False)  # the command's answer


class CommandError(click.ClickException):
    """A clear, expected failure: printed without a traceback, exit code 1."""

    def show(self, file=None) -> None:
        console.print(f"[bold red]Error:[/] {markup_safe(self.format_message())}")


def friendly_errors(command: Callable) -> Callable:
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MalformedResponseError as exc:
            raise CommandError(
                f"unexpected response from the ElevenLabs API at {load_settings().base_url} ({exc}); "
                "check ELEVENLABS_BASE_URL"
            ) from None
        except (ConfigurationError, ElevenLabsError, InvalidPersonaError, PersonaNotFoundError, SchemaError) as exc:
            raise CommandError(str(exc)) from None
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.DatabaseError) as exc:
            # The driver's own message (e.g. "file is not a database"), without the SQL statement.
            reason = getattr(exc, "orig", None) or exc.args[0]
            raise CommandError(f"cannot use the database (check PERSONAS_DATABASE_URL): {reason}") from None

    return wrapper


def load_settings() -> Settings:
    return Settings.from_env()


def open_store(settings: Settings, *, create: bool = False) -> PersonaStore:
    """The persona store. Only `db upgrade` creates one: elsewhere a missing SQLite file or table is an
    error that says where we looked, instead of an empty database made in the current directory."""
    url = make_url(settings.database_url)
    where = database_url_origin()
    if not create and url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).exists():
            raise CommandError(
                f"no persona database at {Path(url.database).resolve()} ({where}). "
                "Run `persona-agents db upgrade` to create it there, or point PERSONAS_DATABASE_URL at yours."
            )
    store = PersonaStore(settings.database_url)
    if not create and not store.has_personas_table():
        raise CommandError(f"the database {store!r} ({where}) has no personas table: run `persona-agents db upgrade`")
    return store


def require_api_key() -> str:
    api_key = load_api_key()
    if api_key is None:
        raise ConfigurationError(missing_key_message())
    return api_key


def provisioning_service(settings: Settings) -> ProvisioningService:
    return ProvisioningService.from_settings(settings, api_key=require_api_key(), store=open_store(settings))


def confirm_or_refuse(question: str, yes: bool) -> None:
    """Commands that create or delete agents ask first, and without a terminal need --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CommandError("no terminal to confirm on; pass --yes to proceed without confirmation")
    if not click.confirm(question, default=False):
        raise CommandError("cancelled; nothing was changed")


def progress_bar(label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)


yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
