"""`persona-agents`: the operations of the original rake tasks, plus set-up helpers."""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import click
import sqlalchemy.exc
from sqlalchemy.engine import make_url
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .config import ConfigurationError, Settings, load_api_key, missing_key_message
from .demo_data import demo_personas
from .display import csv_cell, markup_safe, plain
from .elevenlabs.client import ElevenLabsClient
from .elevenlabs.errors import ElevenLabsError, MalformedResponseError
from .models import Persona, utcnow
from .provisioning import Outcome, ProvisioningService, ProvisionResult
from .reconcile import Action, Plan, apply_plan, build_plan, desired_config_hash
from .store import PersonaNotFoundError, PersonaStore, SchemaError
from .voice_policy import MAX_PERSONA_ID, TRAIT_FIELDS, InvalidPersonaError, choose_voice

console = Console(stderr=True)
out = Console(highlight=False)


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
                f"unexpected response from the ElevenLabs API at {_settings().base_url} ({exc}); "
                "check ELEVENLABS_BASE_URL"
            ) from None
        except (ConfigurationError, ElevenLabsError, InvalidPersonaError, PersonaNotFoundError, SchemaError) as exc:
            raise CommandError(str(exc)) from None
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.DatabaseError) as exc:
            # The driver's own message (e.g. "file is not a database"), without the SQL statement.
            reason = getattr(exc, "orig", None) or exc.args[0]
            raise CommandError(f"cannot use the database (check PERSONAS_DATABASE_URL): {reason}") from None

    return wrapper


def _settings() -> Settings:
    return Settings.from_env()


def _store(settings: Settings, *, create: bool = False) -> PersonaStore:
    """The persona store. Only `db upgrade` creates one: elsewhere a missing SQLite file or table is an
    error that says where we looked, instead of an empty database made in the current directory."""
    url = make_url(settings.database_url)
    where = "PERSONAS_DATABASE_URL" if os.environ.get("PERSONAS_DATABASE_URL") else (
        f"the default for the current directory {Path.cwd()}; PERSONAS_DATABASE_URL or PERSONA_AGENTS_DATA_DIR moves it"
    )
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


def _api_key() -> str:
    api_key = load_api_key()
    if api_key is None:
        raise ConfigurationError(missing_key_message())
    return api_key


def _service(settings: Settings) -> ProvisioningService:
    return ProvisioningService.from_settings(settings, api_key=_api_key(), store=_store(settings))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="persona-agents-pipeline", prog_name="persona-agents")
def main() -> None:
    """Give every persona exactly one ElevenLabs conversational agent, and keep it so."""


# ---- database and personas ----------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@friendly_errors
def db_upgrade() -> None:
    """Create the personas table, or add the agent columns to an existing one; safe to run again."""
    store = _store(_settings(), create=True)
    applied = store.upgrade()
    out.print(f"Applied {', '.join(applied)}." if applied else "Schema is up to date; nothing to do.")


@main.group()
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
    [persona_id] = _store(_settings()).add_personas(
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
    settings = _settings()
    persona = _store(settings).edit_persona(persona_id, changes)
    out.print(f"Persona {persona_id} updated: " + ", ".join(f"{field} = {getattr(persona, field)!r}" for field in changes),
              markup=False)
    if persona.elevenlabs_agent_id and desired_config_hash(settings.agent_template(), persona) != persona.agent_config_hash:
        out.print(f"Its agent {persona.elevenlabs_agent_id} was built from the old traits: `persona-agents apply` updates it "
                  "in place (agent_drift_sensor does so automatically where it runs).", markup=False)


@personas.command("delete")
@click.argument("persona_id", type=int)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def personas_delete(persona_id: int, yes: bool) -> None:
    """Delete a persona; an agent it has is deleted from ElevenLabs first. Its agent history is kept."""
    settings = _settings()
    store = _store(settings)
    persona = store.require(persona_id)
    agent_id = persona.elevenlabs_agent_id
    if persona.agent_status(utcnow(), None) == "in_progress":
        raise CommandError(f"an agent is being created for persona {persona_id} right now; try again when that has finished")
    fate = (f"Its agent {agent_id} is deleted from ElevenLabs first." if agent_id else "It has no agent.")
    _confirm_or_refuse(f"Delete persona {persona_id} ({plain(persona.name)})? {fate}", yes)
    if agent_id:
        service = _service(settings)
        service.delete_remote_agent(persona_id, agent_id, reason="persona deleted with `persona-agents personas delete`")
    store.delete_persona(persona_id)
    out.print(f"Deleted persona {persona_id}" + (f" and its agent {agent_id}." if agent_id else "."), markup=False)


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
        ids = _store(_settings()).add_personas(rows)
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


@main.command("demo-data")
@click.argument("count", type=click.IntRange(min=1))
@click.option("--seed", type=int, default=7, show_default=True)
@friendly_errors
def demo_data(count: int, seed: int) -> None:
    """Seed COUNT varied demo personas."""
    ids = _store(_settings()).add_personas(demo_personas(count, seed))
    out.print(f"Added {len(ids)} demo personas (ids {ids[0]}..{ids[-1]}).")


# ---- agent operations ---------------------------------------------------------------------------


def _confirm_or_refuse(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CommandError("no terminal to confirm on; pass --yes to proceed without confirmation")
    if not click.confirm(question, default=False):
        raise CommandError("cancelled; nothing was changed")


def _progress(label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)


def _provision_with_progress(service: ProvisioningService, persona_ids: list[int], concurrency: int) -> list[ProvisionResult]:
    with _progress("Creating agents") as progress:
        task = progress.add_task("create", total=len(persona_ids))
        return service.provision_many(
            persona_ids, concurrency=concurrency, on_result=lambda _result: progress.advance(task)
        )


def _preflight(service: ProvisioningService) -> None:
    """One cheap authenticated call first, so a wrong key fails once and clearly, before any write."""
    next(iter(service.client.list_agents(page_size=1)), None)


MAX_SELECTED_IDS = 1_000_000  # a typo such as 1-10000000000 must not fill the memory


def _persona_ids(_context, _parameter, value: str | None) -> list[int] | None:
    """`--ids 7,10-20`: persona ids and inclusive ranges, comma-separated."""
    if value is None:
        return None
    ids: list[int] = []
    for part in (part.strip() for part in value.split(",")):
        bounds = part.split("-")
        try:
            low, high = int(bounds[0]), int(bounds[-1])
        except ValueError:
            raise click.BadParameter(f"{part!r} is not an id or a range such as 10-20") from None
        if len(bounds) > 2 or not 0 < low <= high <= MAX_PERSONA_ID:
            raise click.BadParameter(f"{part!r}: ids run from 1 upwards, and a range from low to high")
        if len(ids) + high - low + 1 > MAX_SELECTED_IDS:
            raise click.BadParameter(f"more than {MAX_SELECTED_IDS:,} ids; leave --ids out to take every persona")
        ids.extend(range(low, high + 1))
    return ids


def _without_agents(store: PersonaStore, ids: list[int] | None) -> list[Persona]:
    """Every persona without an agent, or those among `ids` (each of which must exist)."""
    if ids is None:
        return store.without_agents()
    found = store.get_many(ids)
    unknown = sorted(set(ids) - {persona.id for persona in found})
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise CommandError(f"no persona with id {shown}; nothing was done")
    return [persona for persona in found if not persona.elevenlabs_agent_id]


@main.command("create-missing-agents")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=None, help="Parallel requests (default: the configured API concurrency).")
@click.option("--ids", callback=_persona_ids, default=None, metavar="7,10-20",
              help="Only these personas (ids and ranges); the others are left to whoever handles them.")
@friendly_errors
def create_missing_agents(yes: bool, concurrency: int | None, ids: list[int] | None) -> None:
    """Create agents for every persona that lacks one (or for those among --ids)."""
    settings = _settings()
    service = _service(settings)
    candidates = _without_agents(service.store, ids)
    if not candidates:
        out.print(f"Every {'selected ' if ids else ''}persona has an agent; nothing to do.")
        return

    valid: list[Persona] = []
    invalid: list[ProvisionResult] = []
    for persona in candidates:
        try:
            persona.spec()
            valid.append(persona)
        except InvalidPersonaError as exc:
            invalid.append(ProvisionResult(persona.id, Outcome.INVALID, error=str(exc)))

    out.print(f"{len(valid)} persona(s) without an agent:")
    for persona in valid[:20]:
        out.print(f"  {persona.id:>8}  {markup_safe(persona.name)}")
    if len(valid) > 20:
        out.print(f"  ... and {len(valid) - 20} more")
    for result in invalid:
        out.print(f"  [yellow]skipping invalid[/] {markup_safe(result.error)}")

    results: list[ProvisionResult] = list(invalid)
    if valid:
        _confirm_or_refuse(f"Create {len(valid)} ElevenLabs agent(s)?", yes)
        _preflight(service)
        results += _provision_with_progress(
            service, [persona.id for persona in valid], concurrency or settings.worker_threads
        )
    _print_summary(results)
    if any(not result.ok for result in results):
        sys.exit(1)


def _print_summary(results: list[ProvisionResult]) -> None:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
    created = counts.get("created", 0) + counts.get("recreated", 0)
    out.print(
        f"Summary: {created} created, {counts.get('adopted', 0)} adopted, {counts.get('present', 0)} skipped "
        f"(already had an agent), {counts.get('invalid', 0)} invalid, "
        f"{counts.get('failed', 0) + counts.get('not_found', 0)} failed."
    )
    for result in results:
        if not result.ok:
            out.print(f"  [red]{result.outcome.value}[/] persona {result.persona_id}: {markup_safe(result.error)}")


def _status_rows(store: PersonaStore, voice_catalogue: dict[str, str]) -> Iterator[dict]:
    """One row per persona. `voice` is the voice its agent was recorded with; `wanted_voice` the one its
    traits produce now; `voice_differs` marks an agent to update (`persona-agents apply`)."""
    now = utcnow()
    voice_names = {voice_id: name for name, voice_id in voice_catalogue.items()}
    for persona in store.iter_personas():
        try:
            wanted, problem = choose_voice(persona.spec()).name, None
        except InvalidPersonaError as exc:
            wanted, problem = "", f"{exc.field} {exc.reason}"
        recorded = voice_names.get(persona.voice_id, persona.voice_id) if persona.voice_id else ""
        yield {
            "id": persona.id,
            "name": persona.name,
            "status": persona.agent_status(now, problem),
            "voice": recorded,
            "wanted_voice": wanted,
            "voice_differs": bool(persona.elevenlabs_agent_id and wanted and recorded != wanted),
            "agent_id": persona.elevenlabs_agent_id or "",
            "agent_created_at": persona.agent_created_at.isoformat(timespec="seconds") if persona.agent_created_at else "",
            "problem": problem or "",
        }


@main.command("list-agent-status")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@friendly_errors
def list_agent_status(fmt: str) -> None:
    """Every persona and its agent status, with the agent's recorded voice (streams; flat memory at any size)."""
    settings = _settings()
    rows = _status_rows(_store(settings), settings.voice_catalogue)
    counts: dict[str, int] = {}
    stream = sys.stdout
    if fmt == "csv":
        writer = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(stream, fieldnames=list(row))
                writer.writeheader()
            writer.writerow({key: csv_cell(value) for key, value in row.items()})
        return
    if fmt == "json":
        stream.write("[")
        for number, row in enumerate(rows):
            stream.write(("," if number else "") + "\n  " + json.dumps(row))
        stream.write("\n]\n")
        return
    header = f"{'ID':>8}  {'NAME':<28}  {'STATUS':<11}  {'VOICE':<17}  {'AGENT ID':<34}  CREATED"
    stream.write(header + "\n")
    differing = 0
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        name = plain(row["name"])[:28]
        voice = f"{row['voice']}*>{row['wanted_voice']}" if row["voice_differs"] else row["voice"]
        differing += row["voice_differs"]
        stream.write(
            f"{row['id']:>8}  {name:<28}  {row['status']:<11}  {voice:<17}  {row['agent_id']:<34}  "
            f"{row['agent_created_at']}{'  ' + plain(row['problem']) if row['problem'] else ''}\n"
        )
    total = sum(counts.values())
    stream.write(f"{total} personas: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + "\n")
    if differing:
        stream.write(f"* {differing} agent(s) have a voice their traits no longer produce (recorded*>wanted): "
                     "`persona-agents apply` updates them.\n")


@main.command("recreate-agent")
@click.argument("persona_id", type=int)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def recreate_agent(persona_id: int, yes: bool) -> None:
    """Force a new agent for one persona; the old remote agent is deleted after the new one is saved."""
    service = _service(_settings())
    persona = service.store.require(persona_id)
    old = persona.elevenlabs_agent_id
    fate = f"then its current agent {old} is deleted from ElevenLabs" if old else "it has no agent yet"
    _confirm_or_refuse(f"Recreate the agent of persona {persona_id} ({plain(persona.name)})? A new agent is created and saved, {fate}.", yes)
    result = service.recreate_agent(persona_id)
    replaced = f" (replaced {old}, now deleted)" if old and not result.error else ""
    out.print(f"Persona {persona_id}: agent {result.agent_id}, voice {result.voice_name}{replaced}.")
    if result.error:
        out.print(f"[yellow]Warning:[/] {markup_safe(result.error)}")


@main.command("test-connection")
@friendly_errors
def test_connection() -> None:
    """Check reachability, the key and its permissions, and that every configured voice exists."""
    settings = _settings()
    # Needs no persona database: only the API is checked.
    with ElevenLabsClient(_api_key(), settings.base_url) as client:
        report = client.test_connection(settings.voice_catalogue)
    mark = {True: "[green]ok[/]", False: "[red]failed[/]", None: "[yellow]not checked[/]"}
    out.print(f"ElevenLabs API at {report.base_url}")
    out.print(f"  reachable:        {mark[report.reachable]}")
    out.print(f"  key accepted:     {mark[report.authenticated]}")
    out.print(f"  can read agents:  {mark[report.can_read_agents]}")
    for name, voice_id in report.voices_found.items():
        out.print(f"  voice {name:<10} {voice_id}  [green]found[/]")
    for name, voice_id in report.voices_missing.items():
        out.print(f"  voice {name:<10} {voice_id}  [red]missing[/]")
    for warning in report.warnings:
        out.print(f"[yellow]Warning:[/] {markup_safe(warning.problem)}\n  [bold]What to do:[/] {warning.what_to_do}")
    for problem in report.problems:
        out.print(f"[red]Problem:[/] {markup_safe(problem.problem)}\n  [bold]What to do:[/] {problem.what_to_do}")
    if not report.ok:
        sys.exit(1)
    out.print("[green]Connection OK.[/]")


@main.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback by default).")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--api-key", "api_keys", multiple=True, default=["sandbox-test-key"], show_default=True)
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Keep agents in this file across restarts.")
@click.option("--latency", type=float, default=0.0, show_default=True, help="Seconds added to every request.")
@click.option("--rate-limit", type=float, default=None, help="Requests per second before 429.")
@click.option("--max-concurrent", type=int, default=None, help="Concurrent requests before 429.")
@click.option("--retry-after/--no-retry-after", default=True, show_default=True, help="Send Retry-After on 429.")
@click.option("--error-rate", type=float, default=0.0, show_default=True, help="Fraction of requests answered 5xx.")
@click.option("--drop-after-create-rate", type=float, default=0.0, show_default=True, help="Fraction of creates whose response is dropped after the agent exists.")
@click.option("--drop-delete-response-rate", type=float, default=0.0, show_default=True, help="Fraction of DELETEs carried out but never answered.")
@click.option("--search-fault", type=click.Choice(["non_json", "400", "401", "429", "timeout"]), default=None, help="How adoption searches (agent lists with `search`) fail.")
@click.option("--search-fault-rate", type=float, default=1.0, show_default=True, help="Fraction of searches that fail so.")
@click.option("--seed", type=int, default=None)
def sandbox(**options) -> None:
    """Run the local ElevenLabs sandbox (agents and voices API) until interrupted."""
    from .sandbox.server import run_sandbox

    run_sandbox(on_ready=lambda url: out.print(f"ElevenLabs sandbox listening on {url} (Ctrl-C stops it)"), **options)


@main.command("demo")
@click.option("--personas", "count", type=click.IntRange(min=1), default=25, show_default=True)
@friendly_errors
def demo(count: int) -> None:
    """The main job on the embedded default: local sandbox, SQLite store, demo personas, the Dagster pipeline."""
    from .demo import dagster_home, run_demo

    counts = run_demo(count, out.print)
    out.print("Status: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
    click.get_current_context().invoke(list_agent_status, fmt="table")
    out.print("\nSee it in the Dagster UI: paste these two lines, then open http://127.0.0.1:3000")
    # soft_wrap: a long path must stay one line when copied, whatever the terminal's width.
    out.print(f"export DAGSTER_HOME={dagster_home()}\n.venv/bin/dagster dev", soft_wrap=True, highlight=False)


# ---- reconcile: plan, apply, history ------------------------------------------------------------


def _print_plan(plan: Plan) -> None:
    if not plan.changes:
        out.print(f"No changes: {plan.in_sync} persona(s) in sync.")
        return
    counts = plan.counts()
    summary = ", ".join(f"{counts[action.value]} {action.value}" for action in Action if counts[action.value])
    out.print(f"Plan: {summary}; {plan.in_sync} in sync.")
    for action in Action:
        changes = plan.of(action)
        if changes:
            out.print(f"\n{action.value} ({len(changes)}):")
        for change in changes:
            # markup=False: reasons quote persona data, which may contain rich markup brackets.
            line = f"  persona {change.persona_id:>8}  {change.agent_id or '-':<34}  {plain(change.reason)}"
            out.print(line, markup=False, soft_wrap=True)


@main.command("plan")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@friendly_errors
def plan_command(fmt: str) -> None:
    """Show what `apply` would do: create, update, replace, adopt and delete agents (changes nothing)."""
    plan = build_plan(_service(_settings()))
    if fmt == "json":
        sys.stdout.write(json.dumps(plan.as_json(), indent=2) + "\n")
    else:
        _print_plan(plan)


@main.command("apply")
@click.option("--yes", "-y", is_flag=True, help="Delete orphaned and duplicate agents without asking.")
@friendly_errors
def apply_command(yes: bool) -> None:
    """Carry out the plan. Updates keep the agent id; deletes (only of this project's agents) need confirmation."""
    settings = _settings()
    service = _service(settings)
    plan = build_plan(service)
    _print_plan(plan)
    if not plan.actionable:
        return
    deletes = plan.of(Action.DELETE)
    if deletes:
        _confirm_or_refuse(f"Apply this plan, deleting {len(deletes)} agent(s)?", yes)
    with _progress("Applying") as progress:
        task = progress.add_task("apply", total=len(plan.actionable))
        results = apply_plan(
            service, plan, concurrency=settings.worker_threads, on_result=lambda _result: progress.advance(task)
        )
    done = Counter(result.change.action.value for result in results if result.ok)
    failed = [result for result in results if not result.ok]
    out.print("Applied: " + ", ".join(f"{count} {action}" for action, count in sorted(done.items())) + f"; {len(failed)} failed.")
    for result in results:
        if result.change.action is Action.DELETE or not result.ok:
            status = "ok" if result.ok else "failed"
            line = f"  {status} {result.change.action.value} persona {result.change.persona_id}: {plain(result.detail)}"
            out.print(line, markup=False, soft_wrap=True)
    if failed:
        sys.exit(1)


@main.command("history")
@click.argument("persona_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@friendly_errors
def history_command(persona_id: int, fmt: str) -> None:
    """Every change to the persona's agent (created, updated, replaced, adopted, deleted), with time and reason."""
    store = _store(_settings())
    events = store.history(persona_id)
    # Deleted personas keep their history, so only a persona with neither is unknown.
    if not events and store.get(persona_id) is None:
        raise PersonaNotFoundError(persona_id)
    rows = [
        {"at": event.at.isoformat(timespec="seconds") + "Z", "action": event.action, "agent_id": event.agent_id, "reason": event.reason}
        for event in events
    ]
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif not rows:
        out.print(f"No agent changes recorded for persona {persona_id}.")
    else:
        for row in rows:
            line = f"{row['at']}  {row['action']:<9}  {row['agent_id'] or '-':<34}  {plain(row['reason'])}"
            out.print(line, markup=False, soft_wrap=True)


if __name__ == "__main__":
    main()
