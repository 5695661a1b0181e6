"""Which installation this database is: `installation show|adopt`, and `db upgrade --new-installation`'s part."""

from __future__ import annotations

import click

from ..client_factory import build_client
from ..config import Settings
from ..database_identity import database_identity
from ..elevenlabs.errors import NotFoundError
from ..installation import (
    InstallationError,
    adopt_installation,
    fresh_installation_id,
    read_installation,
    recorded_agent_ids,
    recover_installation_id,
    start_new_installation,
)
from ..store import PersonaStore
from ..display import markup_safe
from .common import confirm_or_refuse, console, friendly_errors, load_settings, open_store, out, require_api_key

RESTART = "Restart the processes that use this database (Dagster, the application) so they read it."


def start_new_installation_command(store: PersonaStore, yes: bool) -> None:
    """`db upgrade --new-installation`: a copy becomes an installation with agents of its own."""
    try:
        original = store.installation_id()
    except InstallationError:
        original = None  # a copy, or a missing row: what the option is for
    if original is not None:
        confirm_or_refuse(
            f"This database is not a copy: installation {original} was made here. A new id leaves its agents on "
            "ElevenLabs to nobody (they keep the old id's tags) and gives every persona a new agent. Continue?",
            yes,
        )
    with store.engine.begin() as connection:
        renamed = start_new_installation(connection)
    out.print(f"This database is now installation {renamed.new_id}"
              + (f" (it was a copy of installation {renamed.old_id})." if renamed.old_id else "."))
    if renamed.disowned:
        out.print(f"{renamed.disowned} persona(s) no longer record the agents they copied, which stay with installation "
                  f"{renamed.old_id}; `persona-agents create-missing-agents` (or `apply`) gives them agents of their own.")
    out.print(RESTART)


def warn_unless_known_installation(store: PersonaStore) -> None:
    """After `db upgrade`: say at once when the database cannot tell which installation it is (a restored
    copy is usually upgraded first), rather than at the first command that needs it."""
    try:
        store.installation_id()
    except InstallationError as exc:
        console.print(f"[yellow]Warning:[/] {markup_safe(str(exc))}")


@click.group()
def installation() -> None:
    """Which installation (set of agents on the ElevenLabs account) this database is."""


@installation.command("show")
@friendly_errors
def installation_show() -> None:
    """The installation id, the database it was made in, and whether that is this database."""
    store = open_store(load_settings())
    with store.engine.begin() as connection:
        record, current = read_installation(connection), database_identity(connection)
    if record is None:
        out.print("No installation row: run `persona-agents installation adopt` to restore it.")
        return
    made_in = record.made_in.location if record.made_in else "(not recorded)"
    same = record.made_in is not None and record.made_in.key == current.key
    out.print(f"Installation {record.installation_id}\nMade in:  {made_in}\nThis is:  {current.location}\n"
              + ("Status:   this database is the installation." if same else
                 "Status:   a copy or a move; agent work is refused until `persona-agents db upgrade --new-installation` "
                 "(a copy) or `persona-agents installation adopt` (the same installation, moved)."), markup=False)


@installation.command("adopt")
@click.option("--id", "installation_id", default=None,
              help="The id to restore a missing installation row with; by default it is read from the agents' tags.")
@friendly_errors
def installation_adopt(installation_id: str | None) -> None:
    """This database IS the installation (moved to a new server or file): record it as the one it was made in.

    Also restores a deleted installation row, with the id the recorded agents' identity tags carry."""
    settings = load_settings()
    store = open_store(settings)
    with store.engine.begin() as connection:
        missing = read_installation(connection) is None
    if missing and installation_id is None:
        installation_id = _recovered_id(settings, store)
    with store.engine.begin() as connection:
        adopted, released = adopt_installation(connection, installation_id)
    out.print(f"This database is installation {adopted}"
              + (" again (its row was restored)." if missing else ", made here from now on.")
              + (f" Released {released} claim(s) left by commands that failed without it." if released else ""))
    out.print(RESTART)


def _recovered_id(settings: Settings, store: PersonaStore) -> str | None:
    """The id the recorded agents' tags carry, read from ElevenLabs; a fresh one where no persona records
    an agent (there is nothing to keep)."""
    with store.engine.connect() as connection:
        recorded = recorded_agent_ids(connection)
    if not recorded:
        return fresh_installation_id()
    client = build_client(settings, api_key=require_api_key())

    def get_agent(agent_id: str) -> dict:
        try:
            return client.get_agent(agent_id)
        except NotFoundError:
            return {}

    return recover_installation_id(recorded, get_agent)
