"""Database and persona commands: `db upgrade`, `personas add|edit|delete|import`, `demo-data`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from ..demo_data import demo_personas
from ..display import markup_safe, plain
from ..drift import desired_config_hash
from ..exactly_once import UnsettledCreateError
from ..models import utcnow
from ..persona_validation import TRAIT_FIELDS, InvalidPersonaError
from .common import (
    CommandError,
    confirm_or_refuse,
    console,
    friendly_errors,
    load_settings,
    open_store,
    out,
    provisioning_service,
    yes_option,
)
from .installation import start_new_installation_command, warn_unless_known_installation


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--new-installation", is_flag=True,
              help="This database is a copy (e.g. staging restored from production's backup) that manages agents of "
              "its own: give it a new installation id and forget the agent ids it copied.")
@yes_option
@friendly_errors
def db_upgrade(new_installation: bool, yes: bool) -> None:
    """Create the personas table, or add the agent columns to an existing one; safe to run again."""
    store = open_store(load_settings(), create=True)
    applied = store.upgrade()
    out.print(f"Applied {', '.join(applied)}." if applied else "Schema is up to date; nothing to do.")
    if new_installation:
        start_new_installation_command(store, yes)
    else:
        warn_unless_known_installation(store)


@click.group()
def personas() -> None:
    """Add, import, edit and delete personas."""


def persona_options(required: bool) -> Callable[[Callable], Callable]:
    """--name, the three traits and --description; all required to add, any of them to edit."""

    def decorate(command: Callable) -> Callable:
        command = click.option("--description", default=None)(command)
        for option in reversed(("--name", "--temper-level", "--chattiness", "--emotional-attachment")):
            command = click.option(option, type=None if option == "--name" else float, required=required, default=None)(command)
        return command

    return decorate


@personas.command("add")
@persona_options(required=True)
@friendly_errors
def personas_add(name, temper_level, chattiness, emotional_attachment, description) -> None:
    """Add one persona (traits are numbers in 0..1)."""
    [persona_id] = open_store(load_settings()).add_personas(
        [
            {
                "name": name,
                "temper_level": temper_level,
                "chattiness": chattiness,
                "emotional_attachment": emotional_attachment,
                "description": description,
            }
        ]
    )
    out.print(f"Added persona {persona_id}.")


@personas.command("edit")
@click.argument("persona_id", type=int)
@persona_options(required=False)
@friendly_errors
def personas_edit(persona_id: int, **fields) -> None:
    """Change a persona's name, traits or description (traits are numbers in 0..1); a bad value changes nothing."""
    changes = {field: value for field, value in fields.items() if value is not None}
    if not changes:
        raise CommandError("nothing to change: give at least one of --name, --temper-level, --chattiness, "
                           "--emotional-attachment, --description")
    settings = load_settings()
    persona = open_store(settings).edit_persona(persona_id, changes)
    out.print(f"Persona {persona_id} updated: " + ", ".join(f"{field} = {getattr(persona, field)!r}" for field in changes),
              markup=False)
    if persona.elevenlabs_agent_id and desired_config_hash(settings.agent_template(), persona) != persona.agent_config_hash:
        out.print(f"Its agent {persona.elevenlabs_agent_id} was built from the old traits: `persona-agents apply` updates it "
                  "in place (agent_drift_sensor does so automatically where it runs).", markup=False)


@personas.command("delete")
@click.argument("persona_id", type=int)
@yes_option
@friendly_errors
def personas_delete(persona_id: int, yes: bool) -> None:
    """Delete a persona; an agent it has is deleted from ElevenLabs first. Its agent history is kept."""
    settings = load_settings()
    store = open_store(settings)
    persona = store.require(persona_id)
    agent_id = persona.elevenlabs_agent_id
    if persona.agent_status(utcnow(), None) == "in_progress":
        raise CommandError(f"an agent is being created for persona {persona_id} right now; try again when that has finished")
    unsettled = persona.agent_create_attempted_at is not None
    fate = (f"Its agent {agent_id} is deleted from ElevenLabs first." if agent_id else "It has no agent recorded.")
    if unsettled:
        fate += " A create for it was never settled: the agent it may have made is looked up and deleted too."
    # Built before asking: a database that cannot say which installation it is (a copy) is refused first.
    service = provisioning_service(settings) if agent_id or unsettled else None
    confirm_or_refuse(f"Delete persona {persona_id} ({plain(persona.name)})? {fate}", yes)
    if service is None:
        store.delete_persona(persona_id)
        out.print(f"Deleted persona {persona_id}.", markup=False)
        return
    try:
        deleted = service.delete_persona(persona_id, reason="persona deleted with `persona-agents personas delete`")
    except UnsettledCreateError as exc:
        raise CommandError(str(exc)) from None
    agents = f" and its agent{'s' if len(deleted) > 1 else ''} {', '.join(deleted)}" if deleted else ""
    out.print(f"Deleted persona {persona_id}{agents}.", markup=False)


CSV_REQUIRED = ("name", *TRAIT_FIELDS)
CSV_COLUMNS = (*CSV_REQUIRED, "description")


def _read_csv(csv_file: Path):
    """The CSV as text cells (so `NA`, `None` and `null` stay names), or a clear error for what is no CSV."""
    import io

    import pandas as pd

    raw = csv_file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CommandError(f"{csv_file} is not UTF-8 text (binary, Latin-1 or UTF-16?); save it as UTF-8 CSV") from None
    if "\x00" in text:
        raise CommandError(f"{csv_file} contains NUL bytes; it is not a CSV text file")
    if not text.strip():
        raise CommandError(f"{csv_file} is empty; expected a header line {','.join(CSV_COLUMNS)}")
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, ValueError) as exc:
        raise CommandError(f"{csv_file} is not a readable CSV: {exc}") from None


@personas.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Refuse a file with columns other than the known ones.")
@friendly_errors
def personas_import(csv_file: Path, strict: bool) -> None:
    """Import personas from a CSV with columns name, temper_level, chattiness, emotional_attachment[, description].

    Every row is validated first; one bad row imports nothing. Unknown columns are ignored with a
    warning (refused with --strict), so a misspelt `descripton` does not go unnoticed.
    """
    frame = _read_csv(csv_file)
    missing = set(CSV_REQUIRED) - set(frame.columns)
    if missing:
        raise CommandError(f"{csv_file} lacks column(s) {', '.join(sorted(missing))}")
    unknown = [str(column) for column in frame.columns if column not in CSV_COLUMNS]
    if unknown:
        message = f"{csv_file} has unknown column(s) {', '.join(unknown)}; known: {', '.join(CSV_COLUMNS)}"
        if strict:
            raise CommandError(message + "; nothing was imported")
        console.print(f"[yellow]Warning:[/] {markup_safe(message)}; they are ignored")
        frame = frame[[column for column in frame.columns if column in CSV_COLUMNS]]
    rows = [
        {key: _csv_value(value, numeric=key in TRAIT_FIELDS) for key, value in record.items()}
        for record in frame.to_dict("records")
    ]
    try:
        ids = open_store(load_settings()).add_personas(rows)
    except InvalidPersonaError as exc:
        raise CommandError(f"{csv_file}: {exc}; nothing was imported") from None
    out.print(f"Imported {len(ids)} personas from {markup_safe(csv_file)}.")


def _csv_value(value, *, numeric: bool):
    """Empty cells become None; numeric text in trait columns becomes a number; the rest is left to validation."""
    if value is None or not value.strip():
        return None
    if numeric and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


@click.command("demo-data")
@click.argument("count", type=click.IntRange(min=1))
@click.option("--seed", type=int, default=7, show_default=True)
@friendly_errors
def demo_data(count: int, seed: int) -> None:
    """Seed COUNT varied demo personas."""
    ids = open_store(load_settings()).add_personas(demo_personas(count, seed))
    out.print(f"Added {len(ids)} demo personas (ids {ids[0]}..{ids[-1]}).")
