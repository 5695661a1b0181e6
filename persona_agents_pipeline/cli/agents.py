"""Agent commands: `create-missing-agents`, `list-agent-status`, `recreate-agent`, `test-connection`."""

from __future__ import annotations

import csv
import json
import sys
from typing import Iterator, TextIO

import click

from ..agent_status import RemoteAgents, persona_status
from ..client_factory import Priority, build_client, build_connection_test_client
from ..config import ConfigurationError, Settings
from ..display import csv_cell, markup_safe, plain
from ..models import Persona, utcnow
from ..provisioning import Outcome, ProvisioningService, ProvisionResult
from ..store import PersonaStore
from ..identity import MAX_PERSONA_ID
from ..persona_validation import InvalidPersonaError
from ..voice_policy import choose_voice
from .common import (
    CommandError,
    confirm_or_refuse,
    friendly_errors,
    load_settings,
    open_store,
    out,
    progress_bar,
    provisioning_service,
    require_api_key,
    stopping_on_ctrl_c,
    yes_option,
)


def _provision_with_progress(
    service: ProvisioningService, persona_ids: list[int], concurrency: int, results: list[ProvisionResult]
) -> None:
    """Appends each result to `results` as it arrives, so an interrupted run can say what it did."""

    def arrived(result: ProvisionResult) -> None:
        results.append(result)
        progress.advance(task)

    with progress_bar("Creating agents") as progress:
        task = progress.add_task("create", total=len(persona_ids))
        service.provision_many(persona_ids, concurrency=concurrency, on_result=arrived)


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


@click.command("create-missing-agents")
@yes_option
@click.option("--concurrency", type=click.IntRange(1, 64), default=None, help="Parallel requests (default: the configured API concurrency).")
@click.option("--ids", callback=_persona_ids, default=None, metavar="7,10-20",
              help="Only these personas (ids and ranges); the others are left to whoever handles them.")
@friendly_errors
def create_missing_agents(yes: bool, concurrency: int | None, ids: list[int] | None) -> None:
    """Create agents for every persona that lacks one (or for those among --ids).

    Ctrl-C starts nothing new, lets the requests in flight finish, prints the summary and exits 130;
    a second Ctrl-C quits at once. Running the command again finishes the job without duplicates."""
    settings = load_settings()
    service = provisioning_service(settings)
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
        confirm_or_refuse(f"Create {len(valid)} ElevenLabs agent(s)?", yes)
        _preflight(service)
        with stopping_on_ctrl_c(service, summary=lambda: _print_summary(results, interrupted=len(candidates))):
            persona_ids = [persona.id for persona in valid]
            _provision_with_progress(service, persona_ids, concurrency or settings.worker_threads, results)
    _print_summary(results)
    if any(not result.ok for result in results):
        sys.exit(1)


def _print_summary(results: list[ProvisionResult], interrupted: int | None = None) -> None:
    """`interrupted`: the run was stopped, out of this many personas; the ones without a result were not started."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
    created = counts.get("created", 0) + counts.get("recreated", 0)
    stopped = ""
    if interrupted is not None:
        not_started = counts.get("not_started", 0) + interrupted - len(results)
        stopped = f", {not_started} not started, {counts.get('interrupted', 0)} let go in flight (interrupted)"
    out.print(
        f"Summary: {created} created, {counts.get('adopted', 0)} adopted, {counts.get('present', 0)} skipped "
        f"(already had an agent), {counts.get('invalid', 0)} invalid, "
        f"{counts.get('failed', 0) + counts.get('not_found', 0)} failed{stopped}."
    )
    for result in results:
        if result.outcome not in (Outcome.NOT_STARTED, Outcome.INTERRUPTED) and not result.ok:
            out.print(f"  [red]{result.outcome.value}[/] persona {result.persona_id}: {markup_safe(result.error)}")


def _status_rows(store: PersonaStore, settings: Settings, remote: RemoteAgents | None) -> Iterator[dict]:
    """One row per persona, its status as the Dagster report words it. `voice` is the voice its agent was
    recorded with; `wanted_voice` the one its traits produce now; `voice_differs` marks an agent to update
    (`persona-agents apply`)."""
    voice_names = {voice_id: name for name, voice_id in settings.voice_catalogue.items()}
    template, now = settings.agent_template(), utcnow()
    for persona in store.iter_personas():
        state = persona_status(persona, template, gone_found=remote.gone_found(persona) if remote else None, now=now)
        try:
            wanted = choose_voice(persona.spec()).name
        except InvalidPersonaError:
            wanted = ""
        recorded = voice_names.get(persona.voice_id, persona.voice_id) if persona.voice_id else ""
        yield {
            "id": persona.id,
            "name": persona.name,
            "status": state.status.value,
            "voice": recorded,
            "wanted_voice": wanted,
            "voice_differs": bool(persona.elevenlabs_agent_id and wanted and recorded != wanted),
            "agent_id": persona.elevenlabs_agent_id or "",
            "agent_created_at": persona.agent_created_at.isoformat(timespec="seconds") if persona.agent_created_at else "",
            "reason": state.reason,  # the report's words: why the status is what it is
        }


CHECK_REMOTE_HELP = (
    "Ask ElevenLabs which recorded agents are gone (default). Only ElevenLabs knows: the account's agents are "
    "listed, one request per 100 agents at batch priority in the shared request budget, and a recorded agent "
    "the list lacks is looked up by id. Checked by default so that a deleted agent shows as gone here, as in "
    "the Dagster report. --no-check-remote reads the database alone (no API key, no request); an agent "
    "deleted on ElevenLabs then shows as active."
)


@click.command("list-agent-status")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--check-remote/--no-check-remote", default=True, help=CHECK_REMOTE_HELP)
@friendly_errors
def list_agent_status(fmt: str, check_remote: bool) -> None:
    """Every persona and its agent status (active, drifted, gone, invalid, missing, in_progress, interrupted:
    the words of the Dagster agent_status_report), with the agent's recorded voice. Streams the personas."""
    settings = load_settings()
    store = open_store(settings)
    write = {"csv": _write_csv, "json": _write_json, "table": _write_table}[fmt]
    if not check_remote:
        write(_status_rows(store, settings, None), sys.stdout)
        return
    try:
        api_key = require_api_key()
    except ConfigurationError as exc:
        raise CommandError(f"{exc}\n(or pass --no-check-remote to read the database alone)") from None
    with build_client(settings, api_key=api_key, priority=Priority.BATCH) as client:
        write(_status_rows(store, settings, RemoteAgents(client)), sys.stdout)


def _write_csv(rows: Iterator[dict], stream: TextIO) -> None:
    writer = None
    for row in rows:
        if writer is None:
            writer = csv.DictWriter(stream, fieldnames=list(row))
            writer.writeheader()
        writer.writerow({key: csv_cell(value) for key, value in row.items()})


def _write_json(rows: Iterator[dict], stream: TextIO) -> None:
    stream.write("[")
    for number, row in enumerate(rows):
        stream.write(("," if number else "") + "\n  " + json.dumps(row))
    stream.write("\n]\n")


def _write_table(rows: Iterator[dict], stream: TextIO) -> None:
    header = f"{'ID':>8}  {'NAME':<28}  {'STATUS':<11}  {'VOICE':<17}  {'AGENT ID':<34}  CREATED"
    stream.write(header + "\n")
    counts: dict[str, int] = {}
    differing = 0
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        name = plain(row["name"])[:28]
        voice = f"{row['voice']}*>{row['wanted_voice']}" if row["voice_differs"] else row["voice"]
        differing += row["voice_differs"]
        stream.write(
            f"{row['id']:>8}  {name:<28}  {row['status']:<11}  {voice:<17}  {row['agent_id']:<34}  "
            f"{row['agent_created_at']}{'  ' + plain(row['reason']) if row['reason'] else ''}\n"
        )
    total = sum(counts.values())
    stream.write(f"{total} personas: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + "\n")
    if differing:
        stream.write(f"* {differing} agent(s) have a voice their traits no longer produce (recorded*>wanted): "
                     "`persona-agents apply` updates them.\n")


@click.command("recreate-agent")
@click.argument("persona_id", type=int)
@yes_option
@friendly_errors
def recreate_agent(persona_id: int, yes: bool) -> None:
    """Force a new agent for one persona; the old remote agent is deleted after the new one is saved."""
    service = provisioning_service(load_settings())
    persona = service.store.require(persona_id)
    old = persona.elevenlabs_agent_id
    fate = f"then its current agent {old} is deleted from ElevenLabs" if old else "it has no agent yet"
    confirm_or_refuse(f"Recreate the agent of persona {persona_id} ({plain(persona.name)})? A new agent is created and saved, {fate}.", yes)
    result = service.recreate_agent(persona_id)
    if result.outcome is Outcome.PRESENT:  # another caller took the persona over while ours was made
        raise CommandError(f"persona {persona_id} was not recreated: another caller changed its agent meanwhile; "
                           f"it keeps agent {result.agent_id}. Run the command again to recreate it.")
    replaced = f" (replaced {old}, now deleted)" if old and not result.error else ""
    out.print(f"Persona {persona_id}: agent {result.agent_id}, voice {result.voice_name}{replaced}.")
    if result.error:
        out.print(f"[yellow]Warning:[/] {markup_safe(result.error)}")


@click.command("test-connection")
@friendly_errors
def test_connection() -> None:
    """Check reachability, the key and its permissions, and that every configured voice exists."""
    settings = load_settings()
    # Needs no persona database: only the API is checked.
    with build_connection_test_client(settings, require_api_key()) as client:
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


