"""Asset checks on persona_agent: the remote agent exists, and every field the project sets matches the traits.

The checks are partitioned like persona_agent, so each persona holds its own result: a persona whose agent
is gone or drifted stays failing on its partition until it is repaired, whatever runs for other personas.
Dagster 1.13 fills a partitioned check's result (AssetCheckResult) only for single-partition steps, and our
steps take ranges of up to RUN_BATCH_SIZE partitions; so the check emits one AssetCheckEvaluation per
partition itself (recorded per partition, tested in tests/test_dagster_checks.py), then one summary result
for the step (the output Dagster requires; recorded without a partition). A run naming no partitions (the
Checks tab's "Execute all") checks every registered persona, in batches.
"""


from typing import Any, Iterator

import dagster as dg

from .assets import ELEVENLABS_POOL, agent_status_report, persona_agent, status_report
from .dagster_internals import check_target
from .materializations import latest_materializations, run_partition_keys
from ..models import Persona
from ..provisioning import ProvisioningService
from .partitions import key_chunks, personas_partitions
from .resources import ElevenLabsResource, PersonaStoreResource, provisioning_service

EXISTS = "remote_agent_exists"
MATCHES = "agent_matches_traits"
MAX_LISTED = 50
PLAN_HINT = (
    "Repair: select the failing partitions and Materialize (mode converge replaces a gone agent and updates a "
    "drifted one), or run `persona-agents apply`; agent_drift_sensor updates drifted agents automatically where it runs."
)


def persona_ids_for_run(context: dg.AssetCheckExecutionContext) -> list[int]:
    """The personas the current run targets; a run naming no partitions (the Checks tab's "Execute all")
    checks every registered persona."""
    keys = run_partition_keys(context.instance, context.run.tags)
    if keys is None:
        keys = context.instance.get_dynamic_partitions(personas_partitions.name)
    return [int(key) for key in keys if key.isdigit()]


def check_targets(instance: dg.DagsterInstance, ids: list[int]) -> dict[str, Any]:
    """Each partition's latest materialization, which its check result is about: the UI shows a result only
    while no newer materialization exists, so a repair clears the red."""
    latest = latest_materializations(instance, persona_agent.key, [str(pid) for pid in ids])
    return {key: check_target(record) for key, record in latest.items()}


def per_partition(
    name: str, ids: list[int], failures: list[tuple[int, str]], targets: dict[str, Any], hint: str | None = None
) -> list[dg.AssetCheckEvaluation]:
    reasons = dict(failures)
    return [
        dg.AssetCheckEvaluation(
            asset_key=persona_agent.key,
            target_materialization_data=targets.get(str(persona_id)),
            check_name=name,
            partition=str(persona_id),
            passed=persona_id not in reasons,
            description=reasons.get(persona_id, "passes") + (f"\n{hint}" if hint and persona_id in reasons else ""),
            metadata={"reason": dg.MetadataValue.text(reasons.get(persona_id, ""))},
        )
        for persona_id in ids
    ]


def summary(name: str, checked: int, failures: list[tuple[int, str]], hint: str | None = None) -> Iterator[Any]:
    """The step's result for one check: the output Dagster requires of a selected check, and an evaluation
    recorded without a partition. Built by hand: Dagster's AssetCheckResult looks up the asset's partitions
    of the run, which a run naming none (the Checks tab's "Execute all") does not have."""
    listed = failures[:MAX_LISTED]
    text = "\n".join(f"persona {pid}: {reason}" for pid, reason in listed)
    if len(failures) > MAX_LISTED:
        text += f"\n... and {len(failures) - MAX_LISTED} more"
    if failures and hint:
        text += f"\n{hint}"
    metadata = {
        "checked": dg.MetadataValue.int(checked),
        "failed": dg.MetadataValue.int(len(failures)),
        "failures": dg.MetadataValue.json([{"persona_id": pid, "reason": reason} for pid, reason in listed]),
    }
    if hint:
        metadata["next_step"] = dg.MetadataValue.md(hint)
    check_key = dg.AssetCheckKey(persona_agent.key, name)
    yield dg.Output(None, output_name=persona_agent_checks.get_output_name_for_asset_check_key(check_key))
    yield dg.AssetCheckEvaluation(
        asset_key=persona_agent.key,
        check_name=name,
        # Nothing checked is no evidence: it does not pass.
        passed=checked > 0 and not failures,
        description=(f"{len(failures)} of {checked} persona(s) failed:\n{text}" if failures
                     else f"all {checked} persona(s) pass" if checked else "no persona to check"),
        metadata=metadata,
    )


def check_batch(service: ProvisioningService, ids: list[int], concurrency: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(gone, drifted) among `ids`, each with its reason: one GET per agent, concurrent like the provisioning
    itself; the shared budget keeps within the API's limits."""
    missing: list[tuple[int, str]] = []
    drifted: list[tuple[int, str]] = []
    for check in service.check_many(ids, concurrency=concurrency):
        if not check.exists:
            missing.append((check.persona_id, "; ".join(check.problems)))
        elif not check.passed:
            drifted.append((check.persona_id, "; ".join(check.problems)))
    return missing, drifted


def invalid_agent_evaluations(instance: dg.DagsterInstance, personas: list[Persona]) -> list[dg.AssetCheckEvaluation]:
    """A failed agent_matches_traits on the partition of each persona that has an agent but whose traits are
    now invalid, reported by the sensor that sees the edit (no API call): its agent, built from earlier traits,
    is not shown green and fresh."""
    invalid = [(p.id, reason) for p in personas if p.elevenlabs_agent_id and (reason := p.invalid_reason())]
    if not invalid:
        return []
    failures = [(pid, f"persona is invalid: {reason}; its agent was built from earlier, valid traits") for pid, reason in invalid]
    hint = "Fix the persona's traits: the next checks, or a Materialize of this partition, turn it green."
    ids = [pid for pid, _ in invalid]
    return per_partition(MATCHES, ids, failures, check_targets(instance, ids), hint=hint)


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            EXISTS, asset=persona_agent, partitions_def=personas_partitions,
            description="The persona's recorded agent exists on ElevenLabs.",
        ),
        dg.AssetCheckSpec(
            MATCHES,
            asset=persona_agent,
            partitions_def=personas_partitions,
            description="The agent on ElevenLabs matches every field the persona's current traits set. "
            f"{PLAN_HINT}",
        ),
    ],
    pool=ELEVENLABS_POOL,
    can_subset=True,
)
def persona_agent_checks(
    context: dg.AssetCheckExecutionContext, persona_store: PersonaStoreResource, elevenlabs: ElevenLabsResource
):
    ids = persona_ids_for_run(context)
    # Each check can be executed on its own from the UI (can_subset); one GET serves both.
    selected = {key.name for key in context.selected_asset_check_keys}
    service = provisioning_service(persona_store, elevenlabs)
    missing: list[tuple[int, str]] = []
    drifted: list[tuple[int, str]] = []
    try:
        # In batches, each recorded before the next is checked: a check of every persona shows its progress.
        for batch in key_chunks(ids):
            batch_missing, batch_drifted = check_batch(service, batch, elevenlabs.concurrency())
            missing += batch_missing
            drifted += batch_drifted
            gone = {persona_id for persona_id, _ in batch_missing}
            targets = check_targets(context.instance, batch)
            if EXISTS in selected:
                yield from per_partition(EXISTS, batch, batch_missing, targets)
            if MATCHES in selected:
                yield from per_partition(MATCHES, [pid for pid in batch if pid not in gone], batch_drifted, targets, hint=PLAN_HINT)
    finally:
        service.client.close()
    if EXISTS in selected:
        yield from summary(EXISTS, len(ids), missing)
    if MATCHES in selected:
        yield from summary(MATCHES, len(ids) - len(missing), drifted, hint=PLAN_HINT)
    # The report counts gone agents from these results: refreshed here, it needs no run of its own.
    _, report = status_report(context.instance, persona_store)
    yield dg.AssetMaterialization(asset_key=agent_status_report.key, metadata=report)
