"""`new_personas_sensor`: follows the persona change log, keeps the partitions in step and requests new agents."""


import os
from typing import Sequence

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ..config import Settings
from ..models import PersonaChange
from ..reconcile import desired_hashes
from .assets import persona_agent
from .partitions import RUN_BATCH_SIZE, add_requests, persona_key, personas_partitions, registered
from .resources import PersonaStoreResource, agent_template
from .traits import traits_observations

# Bounded work per tick (Dagster gives a sensor evaluation 60 s); the rest waits for the next tick.
MAX_CHANGES_PER_TICK = 20_000
SENSOR_INTERVAL_SECONDS = int(os.environ.get("PERSONA_AGENTS_SENSOR_INTERVAL", "30"))


def automation_status() -> dg.DefaultSensorStatus:
    """Running by default only where auto-creation is on (production, or AUTO_CREATE_ELEVENLABS_AGENTS=true)."""
    try:
        on = Settings.from_env().auto_create
    except Exception:  # a misconfigured environment must not stop the code location from loading
        on = False
    return dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED


def range_run_request(keys: Sequence[str], run_key: str | None, reason: str, run_config: dict | None = None) -> dg.RunRequest:
    """One run over the partition range keys[0]..keys[-1] (keys contiguous in the partitions' order)."""
    return dg.RunRequest(
        run_key=run_key,
        run_config=run_config or {},
        asset_selection=[persona_agent.key],
        # The checks GET every agent again, halving throughput; automated runs leave them to the
        # `verify_agents` schedule, while a materialization launched from the UI still runs them.
        asset_check_keys=[],
        tags={
            ASSET_PARTITION_RANGE_START_TAG: keys[0],
            ASSET_PARTITION_RANGE_END_TAG: keys[-1],
            "persona_agents/reason": reason,
            "persona_agents/batch_size": str(len(keys)),
        },
    )


def changes_after_cursor(context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource) -> list[PersonaChange]:
    """The sensor's next bounded slice of the persona change log: one range scan on the log's primary key."""
    return persona_store.get_store().changes_since(int(context.cursor or 0), limit=MAX_CHANGES_PER_TICK)


def new_persona_hashes(persona_store: PersonaStoreResource, keys: Sequence[str]) -> dict[int, str]:
    return desired_hashes(agent_template(), persona_store.get_store().get_many([int(key) for key in keys]))


def batches(keys: Sequence[str], size: int = RUN_BATCH_SIZE) -> list[list[str]]:
    return [list(keys[start : start + size]) for start in range(0, len(keys), size)]


@dg.sensor(
    name="new_personas_sensor",
    target=[persona_agent],
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=automation_status(),
    description="Adds a partition for each new persona and requests their agents in batched runs; removes "
    "partitions of deleted personas. Reads only the change log entries after its cursor.",
)
def new_personas_sensor(context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource):
    changes = changes_after_cursor(context, persona_store)
    if not changes:
        return dg.SkipReason(f"no persona changes after seq {context.cursor or 0}")

    # Net effect of this slice of the log, in order: an insert followed by a delete cancels out.
    # Trait edits ('update') are for drift handling and are passed over here.
    inserted: dict[str, None] = {}
    deleted: dict[str, None] = {}
    for change in changes:
        key = persona_key(change.persona_id)
        if change.change == "insert":
            inserted[key] = None
            deleted.pop(key, None)
        elif change.change == "delete":
            if key in inserted:
                inserted.pop(key)
            else:
                deleted[key] = None

    # A few queries for the keys in this slice, not one per key: the tick stays cheap at any table size.
    existing_new = registered(context.instance, list(inserted))
    new_keys = [key for key in inserted if key not in existing_new]
    gone_keys = sorted(registered(context.instance, list(deleted)), key=int)
    last_seq = changes[-1].seq

    partition_requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = add_requests(new_keys)
    if gone_keys:
        partition_requests.append(personas_partitions.build_delete_request(gone_keys))
    # New keys are appended to the partitions in this order, so each batch is a contiguous range.
    run_requests = [
        range_run_request(batch, run_key=f"new-personas:{batch[0]}-{batch[-1]}:{last_seq}", reason="new personas")
        for batch in batches(new_keys)
    ]
    # The baseline data version of each new `personas` partition; a later trait edit then marks its agent stale.
    baseline = traits_observations(new_persona_hashes(persona_store, new_keys)) if new_keys else []
    context.log.info(
        "changes %d..%d: %d new partition(s) in %d run(s), %d removed", changes[0].seq, last_seq,
        len(new_keys), len(run_requests), len(gone_keys),
    )
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partition_requests,
        asset_events=baseline,
        cursor=str(last_seq),
        skip_reason=None if (run_requests or partition_requests) else f"changes up to seq {last_seq} need no action",
    )
