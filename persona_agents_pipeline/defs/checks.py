"""Asset checks on persona_agent: the remote agent exists, and its voice and prompt match the persona's traits.

The checks are partitioned like persona_agent, so each persona holds its own result: a persona whose agent
is gone or drifted stays failing on its partition until it is repaired, whatever runs for other personas.
Dagster 1.13 fills a partitioned check's result (AssetCheckResult) only for single-partition steps, and our
steps take ranges of up to RUN_BATCH_SIZE partitions; so the check emits one AssetCheckEvaluation per
partition itself (recorded per partition, tested in tests/test_dagster_checks.py), then one summary result
for the step (the output Dagster requires; recorded without a partition).
"""


from typing import Any

import dagster as dg

from .assets import ELEVENLABS_POOL, persona_agent
from .dagster_internals import check_target
from .materializations import latest_materializations, run_partition_keys
from .partitions import personas_partitions
from .resources import ElevenLabsResource, PersonaStoreResource, provisioning_service

EXISTS = "remote_agent_exists"
MATCHES = "agent_matches_traits"
MAX_LISTED = 50
PLAN_HINT = (
    "Repair: select the failing partitions and Materialize (mode converge replaces a gone agent and updates a "
    "drifted one), or run `persona-agents apply`; agent_drift_sensor updates drifted agents automatically where it runs."
)


def persona_ids_for_run(context: dg.AssetCheckExecutionContext, persona_store: PersonaStoreResource) -> list[int]:
    """The personas the current run targets, or every persona with an agent for a check-only run."""
    keys = run_partition_keys(context.instance, context.run.tags)
    if keys is None:
        return [persona.id for persona in persona_store.get_store().with_agents()]
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


def _result(name: str, checked: int, failures: list[tuple[int, str]], hint: str | None = None) -> dg.AssetCheckResult:
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
    return dg.AssetCheckResult(
        check_name=name,
        # Nothing checked is no evidence: it does not pass.
        passed=checked > 0 and not failures,
        description=(f"{len(failures)} of {checked} persona(s) failed:\n{text}" if failures
                     else f"all {checked} persona(s) pass" if checked else "no persona to check"),
        metadata=metadata,
    )


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
            description="The agent's voice and prompt match what the persona's current traits produce. "
            f"{PLAN_HINT}",
        ),
    ],
    pool=ELEVENLABS_POOL,
    can_subset=True,
)
def persona_agent_checks(
    context: dg.AssetCheckExecutionContext, persona_store: PersonaStoreResource, elevenlabs: ElevenLabsResource
):
    ids = persona_ids_for_run(context, persona_store)
    service = provisioning_service(persona_store, elevenlabs)
    missing: list[tuple[int, str]] = []
    drifted: list[tuple[int, str]] = []
    try:
        # Concurrent like the provisioning itself; the client's limiter keeps within the API's limits.
        for check in service.check_many(ids, concurrency=elevenlabs.concurrency()):
            if not check.exists:
                missing.append((check.persona_id, "; ".join(check.problems)))
            elif not check.passed:
                drifted.append((check.persona_id, "; ".join(check.problems)))
    finally:
        service.client.close()
    gone = {persona_id for persona_id, _ in missing}
    targets = check_targets(context.instance, ids)
    # Each check can be executed on its own from the UI (can_subset); one GET serves both.
    selected = {key.name for key in context.selected_asset_check_keys}
    if EXISTS in selected:
        yield from per_partition(EXISTS, ids, missing, targets)
        yield _result(EXISTS, len(ids), missing)
    if MATCHES in selected:
        yield from per_partition(MATCHES, [pid for pid in ids if pid not in gone], drifted, targets, hint=PLAN_HINT)
        yield _result(MATCHES, len(ids) - len(missing), drifted, hint=PLAN_HINT)
