"""Assets: the personas table (observed source) -> persona_agent (one partition per persona) -> agent_status_report."""


from collections import Counter
from contextlib import closing
from typing import Callable, Iterator, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from ..agent_status import AgentStatus, PersonaStatus, persona_statuses
from ..models import AgentEvent, Persona
from ..provisioning import Outcome, ProvisioningService, ProvisionResult
from ..drift import drifted_hashes
from .agent_listing import LISTING_KEY, orphans_metadata
from .dagster_internals import current_failed_check_partitions
from .materializations import PartitionRecorder, latest_materializations
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


FAILED_AS = {Outcome.INVALID: "is invalid", Outcome.NOT_FOUND: "is not in the database"}
NEXT_STEP = {
    Outcome.INVALID: "Fix the persona's traits, then select this partition and click Materialize "
    "(where automation is on, agent_drift_sensor retries it after the edit).",
    Outcome.NOT_FOUND: "Nothing to do: its partition goes when persona_partitions_sensor sees the delete.",
}
RETRY_NEXT_STEP = "The step retries; if it still fails, select this partition and click Materialize."


def failure_sentence(result: ProvisionResult, name: str) -> str:
    """Why one persona failed, in one sentence (the service's error names the persona already; said once here)."""
    reason = (result.error or "").removeprefix(f"persona {result.persona_id}: ").rstrip(".")
    return f"Persona {result.persona_id} {name!r} {FAILED_AS.get(result.outcome, 'failed')}: {reason}."


def failure_text(failed: list[ProvisionResult], names: dict[int, str]) -> str:
    """The step's failure: one persona's sentence and what to do, or a count and one line per persona."""
    if len(failed) == 1:
        [result] = failed
        return f"{failure_sentence(result, names.get(result.persona_id, ''))} {NEXT_STEP.get(result.outcome, RETRY_NEXT_STEP)}"
    lines = [f"{len(failed)} personas failed (each failed partition's events show its own reason):"]
    return "\n".join(lines + [f"- {failure_sentence(r, names.get(r.persona_id, ''))}" for r in failed])


def failure_observation(result: ProvisionResult, name: str) -> dg.AssetObservation:
    """The failed partition's own record of why, shown in its events beside the run's failure."""
    sentence = failure_sentence(result, name)
    return dg.AssetObservation(
        asset_key=persona_agent.key, partition=persona_key(result.persona_id), description=sentence,
        metadata={"persona": dg.MetadataValue.text(name), "outcome": dg.MetadataValue.text(result.outcome.value),
                  "reason": dg.MetadataValue.text(sentence),
                  "next_step": dg.MetadataValue.text(NEXT_STEP.get(result.outcome, RETRY_NEXT_STEP))},
    )


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
    # A verified no-op on the recorded agent keeps its partition's data version (materializations.py).
    converging = config.mode == "converge" and not config.force
    previous = latest_materializations(context.instance, context.asset_key, keys) if converging else {}
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
                if not result.ok:
                    yield failure_observation(result, names.get(result.persona_id, ""))
                else:
                    key = persona_key(result.persona_id)
                    history = service.store.history(result.persona_id)
                    metadata = partition_metadata(result, config.force, history, names.get(result.persona_id, ""))
                    yield recorder.materialization(key, metadata, same_as=confirmed(previous.get(key), result))
    finally:
        service.client.close()
    failed += [r for r in results if not r.ok]
    # Outcome counts go to the log only: as metadata they would be copied into every partition.
    context.log.info("outcomes: %s", dict(Counter(r.outcome.value for r in results)))
    if failed:
        raise_failures(failed, sum(r.ok for r in results), names)


def confirmed(previous: dg.EventLogRecord | None, result: ProvisionResult) -> dg.EventLogRecord | None:
    """The partition's previous materialization when a verified no-op confirmed the agent it recorded."""
    if previous is None or result.outcome is not Outcome.VERIFIED:
        return None
    recorded = previous.asset_materialization.metadata.get("agent_id") if previous.asset_materialization else None
    return previous if recorded is not None and recorded.value == result.agent_id else None


def raise_failures(failed: list[ProvisionResult], succeeded: int, names: dict[int, str]) -> None:
    metadata = {
        "failed_personas": dg.MetadataValue.json(
            [{"persona_id": r.persona_id, "name": names.get(r.persona_id), "outcome": r.outcome.value,
              "reason": failure_sentence(r, names.get(r.persona_id, ""))} for r in failed]
        ),
        "succeeded": dg.MetadataValue.int(succeeded),
    }
    permanent_only = all(r.outcome in PERMANENT for r in failed)
    raise dg.Failure(
        description=failure_text(failed, names)
        + ("" if permanent_only or len(failed) == 1 else "\nTransient errors: the step retries, redoing only what is still missing."),
        metadata=metadata,
        allow_retries=not permanent_only,
    )


REPORT_ROWS = 500
GONE_CHECK = dg.AssetCheckKey(dg.AssetKey("persona_agent"), "remote_agent_exists")


def gone_agent_keys(instance: dg.DagsterInstance) -> set[str]:
    """Partitions whose latest `remote_agent_exists` evaluation failed and still concerns their current agent
    (no materialization since): one query, as the checks recorded them."""
    return current_failed_check_partitions(instance, GONE_CHECK)


def persona_states(persona_store: PersonaStoreResource, gone: set[str]) -> Iterator[PersonaStatus]:
    """Every persona's status; its agent counts as gone when the last verification found it so."""

    def found(persona: Persona) -> str | None:
        return "at the last verification" if persona_key(persona.id) in gone else None

    return persona_statuses(persona_store.get_store().iter_personas(), agent_template(), found)


@dg.asset(
    deps=[persona_agent, LISTING_KEY],
    group_name=GROUP,
    kinds={"pandas"},
    description="Counts of personas by agent status (active, missing, in_progress, interrupted, invalid, drifted, "
    "gone) and a table of every persona whose agent is not active, with name and reason. status_report_sensor "
    "refreshes it after persona changes and finished runs.",
)
def agent_status_report(context: dg.AssetExecutionContext, persona_store: PersonaStoreResource) -> dg.Output[pd.DataFrame]:
    frame, metadata = status_report(context.instance, persona_store)
    return dg.Output(frame, metadata=metadata)


def status_report(instance: dg.DagsterInstance, persona_store: PersonaStoreResource) -> tuple[pd.DataFrame, dict[str, dg.MetadataValue]]:
    """The report's table and metadata, as of now: the asset's body, also recorded by each check run (checks.py)."""
    counts: Counter[str] = Counter({status.value: 0 for status in AgentStatus})
    rows: list[tuple[int, str, str, str]] = []
    for state in persona_states(persona_store, gone_agent_keys(instance)):
        counts[state.status.value] += 1
        if state.status is not AgentStatus.ACTIVE:
            rows.append((state.persona_id, state.name, state.status.value, state.reason))
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
    metadata |= orphans_metadata(instance)
    return frame, metadata


__all__ = ["personas", "persona_agent", "agent_status_report", "PersonaAgentConfig", "ELEVENLABS_POOL", "GROUP"]
