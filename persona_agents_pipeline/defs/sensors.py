"""Sensors on the persona change log: `persona_partitions_sensor` keeps the partitions in step (always on);
`new_personas_sensor` requests agents for new personas (on where auto-creation is)."""


import os
from typing import Sequence

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ..config import Settings
from ..models import PersonaChange
from ..reconcile import desired_hashes, drifted_hashes
from .assets import persona_agent
from .checks import persona_agent_checks
from .jobs import PROVISION_JOB
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


ENSURE_RUN_CONFIG = {"ops": {persona_agent.op.name: {"config": {"mode": "ensure"}}}}


def range_run_request(
    keys: Sequence[str], run_key: str | None, reason: str, run_config: dict | None = None, *, checks_only: bool = False
) -> dg.RunRequest:
    """One run of provision_persona_agents over the partition range keys[0]..keys[-1] (keys contiguous in
    the partitions' order): the asset without its checks, or (checks_only) the checks alone."""
    return dg.RunRequest(
        run_key=run_key,
        job_name=PROVISION_JOB,
        run_config=run_config or {},
        asset_selection=[] if checks_only else [persona_agent.key],
        # The checks GET every agent again, halving throughput; automated runs leave them to the
        # `verify_agents` schedule. A materialization launched from the UI selects them; they are skipped in
        # its run (the asset has no output) and run right after it (checks_after_materialize.py).
        asset_check_keys=list(persona_agent_checks.check_keys) if checks_only else [],
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


def net_changes(changes: Sequence[PersonaChange]) -> tuple[list[str], list[str]]:
    """Keys inserted and keys deleted by this slice of the log, in order: an insert then a delete cancels out.
    Trait edits ('update') are for drift handling and are passed over."""
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
    return list(inserted), list(deleted)


def registration(
    instance: dg.DagsterInstance, persona_store: PersonaStoreResource, keys: Sequence[str]
) -> tuple[list[str], list[dg.AssetObservation]]:
    """The keys among `keys` that have no partition yet, and the baseline data version of each of those
    (the hash its traits give): whoever registers a partition records its baseline before its first
    materialization, so a later trait edit marks it stale however it was created. Keys another sensor has
    registered already have theirs: the daemon stores every event before it submits a tick's runs, so a
    second copy of 1,000 baselines would hold back the tick's runs. A query per 500 keys, not one per key."""
    if not keys:
        return [], []
    existing = registered(instance, keys)
    new_keys = [key for key in keys if key not in existing]
    return new_keys, traits_observations(new_persona_hashes(persona_store, new_keys)) if new_keys else []


@dg.sensor(
    name="persona_partitions_sensor",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the partitions of persona_agent equal to the personas table, with or without "
    "auto-creation: a persona without an agent shows as a missing partition. Adds and removes partitions and "
    "records each new persona's traits baseline and the new traits of edited ones (a drifted agent shows "
    "stale); requests no runs and makes no API call.",
)
def persona_partitions_sensor(context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource):
    changes = changes_after_cursor(context, persona_store)
    if not changes:
        return dg.SkipReason(f"no persona changes after seq {context.cursor or 0}")
    inserted, deleted = net_changes(changes)
    new_keys, baseline = registration(context.instance, persona_store, inserted)
    # Trait edits that change an agent's config show it stale at once, with or without auto-update.
    edited = sorted({change.persona_id for change in changes if change.change == "update"})
    drifted = drifted_hashes(agent_template(), persona_store.get_store().get_many(edited)) if edited else {}
    gone_keys = sorted(registered(context.instance, deleted), key=int)
    partition_requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = add_requests(new_keys)
    if gone_keys:
        partition_requests.append(personas_partitions.build_delete_request(gone_keys))
    last_seq = changes[-1].seq
    context.log.info("changes %d..%d: %d partition(s) added, %d removed", changes[0].seq, last_seq, len(new_keys), len(gone_keys))
    return dg.SensorResult(
        dynamic_partitions_requests=partition_requests,
        asset_events=baseline + traits_observations(drifted),
        cursor=str(last_seq),
        skip_reason=None if partition_requests or baseline or drifted else f"changes up to seq {last_seq} need no partition change",
    )


@dg.sensor(
    name="new_personas_sensor",
    job_name=PROVISION_JOB,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=automation_status(),
    description="Requests agents for new personas in batched runs (mode ensure). Registers their partitions "
    "itself when persona_partitions_sensor has not yet. Reads only the change log entries after its cursor.",
)
def new_personas_sensor(context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource):
    changes = changes_after_cursor(context, persona_store)
    if not changes:
        return dg.SkipReason(f"no persona changes after seq {context.cursor or 0}")
    inserted, _ = net_changes(changes)
    # Only personas still without an agent (one primary-key query): nothing else is requested.
    wanted = {persona.id for persona in persona_store.get_store().get_many([int(key) for key in inserted]) if not persona.elevenlabs_agent_id}
    keys = [key for key in inserted if int(key) in wanted]
    new_keys, baseline = registration(context.instance, persona_store, keys)
    last_seq = changes[-1].seq
    # Keys are registered in change-log order (by either sensor), so each batch is a contiguous range.
    run_requests = [
        range_run_request(batch, run_key=f"new-personas:{batch[0]}-{batch[-1]}:{last_seq}", reason="new personas",
                          run_config=ENSURE_RUN_CONFIG)
        for batch in batches(keys)
    ]
    context.log.info("changes %d..%d: %d new persona(s) without agent in %d run(s)", changes[0].seq, last_seq, len(keys), len(run_requests))
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=add_requests(new_keys),
        asset_events=baseline,
        cursor=str(last_seq),
        skip_reason=None if run_requests else f"changes up to seq {last_seq}: no new persona without an agent",
    )
