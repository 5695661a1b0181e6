"""Helpers for the Dagster tests: the environment the resources read, persona rows, sensor ticks carried
out the way the daemon does, and what the event log recorded for a partition."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import dagster as dg
# Dagster 1.13 has no public way to read a partition's stale status (the UI's "Unsynced"): stale_keys asks
# the resolver behind the UI itself.
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest
from sqlalchemy import text

from persona_agents_pipeline.defs.assets import persona_agent
from persona_agents_pipeline.defs.dagster_internals import RANGE_END_TAG, RANGE_START_TAG
from persona_agents_pipeline.defs.partitions import personas_partitions
from persona_agents_pipeline.defs.personas_observations import PERSONAS_KEY
from persona_agents_pipeline.definitions import defs
from persona_agents_pipeline.in_process_runs import execute_run_request
from persona_agents_pipeline.voice_policy import choose_voice


def point_env_at(monkeypatch, database_url: str, sandbox_url: str, api_key: str = "sandbox-test-key") -> None:
    """The environment the definitions' resources read: this database, this sandbox, generous API limits."""
    for name, value in {"PERSONAS_DATABASE_URL": database_url, "ELEVENLABS_BASE_URL": sandbox_url,
                        "ELEVENLABS_API_KEY": api_key, "ELEVENLABS_RATE_LIMIT": "500",
                        "ELEVENLABS_MAX_CONCURRENT": "8"}.items():
        monkeypatch.setenv(name, value)


def persona_rows(count: int, start: int = 0) -> list[dict]:
    """Varied personas, so their agents get different voices."""
    return [
        {"name": f"Persona {start + n}", "temper_level": (n % 10) / 10, "chattiness": ((n * 3) % 10) / 10,
         "emotional_attachment": ((n * 7) % 10) / 10}
        for n in range(count)
    ]


def apply_partition_requests(instance: dg.DagsterInstance, requests: Iterable) -> None:
    """What the sensor daemon does with a SensorResult's dynamic_partitions_requests."""
    for request in requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def apply_asset_events(instance: dg.DagsterInstance, events: Iterable) -> None:
    """What the sensor daemon does with a SensorResult's asset_events (before it submits the runs)."""
    for event in events:
        instance.report_runless_asset_event(event)


def run_ticks_together(ticks: Iterable[tuple], instance: dg.DagsterInstance, resources: dict):
    """Coinciding ticks of several sensors as the daemon runs them, in parallel threads: every sensor evaluates
    before any result is applied; then each result's asset events and partitions are recorded and its runs
    executed. `ticks`: (sensor, cursor) pairs. Returns the sensors' results and the runs' results."""
    results = [sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))
               for sensor, cursor in ticks]
    applied = [result for result in results if not isinstance(result, dg.SkipReason)]
    for result in applied:
        apply_asset_events(instance, result.asset_events or [])
        apply_partition_requests(instance, result.dynamic_partitions_requests or [])
    return results, [execute_run_request(instance, request) for result in applied for request in result.run_requests]


def run_tick(sensor, instance: dg.DagsterInstance, resources: dict, cursor: str | None = None):
    """One sensor tick as the daemon runs it. Returns the sensor's result and the runs' results."""
    [result], runs = run_ticks_together([(sensor, cursor)], instance, resources)
    return result, runs


def baselines_by_key(instance: dg.DagsterInstance, keys: list[str]) -> dict[str, int]:
    """How many traits observations (baselines, or new traits after edits) each of `keys` has on `personas`."""
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=PERSONAS_KEY, asset_partitions=keys), limit=10 * len(keys)
    ).records
    counts = Counter(record.asset_observation.partition for record in records)
    return {key: counts[key] for key in keys}


def range_of(request: dg.RunRequest) -> tuple[str, str]:
    return request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]


def materializations(instance: dg.DagsterInstance, key: str) -> list[dg.AssetMaterialization]:
    """persona_agent's materializations of one partition, newest first."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=persona_agent.key, asset_partitions=[key]), limit=100
    ).records
    return [record.asset_materialization for record in records]


def latest_metadata(instance: dg.DagsterInstance, key: str) -> dict:
    return {name: value.value for name, value in materializations(instance, key)[0].metadata.items()}


def failed_partitions(instance: dg.DagsterInstance, keys: list[str]) -> set[str]:
    """Which of persona_agent's partitions `keys` the UI shows failed."""
    statuses = instance.get_status_by_partition(persona_agent.key, keys, personas_partitions) or {}
    return {key for key, status in statuses.items() if status == dg.AssetPartitionStatus.FAILED}


def stale_keys(instance, keys: list[str]) -> set[str]:
    """The persona_agent partitions Dagster's own stale-status logic (the one behind the UI) reports stale."""
    resolver = CachingStaleStatusResolver(
        instance, defs.resolve_asset_graph(), loading_context=LoadingContextForTest(instance)
    )
    return {key for key in keys if resolver.get_status(persona_agent.key, key) == StaleStatus.STALE}


def flip_traits(store, persona_id: int) -> None:
    """A plain SQL edit, as the application makes it, moving the persona to the opposite voice corner."""
    hot_and_chatty = choose_voice(store.get(persona_id).spec()).name == "Bella"
    value = 0.1 if hot_and_chatty else 0.9
    with store.engine.begin() as connection:
        connection.execute(
            text("UPDATE personas SET temper_level = :v, chattiness = :v WHERE id = :id"), {"v": value, "id": persona_id}
        )
