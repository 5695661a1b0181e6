"""A Dagster instance re-pointed at another personas database (the SQLite demo, then the real one): the
change-log sensors must not resume at the old database's position in the new database's log. Against a real
DagsterInstance and real SQLite persona stores; no sensor here makes an API call."""

from __future__ import annotations

import dagster as dg
import pytest
from sqlalchemy import text

from persona_agents_pipeline.defs.change_cursor import own_position
from persona_agents_pipeline.defs.partitions import personas_partitions
from persona_agents_pipeline.defs.resources import PersonaStoreResource
from persona_agents_pipeline.defs.sensors import agent_drift_sensor, new_personas_sensor, persona_partitions_sensor
from persona_agents_pipeline.defs.status_report import status_report_sensor

from conftest import upgraded_store
from dagster_helpers import apply_asset_events, apply_partition_requests, materializations, persona_rows, range_of

RESOURCES = {"persona_store": PersonaStoreResource()}


def tick(sensor, instance, cursor):
    """One evaluation, its partitions and asset events recorded as the daemon does (no run is executed)."""
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=RESOURCES))
    if isinstance(result, dg.SensorResult):
        apply_asset_events(instance, result.asset_events or [])
        apply_partition_requests(instance, result.dynamic_partitions_requests or [])
    return result


def store_with(url: str, added: int, deleted_first: int):
    """A database whose personas are ids deleted_first+1..added, its change log `added + deleted_first` long."""
    with upgraded_store(url) as store:
        ids = store.add_personas(persona_rows(added))
        for persona_id in ids[:deleted_first]:
            store.delete_persona(persona_id)
    return PersonaStoreResource(database_url=url).get_store()


# (A's personas added, deleted) then B's: B's change log ends after A's position, or before it; B is another
# SQLite file or, as when the demo gives way to the real database, PostgreSQL.
@pytest.mark.parametrize("a, b, b_on", [
    ((20, 10), (60, 0), "sqlite"), ((60, 20), (50, 0), "sqlite"),
    pytest.param((60, 20), (50, 0), "postgresql", marks=pytest.mark.postgres),
], ids=["longer-log", "shorter-log", "shorter-log-postgresql"])
def test_re_pointed_at_another_database_the_partitions_become_its_personas(
        tmp_path, monkeypatch, request, instance, a, b, b_on):
    store_a = store_with(f"sqlite:///{tmp_path / 'a.db'}", *a)
    url_b = request.getfixturevalue("postgres_url") if b_on == "postgresql" else f"sqlite:///{tmp_path / 'b.db'}"
    store_b = store_with(url_b, *b)
    with store_b.engine.begin() as connection:  # an agent the application made: registered materialized
        connection.execute(text("UPDATE personas SET elevenlabs_agent_id = 'agent_recorded' WHERE id = 3"))
    monkeypatch.setenv("PERSONAS_DATABASE_URL", store_a.database_url)
    on_a = tick(persona_partitions_sensor, instance, None)
    assert instance.get_dynamic_partitions(personas_partitions.name) == [str(p.id) for p in store_a.iter_personas()]

    monkeypatch.setenv("PERSONAS_DATABASE_URL", store_b.database_url)
    reconciled = tick(persona_partitions_sensor, instance, on_a.cursor)  # the table, in one page
    cursor = tick(persona_partitions_sensor, instance, reconciled.cursor).cursor  # the held recorded agent
    assert isinstance(tick(persona_partitions_sensor, instance, cursor), dg.SkipReason), "then the change log, unchanged"

    keys_b = [str(p.id) for p in store_b.iter_personas()]
    assert sorted(instance.get_dynamic_partitions(personas_partitions.name), key=int) == keys_b
    assert len(materializations(instance, "3")) == 1, "the recorded agent is shown materialized"
    assert own_position(RESOURCES["persona_store"], cursor) == str(store_b.latest_change_seq())


def test_re_pointed_sensors_read_the_new_databases_change_log_from_its_start(tmp_path, monkeypatch, instance):
    store_a = store_with(f"sqlite:///{tmp_path / 'a.db'}", 60, 20)
    store_b = store_with(f"sqlite:///{tmp_path / 'b.db'}", 50, 0)
    monkeypatch.setenv("PERSONAS_DATABASE_URL", store_a.database_url)
    tick(persona_partitions_sensor, instance, None)
    new_on_a = tick(new_personas_sensor, instance, None).cursor
    drift_on_a = tick(agent_drift_sensor, instance, None).cursor

    monkeypatch.setenv("PERSONAS_DATABASE_URL", store_b.database_url)
    cursor = tick(persona_partitions_sensor, instance, None).cursor
    tick(persona_partitions_sensor, instance, cursor)
    new_on_b = tick(new_personas_sensor, instance, new_on_a)
    drift_on_b = tick(agent_drift_sensor, instance, drift_on_a)

    # Every persona of B without an agent is requested, though B's log ends before A's position.
    assert [range_of(request) for request in new_on_b.run_requests] == [("1", "50")]
    assert own_position(RESOURCES["persona_store"], drift_on_b.cursor) == str(store_b.latest_change_seq())


def test_re_pointed_at_a_database_whose_log_ends_at_the_same_seq_the_report_is_refreshed(tmp_path, monkeypatch, instance):
    store_a = store_with(f"sqlite:///{tmp_path / 'a.db'}", 10, 0)
    store_b = store_with(f"sqlite:///{tmp_path / 'b.db'}", 10, 0)
    monkeypatch.setenv("PERSONAS_DATABASE_URL", store_a.database_url)
    on_a = tick(status_report_sensor, instance, None)
    assert isinstance(tick(status_report_sensor, instance, on_a.cursor), dg.SkipReason), "nothing new on A"

    monkeypatch.setenv("PERSONAS_DATABASE_URL", store_b.database_url)
    on_b = tick(status_report_sensor, instance, on_a.cursor)

    assert len(on_b.run_requests) == 1, "B's personas are reported, though its log ends at A's seq"
