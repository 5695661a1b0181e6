"""Who registers a new persona (its partition and traits baseline) when persona_partitions_sensor and
new_personas_sensor read the same change log: each is stored once and every new persona gets its run, whether
the two sensors' ticks coincide, the partitions sensor's registration is still being stored, or that sensor
is stopped. Against a real DagsterInstance, a real SQLite persona store and the HTTP sandbox."""

from __future__ import annotations

import dagster as dg
import pytest

from persona_agents_pipeline.defs.assets import persona_agent
from persona_agents_pipeline.defs.partitions import personas_partitions
from persona_agents_pipeline.defs.resources import PersonaStoreResource
from persona_agents_pipeline.defs.sensors import (
    TICKS_LEFT_TO_PARTITIONS_SENSOR,
    new_personas_sensor,
    persona_partitions_sensor,
)
from persona_agents_pipeline.sandbox import SandboxServer

from dagster_helpers import (
    apply_asset_events,
    apply_partition_requests,
    baselines_by_key,
    materializations,
    persona_rows,
    point_env_at,
    range_of,
    run_tick,
    run_ticks_together,
)

PARTITIONS = personas_partitions.name
RESOURCES = {"persona_store": PersonaStoreResource()}


@pytest.fixture
def env_sandbox():
    """The sandbox the environment points the Dagster definitions at (see env_store)."""
    with SandboxServer(latency=0.005) as server:
        yield server


@pytest.fixture
def env_store(sqlite_store, monkeypatch, env_sandbox):
    """A SQLite persona store that the Dagster definitions find through the environment, with env_sandbox."""
    point_env_at(monkeypatch, sqlite_store.database_url, env_sandbox.url)
    return sqlite_store


def assert_each_registered_once_with_one_agent(store, instance, keys: list[str]) -> None:
    assert instance.get_dynamic_partitions(PARTITIONS) == keys
    assert baselines_by_key(instance, keys) == {key: 1 for key in keys}, "one baseline per persona"
    assert {key: len(materializations(instance, key)) for key in keys} == {key: 1 for key in keys}, "one run each"
    assert store.ids_without_agents() == []


def test_coinciding_ticks_of_both_sensors_store_each_baseline_once_and_every_new_persona_gets_its_run(
        env_store, instance, env_sandbox):
    earlier = [str(i) for i in env_store.add_personas(persona_rows(10))]
    registered_earlier, _ = run_tick(persona_partitions_sensor, instance, RESOURCES)
    burst = [str(i) for i in env_store.add_personas(persona_rows(20, start=10))]

    # The daemon evaluates both sensors in parallel threads: neither sees the other's registration.
    (partitions, first), first_runs = run_ticks_together(
        [(persona_partitions_sensor, registered_earlier.cursor), (new_personas_sensor, None)], instance, RESOURCES)
    (_, second), second_runs = run_ticks_together(
        [(persona_partitions_sensor, partitions.cursor), (new_personas_sensor, first.cursor)], instance, RESOURCES)

    assert_each_registered_once_with_one_agent(env_store, instance, earlier + burst)
    assert all(run.success for run in first_runs + second_runs)
    # The personas registered before run at once; the burst one tick later, once the partitions sensor's is in.
    assert [range_of(request) for request in first.run_requests] == [(earlier[0], earlier[-1])]
    assert [range_of(request) for request in second.run_requests] == [(burst[0], burst[-1])]
    later, runs = run_tick(new_personas_sensor, instance, RESOURCES, second.cursor)
    assert isinstance(later, dg.SkipReason) and runs == []


def test_while_the_partitions_sensors_baselines_are_being_stored_new_personas_sensor_waits_for_its_partitions(
        env_store, instance):
    keys = [str(i) for i in env_store.add_personas(persona_rows(5))]
    registering = persona_partitions_sensor(dg.build_sensor_context(instance=instance, resources=RESOURCES))
    # The daemon stores a tick's baselines before its partitions: minutes for a large burst.
    apply_asset_events(instance, registering.asset_events)
    cursor = None
    for _ in range(TICKS_LEFT_TO_PARTITIONS_SENSOR + 2):
        waiting = new_personas_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=RESOURCES))
        assert not (waiting.run_requests or waiting.dynamic_partitions_requests or waiting.asset_events)
        cursor = waiting.cursor
    apply_partition_requests(instance, registering.dynamic_partitions_requests)

    requesting = new_personas_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=RESOURCES))

    assert [range_of(request) for request in requesting.run_requests] == [(keys[0], keys[-1])]
    assert not (requesting.dynamic_partitions_requests or requesting.asset_events)
    assert baselines_by_key(instance, keys) == {key: 1 for key in keys}


def test_with_the_partitions_sensor_stopped_new_personas_sensor_registers_them_with_their_baselines(
        env_store, instance, env_sandbox):
    keys = [str(i) for i in env_store.add_personas(persona_rows(12))]
    cursor = None
    for _ in range(TICKS_LEFT_TO_PARTITIONS_SENSOR):  # the ticks persona_partitions_sensor is given
        waiting, runs = run_tick(new_personas_sensor, instance, RESOURCES, cursor)
        assert runs == [] and instance.get_dynamic_partitions(PARTITIONS) == []
        cursor = waiting.cursor

    registering, runs = run_tick(new_personas_sensor, instance, RESOURCES, cursor)

    assert runs and all(run.success for run in runs)
    assert_each_registered_once_with_one_agent(env_store, instance, keys)
    assert instance.get_materialized_partitions(persona_agent.key) == set(keys)
    later, runs = run_tick(new_personas_sensor, instance, RESOURCES, registering.cursor)
    assert isinstance(later, dg.SkipReason) and runs == []
