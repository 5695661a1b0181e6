"""What every command shares: the two consoles, clear errors, settings, the store, the service, asking first."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import click
import sqlalchemy.exc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url

from ..config import ConfigurationError, Settings, database_url_origin, load_api_key, missing_key_message
from ..display import markup_safe
from ..elevenlabs.errors import ElevenLabsError, MalformedResponseError
from ..provisioning import ProvisioningService
from ..schema_errors import SchemaError
from ..store import PersonaNotFoundError, PersonaStore
from ..persona_validation import InvalidPersonaError

console = Console(stderr=True)  # progress, warnings and errors
out = Console(highlight=False)  # the command's answer
INTERRUPTED_EXIT_CODE = 130  # what a shell reports for a command stopped by Ctrl-C (128 + SIGINT)


class CommandError(click.ClickException):
    """A clear, expected failure: printed without a traceback, exit code 1."""

    def show(self, file=None) -> None:
        console.print(f"[bold red]Error:[/] {markup_safe(self.format_message())}")


def friendly_errors(command: Callable) -> Callable:
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            # Ctrl-C outside a batch: the operation under way has released its claim on the way out.
            console.print("[yellow]Interrupted.[/]")
            sys.exit(INTERRUPTED_EXIT_CODE)
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


@contextmanager
def stopping_on_ctrl_c(service: ProvisioningService, summary: Callable[[], None]) -> Iterator[None]:
    """Ctrl-C during the block (a batch of the service's): the first stops new work and waits, bounded, for
    the requests in flight; a second quits at once. Either way `summary` prints what was done so far and
    the command exits 130; the next run adopts or creates what is left (see batch.py)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    stop = service.stop

    def on_ctrl_c(_signal_number, _frame) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.request()
        # os.write: safe in a signal handler, whatever the consoles were printing when it came.
        os.write(2, f"\nStopping: no new work starts; waiting up to {stop.settle_seconds:.0f}s for the requests in "
                    "flight (Ctrl-C again to quit at once).\n".encode())

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    except KeyboardInterrupt:
        stop.request()
    finally:
        # Once stopping, the way out is short: a further Ctrl-C must not cut the summary off.
        signal.signal(signal.SIGINT, signal.SIG_IGN if stop.requested else previous)
    if stop.requested:
        summary()
        _exit_interrupted(service)


def _exit_interrupted(service: ProvisioningService) -> None:
    let_go = service.stop.in_flight
    if let_go:
        console.print(
            f"[yellow]Quit with {len(let_go)} persona(s) in flight:[/] a create may still land, so they stay claimed "
            f"until their lease runs out (at most {service.claim_lease.total_seconds():.0f}s); the next run then adopts "
            "or creates their agents."
        )
    console.print("[yellow]Interrupted.[/] Run the command again to finish.")
    if not let_go:
        sys.exit(INTERRUPTED_EXIT_CODE)
    # Threads still waiting for an answer would hold a normal exit until the answer came.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED_EXIT_CODE)


def progress_bar(label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)


yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
