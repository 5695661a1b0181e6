"""Assets: the personas table (observed source) -> persona_agent (one partition per persona) -> agent_status_report."""


from collections import Counter
from contextlib import closing
from typing import Callable, Iterator, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from ..models import AGENT_STATUSES, AgentEvent, Persona, utcnow
from ..provisioning import Outcome, ProvisioningService, ProvisionResult
from ..drift import desired_config_hash, drifted_hashes
from .agent_listing import LISTING_KEY, orphans_metadata
from .materializations import PartitionRecorder, settled_partitions
from .partitions import RUN_BATCH_SIZE, persona_key, personas_partitions
from .resources import ElevenLabsResource, PersonaStoreResource, agent_template, dashboard_url, provisioning_service

GROUP = "persona_agents"
ELEVENLABS_POOL = "elevenlabs_api"

# Transient API errors (5xx, timeouts, 429 after the client's own Retry-After waits) retry the step;
# the retried step redoes only what is still missing, because provisioning is idempotent.
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=3, delay=20, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# Failures that another attempt cannot fix.
PERMANENT = {Outcome.INVALID, Outcome.NOT_FOUND}


@dg.observable_source_asset(
    name="personas",
    partitions_def=personas_partitions,
    group_name=GROUP,
    description="The application's `personas` table, one partition per persona. A partition's data version is the "
    "hash of the agent config its traits produce, so a trait edit marks its `persona_agent` partition stale. "
    "`agent_drift_sensor` observes edited personas; observing by hand is a full pass that reports every "
    "persona whose agent was built from other traits.",
)
def personas(persona_store: PersonaStoreResource) -> dg.DataVersionsByPartition:
    drifted = drifted_hashes(agent_template(), persona_store.get_store().iter_personas())
    return dg.DataVersionsByPartition({persona_key(persona_id): wanted for persona_id, wanted in drifted.items()})


class PersonaAgentConfig(dg.Config):
    force: bool = Field(
        default=False,
        description="Recreate the agent even if the persona has one (the old agent is deleted after the new one is saved).",
    )
    mode: Literal["converge", "ensure", "update"] = Field(
        default="converge",
        description="converge (what a Materialize click does): create a missing agent; look up a recorded one (one "
        "GET) and replace it when gone, update it when it drifted, and report 'verified' only when it is current. "
        "ensure (new-persona sensor, backfill schedule): create missing agents, trust recorded ones (no lookup). "
        "update (agent_drift_sensor): bring recorded agents to their traits' config in place, without a lookup.",
    )


HISTORY_SHOWN = 10


def history_table(events: list[AgentEvent]) -> str:
    """The persona's most recent agent events, newest first, as a markdown table."""
    rows = [
        f"| {event.at:%Y-%m-%d %H:%M:%S} | {event.action} | {event.agent_id or ''} | {(event.reason or '').replace('|', '/')} |"
        for event in reversed(events[-HISTORY_SHOWN:])
    ]
    return "| at (UTC) | action | agent | reason |\n|---|---|---|---|\n" + "\n".join(rows)


def partition_metadata(
    result: ProvisionResult, force: bool, history: list[AgentEvent], persona_name: str
) -> dict[str, dg.MetadataValue]:
    agent_id = result.agent_id or ""
    notes = {
        Outcome.CREATED: "agent created",
        Outcome.ADOPTED: "an existing agent carrying this persona's identity was adopted",
        Outcome.PRESENT: "no-op: the persona already has an agent (not looked up in this mode); materialize with the "
        "default mode converge to verify it, or config force: true to recreate it",
        Outcome.VERIFIED: "no-op: the agent exists on ElevenLabs and matches the persona's traits",
        Outcome.RECREATED: "agent recreated (force); the previous agent was deleted",
        Outcome.UPDATED: "agent updated in place to the persona's current traits (same agent id)",
        Outcome.REPLACED: "the recorded agent was gone from ElevenLabs; a new one replaces it",
    }
    note = notes.get(result.outcome, f"agent {result.outcome.value}")
    return {
        "persona": dg.MetadataValue.text(persona_name),
        "outcome": dg.MetadataValue.text(result.outcome.value),
        "note": dg.MetadataValue.text(note),
        "agent_id": dg.MetadataValue.text(agent_id),
        "voice_name": dg.MetadataValue.text(result.voice_name or ""),
        "voice_id": dg.MetadataValue.text(result.voice_id or ""),
        "voice_settings": dg.MetadataValue.json(result.voice_settings or {}),
        "dashboard": dg.MetadataValue.url(dashboard_url(agent_id)),
        "force": dg.MetadataValue.bool(force),
        "history": dg.MetadataValue.md(history_table(history)),
        **({"differed_on_elevenlabs": dg.MetadataValue.text(", ".join(result.differences))} if result.differences else {}),
    }


def _failure_text(failed: list[ProvisionResult], names: dict[int, str]) -> str:
    lines = [f"{len(failed)} persona(s) failed:"]
    lines += [f"- persona {r.persona_id} {names.get(r.persona_id, '')!r} ({r.outcome.value}): {r.error}" for r in failed]
    return "\n".join(lines)


def persona_ids(keys: list[str]) -> tuple[list[int], list[ProvisionResult]]:
    """The persona ids of the partition keys, and an INVALID result for each key that is not one."""
    ids: list[int] = []
    invalid: list[ProvisionResult] = []
    for key in keys:
        try:
            ids.append(int(key))
        except ValueError:
            invalid.append(ProvisionResult(-1, Outcome.INVALID, error=f"partition key {key!r} is not a persona id"))
    return ids, invalid


def mode_operation(service: ProvisioningService, config: PersonaAgentConfig) -> Callable[[int], ProvisionResult] | None:
    """What provisions one persona in the configured mode; None is the service's ensure_agent (with force: recreate)."""
    if config.force:
        return None
    return {"converge": service.converge_agent, "ensure": None, "update": service.update_agent}[config.mode]


@dg.asset(
    partitions_def=personas_partitions,
    deps=[personas],
    group_name=GROUP,
    kinds={"elevenlabs"},
    pool=ELEVENLABS_POOL,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=RUN_BATCH_SIZE),
    retry_policy=TRANSIENT_RETRY,
    # Materializations are recorded per partition (each with its own metadata), so a batch in which some
    # personas fail still shows the others as materialized and only the failed ones as failed. The
    # asset yields them itself, so it has no output.
    output_required=False,
    description="Exactly one ElevenLabs conversational agent per persona (partition key = persona id).",
)
def persona_agent(
    context: dg.AssetExecutionContext,
    config: PersonaAgentConfig,
    persona_store: PersonaStoreResource,
    elevenlabs: ElevenLabsResource,
):
    keys = list(context.partition_keys)
    ids, failed = persona_ids(keys)
    if config.force and config.mode == "update":
        raise dg.Failure(description="force (recreate) and mode update (patch in place) exclude each other", allow_retries=False)
    service = provisioning_service(persona_store, elevenlabs)
    names = {persona.id: persona.name for persona in service.store.get_many(ids)}
    context.log.info("provisioning %d persona(s), mode=%s, force=%s", len(ids), config.mode, config.force)
    recorder = PartitionRecorder.at_step_start(context)
    # A verified no-op on a green, fresh partition is observed, not materialized (materializations.py).
    converging = config.mode == "converge" and not config.force
    settled = settled_partitions(context.instance, context.asset_key, personas.key, keys) if converging else set()
    results: list[ProvisionResult] = []
    provisioning = service.iter_provision(
        ids, concurrency=elevenlabs.concurrency(), force=config.force, operation=mode_operation(service, config)
    )
    # Each persona is recorded as its result arrives: Dagster stores it while the API works on the next
    # ones, at a cost that depends on the run's size only (see materializations.py). On any exit the
    # provisions under way finish (closing) before the client closes.
    try:
        with closing(provisioning):
            for result in provisioning:
                results.append(result)
                if result.ok:
                    key = persona_key(result.persona_id)
                    history = service.store.history(result.persona_id)
                    metadata = partition_metadata(result, config.force, history, names.get(result.persona_id, ""))
                    no_op = result.outcome is Outcome.VERIFIED and key in settled
                    yield (recorder.observation if no_op else recorder.materialization)(key, metadata)
    finally:
        service.client.close()
    failed += [r for r in results if not r.ok]
    # Outcome counts go to the log only: as metadata they would be copied into every partition.
    context.log.info("outcomes: %s", dict(Counter(r.outcome.value for r in results)))
    if failed:
        raise_failures(failed, sum(r.ok for r in results), names)


def raise_failures(failed: list[ProvisionResult], succeeded: int, names: dict[int, str]) -> None:
    metadata = {
        "failed_personas": dg.MetadataValue.json(
            [{"persona_id": r.persona_id, "name": names.get(r.persona_id), "outcome": r.outcome.value, "reason": r.error} for r in failed]
        ),
        "succeeded": dg.MetadataValue.int(succeeded),
    }
    permanent_only = all(r.outcome in PERMANENT for r in failed)
    raise dg.Failure(
        description=_failure_text(failed, names)
        + ("" if permanent_only else "\nTransient errors: the step retries, redoing only what is still missing."),
        metadata=metadata,
        allow_retries=not permanent_only,
    )


REPORT_ROWS = 500
GONE_CHECK = dg.AssetCheckKey(dg.AssetKey("persona_agent"), "remote_agent_exists")


def gone_agent_keys(instance: dg.DagsterInstance) -> set[str]:
    """Partitions whose latest `remote_agent_exists` evaluation failed and still concerns their current agent
    (no materialization since): one query, as the checks recorded them."""
    return {
        info.partition_key
        for info in instance.event_log_storage.get_asset_check_partition_info([GONE_CHECK])
        if info.partition_key and info.latest_execution_status.value == "FAILED" and info.is_current
    }


def persona_states(persona_store: PersonaStoreResource, gone: set[str]) -> Iterator[tuple[Persona, str, str]]:
    """(persona, status, reason) for every persona: the stored status, refined for active agents into gone
    (found so by the last verification) and drifted (built from other traits than the persona has now)."""
    now, template = utcnow(), agent_template()
    for persona in persona_store.get_store().iter_personas():
        invalid = persona.invalid_reason()
        status = persona.agent_status(now, invalid)
        reason = {"invalid": invalid or "", "missing": "no agent yet", "in_progress": "being created",
                  "interrupted": "a create may have been sent; the next run adopts or creates"}.get(status, "")
        if status == "active" and persona_key(persona.id) in gone:
            status, reason = "gone", f"agent {persona.elevenlabs_agent_id} not found on ElevenLabs at the last verification"
        elif status == "active" and invalid:
            status, reason = "invalid", f"{invalid} (its agent was built from earlier, valid traits)"
        elif status == "active" and desired_config_hash(template, persona) != persona.agent_config_hash:
            status, reason = "drifted", "agent built from other traits than the persona has now"
        yield persona, status, reason


@dg.asset(
    deps=[persona_agent, LISTING_KEY],
    group_name=GROUP,
    kinds={"pandas"},
    description="Counts of personas by agent status (active, missing, in_progress, interrupted, invalid, drifted, "
    "gone) and a table of every persona whose agent is not active, with name and reason. status_report_sensor "
    "refreshes it after persona changes and finished runs.",
)
def agent_status_report(context: dg.AssetExecutionContext, persona_store: PersonaStoreResource) -> dg.Output[pd.DataFrame]:
    counts: Counter[str] = Counter({status: 0 for status in (*AGENT_STATUSES, "drifted", "gone")})
    rows: list[tuple[int, str, str, str]] = []
    for persona, status, reason in persona_states(persona_store, gone_agent_keys(context.instance)):
        counts[status] += 1
        if status != "active":
            rows.append((persona.id, persona.name, status, reason))
    frame = pd.DataFrame({"status": list(counts), "personas": [counts[s] for s in counts]})
    total = int(frame["personas"].sum())
    table = "| status | personas |\n|---|---:|\n" + "\n".join(f"| {s} | {n} |" for s, n in counts.items())
    table += f"\n| **total** | **{total}** |"
    cell = lambda text: str(text).replace("|", "/").replace("\n", " ")  # noqa: E731
    attention = "| persona | name | status | reason |\n|---:|---|---|---|\n" + "\n".join(
        f"| {pid} | {cell(name)} | {status} | {cell(reason)} |" for pid, name, status, reason in rows[:REPORT_ROWS]
    )
    if len(rows) > REPORT_ROWS:
        attention += f"\n\n... and {len(rows) - REPORT_ROWS} more (`persona-agents list-agent-status` lists all)"
    metadata = {f"count_{status}": dg.MetadataValue.int(n) for status, n in counts.items()}
    metadata["total"] = dg.MetadataValue.int(total)
    metadata["status_table"] = dg.MetadataValue.md(table)
    metadata["needs_attention"] = dg.MetadataValue.md(attention if rows else "every persona has a current agent")
    metadata |= orphans_metadata(context.instance)
    return dg.Output(frame, metadata=metadata)


__all__ = ["personas", "persona_agent", "agent_status_report", "PersonaAgentConfig", "ELEVENLABS_POOL", "GROUP"]
