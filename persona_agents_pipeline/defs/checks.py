"""Asset checks on persona_agent: the remote agent exists, and its voice and prompt match the persona's traits.

The checks are not partitioned: Dagster 1.13 records a partitioned check result only for single-partition
steps, and persona_agent runs many partitions per step. Instead each check covers the partitions of the
run it executes in (all personas with an agent when run on its own) and lists every failing persona with
its reason in the result's metadata and description.
"""


from concurrent.futures import ThreadPoolExecutor

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from ..provisioning import AgentCheck
from .assets import ELEVENLABS_POOL, persona_agent
from .partitions import personas_partitions
from .resources import ElevenLabsResource, PersonaStoreResource, provisioning_service

EXISTS = "remote_agent_exists"
MATCHES = "agent_matches_traits"
MAX_LISTED = 50
PLAN_HINT = (
    "Run `persona-agents plan` for the full plan (updates, replaces, adoptions, deletes) and "
    "`persona-agents apply` to carry it out; agent_drift_sensor updates drifted agents automatically where it runs."
)


def persona_ids_for_run(context: dg.AssetCheckExecutionContext, persona_store: PersonaStoreResource) -> list[int]:
    """The personas the current run targets, or every persona with an agent for a check-only run."""
    tags = context.run.tags
    keys: list[str]
    if PARTITION_NAME_TAG in tags:
        keys = [tags[PARTITION_NAME_TAG]]
    elif ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
        with dg.partition_loading_context(dynamic_partitions_store=context.instance):
            keys = list(
                personas_partitions.get_partition_keys_in_range(
                    dg.PartitionKeyRange(tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG])
                )
            )
    else:
        return [persona.id for persona in persona_store.get_store().with_agents()]
    return [int(key) for key in keys if key.isdigit()]


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
        passed=not failures,
        description=(f"{len(failures)} of {checked} persona(s) failed:\n{text}" if failures else f"all {checked} persona(s) pass"),
        metadata=metadata,
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(EXISTS, asset=persona_agent, description="The persona's recorded agent exists on ElevenLabs."),
        dg.AssetCheckSpec(
            MATCHES,
            asset=persona_agent,
            description="The agent's voice and prompt match what the persona's current traits produce. "
            f"{PLAN_HINT}",
        ),
    ],
    pool=ELEVENLABS_POOL,
)
def persona_agent_checks(
    context: dg.AssetCheckExecutionContext, persona_store: PersonaStoreResource, elevenlabs: ElevenLabsResource
):
    ids = persona_ids_for_run(context, persona_store)
    service = provisioning_service(persona_store, elevenlabs)

    def one(persona_id: int) -> AgentCheck | str:
        try:
            return service.check_agent(persona_id)
        except LookupError as exc:  # persona deleted since the run started
            return str(exc)

    missing: list[tuple[int, str]] = []
    drifted: list[tuple[int, str]] = []
    try:
        # Concurrent like the provisioning itself; the client's limiter keeps within the API's limits.
        with ThreadPoolExecutor(max_workers=elevenlabs.concurrency(), thread_name_prefix="check") as pool:
            for persona_id, result in zip(ids, pool.map(one, ids)):
                if isinstance(result, str):
                    missing.append((persona_id, result))
                elif not result.exists:
                    missing.append((persona_id, "; ".join(result.problems)))
                elif not result.passed:
                    drifted.append((persona_id, "; ".join(result.problems)))
    finally:
        service.client.close()
    yield _result(EXISTS, len(ids), missing)
    yield _result(MATCHES, len(ids) - len(missing), drifted, hint=PLAN_HINT)
