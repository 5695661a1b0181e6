"""Dagster bookkeeping that must not grow with the number of registered partitions, and registration that
must fit any SQLite. Real DagsterInstance (SQLite storage), real persona store, the HTTP sandbox.

Speed itself is measured in benchmarks/ (section `scale`); these tests pin the behaviour behind it.
"""

from __future__ import annotations

import sqlite3

import dagster as dg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from persona_agents_pipeline.defs.assets import persona_agent
from persona_agents_pipeline.defs.dagster_internals import RANGE_END_TAG, RANGE_START_TAG, range_tags
from persona_agents_pipeline.defs.partitions import personas_partitions
from persona_agents_pipeline.defs.personas_observations import PERSONAS_KEY, traits_observations
from persona_agents_pipeline.defs.resources import PersonaStoreResource
from persona_agents_pipeline.defs.schedules import missing_agent_run_requests
from persona_agents_pipeline.defs.sensors import new_personas_sensor, persona_partitions_sensor
from persona_agents_pipeline.in_process_runs import execute_run_request
from persona_agents_pipeline.store import PersonaStore

from dagster_helpers import apply_partition_requests, point_env_at

PARTITIONS = personas_partitions.name
OLD_SQLITE_VARIABLES = 999  # SQLite before 3.32 (still the system SQLite of some long-lived distributions)


def rows(count: int) -> list[dict]:
    return [{"name": f"Scale {n}", "temper_level": 0.5, "chattiness": (n % 10) / 10, "emotional_attachment": 0.3}
            for n in range(count)]


@pytest.fixture
def env(monkeypatch, sqlite_store, sandbox) -> PersonaStore:
    point_env_at(monkeypatch, sqlite_store.database_url, sandbox.url)
    return sqlite_store


@pytest.fixture
def old_sqlite():
    """Every SQLite connection opened from here on allows only 999 variables per statement, as before 3.32."""

    def lower_limit(dbapi_connection, _record):
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, OLD_SQLITE_VARIABLES)

    event.listen(Engine, "connect", lower_limit)
    yield
    event.remove(Engine, "connect", lower_limit)


def full_partition_reads(monkeypatch) -> list[str]:
    """Records every read of the whole partition list (the call whose cost grows with the partitions)."""
    reads: list[str] = []
    original = dg.DagsterInstance.get_dynamic_partitions

    def counted(self, partitions_def_name):
        reads.append(partitions_def_name)
        return original(self, partitions_def_name)

    monkeypatch.setattr(dg.DagsterInstance, "get_dynamic_partitions", counted)
    return reads


def range_request(keys: list[str]) -> dg.RunRequest:
    return dg.RunRequest(asset_selection=[persona_agent.key], asset_check_keys=[],
                         tags=range_tags(keys[0], keys[-1]))


def test_a_run_reads_the_partition_list_as_often_for_40_personas_as_for_4(env, instance, monkeypatch):
    ids = env.add_personas(rows(44))
    keys = [str(i) for i in ids]
    instance.add_dynamic_partitions(PARTITIONS, keys)
    for event_ in traits_observations({persona_id: f"baseline-{persona_id}" for persona_id in ids}):
        instance.report_runless_asset_event(event_)
    baseline_pointer = instance.fetch_observations(PERSONAS_KEY, limit=1).records[0].storage_id
    reads = full_partition_reads(monkeypatch)

    assert execute_run_request(instance, range_request(keys[:4])).success
    reads_small = len(reads)
    assert execute_run_request(instance, range_request(keys[4:])).success
    reads_large = len(reads) - reads_small

    # Per-partition recording adds no read per persona: the run's reads are Dagster's fixed few.
    assert reads_large == reads_small <= 3
    assert instance.get_materialized_partitions(persona_agent.key) == set(keys)
    for key in (keys[0], keys[-1]):
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=persona_agent.key, asset_partitions=[key]), limit=1
        ).records
        materialization = record.asset_materialization
        assert materialization.metadata["agent_id"].value == env.get(int(key)).elevenlabs_agent_id
        provenance = dg.DataProvenance.from_tags(materialization.tags)
        # The provenance Dagster's stale status reads: the `personas` event the run started from.
        assert provenance.input_storage_ids[PERSONAS_KEY] == baseline_pointer
        assert provenance.code_version and PERSONAS_KEY in provenance.input_data_versions


def sensor_context(instance, cursor: str | None = None) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(instance=instance, cursor=cursor, resources={"persona_store": PersonaStoreResource()})


def test_sensor_ticks_register_and_request_1500_new_personas_on_a_sqlite_with_999_variables(env, instance, old_sqlite):
    ids = env.add_personas(rows(1500))
    keys = [str(i) for i in ids]

    registering = persona_partitions_sensor(sensor_context(instance))
    apply_partition_requests(instance, registering.dynamic_partitions_requests)
    result = new_personas_sensor(sensor_context(instance))

    assert instance.get_dynamic_partitions(PARTITIONS) == keys, "all registered, in the persona log's order"
    assert len(registering.asset_events) == 1500
    covered = [key for request in result.run_requests
               for key in keys[keys.index(request.tags[RANGE_START_TAG]):
                               keys.index(request.tags[RANGE_END_TAG]) + 1]]
    assert covered == keys
    assert isinstance(new_personas_sensor(sensor_context(instance, result.cursor)), dg.SkipReason)


def test_the_backfill_schedule_registers_1500_unknown_personas_on_a_sqlite_with_999_variables(env, instance, old_sqlite):
    ids = env.add_personas(rows(1500))

    requests = missing_agent_run_requests(instance, PersonaStoreResource())

    assert instance.get_dynamic_partitions(PARTITIONS) == [str(i) for i in ids]
    assert len(requests) == 3
