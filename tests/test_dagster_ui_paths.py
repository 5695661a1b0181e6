"""The paths a user takes through the Dagster UI end as the truth: a "Backfill all" over healthy personas
succeeds, a new instance over personas with agents shows them materialized, the Checks tab's "Execute all"
checks every persona, a failed partition says why in one sentence."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus

from persona_agents_pipeline.defs.assets import persona_agent
from persona_agents_pipeline.defs.change_cursor import tied_cursor
from persona_agents_pipeline.defs.checks import EXISTS, MATCHES, persona_agent_checks
from persona_agents_pipeline.defs.checks_after_materialize import checks_after_materialize_sensor
from persona_agents_pipeline.defs.dagster_internals import DATA_VERSION_TAG
from persona_agents_pipeline.defs.partitions import personas_partitions
from persona_agents_pipeline.defs.resources import ElevenLabsResource, PersonaStoreResource, provisioning_service
from persona_agents_pipeline.defs.run_requests import ENSURE_RUN_CONFIG, range_run_request
from persona_agents_pipeline.defs.schedules import verify_agents
from persona_agents_pipeline.defs.sensors import agent_drift_sensor, persona_partitions_sensor
from persona_agents_pipeline.defs.status_report import status_report_sensor
from persona_agents_pipeline.in_process_runs import execute_run_request

from dagster_backfill import backfill_instance, project_workspace, run_backfill
from dagster_helpers import (
    failed_partitions, flip_traits, latest_metadata, materializations, persona_rows, point_env_at, range_of, run_tick,
    stale_keys,
)

PARTITIONS = personas_partitions.name
RESOURCES = {"persona_store": PersonaStoreResource()}


@pytest.fixture
def store(sqlite_store, monkeypatch, sandbox):
    point_env_at(monkeypatch, sqlite_store.database_url, sandbox.url)
    return sqlite_store


def data_versions(instance, key: str) -> list[str]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=persona_agent.key, asset_partitions=[key]), limit=100
    ).records
    return [record.event_log_entry.tags[DATA_VERSION_TAG] for record in records]


def test_backfill_all_over_healthy_personas_ends_succeeded(store, sandbox):
    """Dagster counts a backfill's partition as done only by a materialization from one of its runs: a
    verified no-op must be one, with the partition's data version unchanged (no new version shown)."""
    ids = store.add_personas(persona_rows(5))
    keys = [str(i) for i in ids]
    with backfill_instance() as instance, project_workspace(instance) as workspace:
        instance.add_dynamic_partitions(PARTITIONS, keys)
        first, _ = run_backfill(workspace, persona_agent.key, keys)
        assert first == BulkActionStatus.COMPLETED_SUCCESS
        agents = {agent["agent_id"] for agent in sandbox.agents()}

        again, _ = run_backfill(workspace, persona_agent.key, keys)

        assert again == BulkActionStatus.COMPLETED_SUCCESS
        assert {agent["agent_id"] for agent in sandbox.agents()} == agents and len(agents) == 5
        for key in keys:
            latest, created = materializations(instance, key)
            assert (latest.metadata["outcome"].value, created.metadata["outcome"].value) == ("verified", "created")
            assert "no-op" in latest.metadata["note"].value
            newer, older = data_versions(instance, key)
            assert newer == older, "a verified no-op must not show a new data version"
        assert not failed_partitions(instance, keys)


def request_count(sandbox) -> int:
    return sum(sandbox.stats()["requests_by_status"].values())


def test_a_new_instance_shows_recorded_agents_materialized_and_the_rest_missing(store, sandbox, instance):
    """A new Dagster instance over a database whose personas have agents (made by the CLI here): the partitions
    sensor shows those materialized, with their metadata and no API call, the others missing; a drifted agent
    and a later trait edit show stale."""
    ids = store.add_personas(persona_rows(6))
    keys = [str(i) for i in ids]
    service = provisioning_service(PersonaStoreResource(), ElevenLabsResource(api_key="sandbox-test-key"))
    assert all(service.ensure_agent(persona_id).ok for persona_id in ids[:4])
    service.client.close()
    flip_traits(store, ids[3])  # its agent was built from other traits: drifted
    requests = request_count(sandbox)

    first, _ = run_tick(persona_partitions_sensor, instance, RESOURCES)
    # The personas without an agent are registered at once; those with one are never shown missing.
    assert instance.get_dynamic_partitions(PARTITIONS) == keys[4:]
    second, _ = run_tick(persona_partitions_sensor, instance, RESOURCES, first.cursor)

    assert sorted(instance.get_dynamic_partitions(PARTITIONS), key=int) == keys
    assert instance.get_materialized_partitions(persona_agent.key) == set(keys[:4])
    assert request_count(sandbox) == requests, "registering makes no API call"
    metadata = latest_metadata(instance, keys[0])
    persona = store.get(ids[0])
    assert (metadata["persona"], metadata["agent_id"], metadata["voice_id"]) == (persona.name, persona.elevenlabs_agent_id, persona.voice_id)
    assert metadata["voice_name"] and metadata["outcome"] == "recorded" and "recorded in the database" in metadata["note"]
    assert stale_keys(instance, keys[:4]) == {keys[3]}

    flip_traits(store, ids[0])
    third, _ = run_tick(persona_partitions_sensor, instance, RESOURCES, second.cursor)
    assert stale_keys(instance, keys[:4]) == {keys[0], keys[3]}
    assert isinstance(run_tick(persona_partitions_sensor, instance, RESOURCES, third.cursor)[0], dg.SkipReason)


def check_status_by_partition(instance, name: str) -> dict[str, str]:
    """Each partition's latest check status, as the UI reads it."""
    infos = instance.event_log_storage.get_asset_check_partition_info([dg.AssetCheckKey(persona_agent.key, name)])
    return {info.partition_key: info.latest_execution_status.value for info in infos if info.partition_key and info.is_current}


def test_the_checks_tabs_execute_all_checks_every_registered_persona(store, sandbox, instance):
    """The Checks tab's "Execute all" launches the check selection with no partition: every registered persona
    is checked, each result on its partition, and the run succeeds with a red check where an agent is gone."""
    ids = store.add_personas(persona_rows(5))
    keys = [str(i) for i in ids]
    instance.add_dynamic_partitions(PARTITIONS, keys)
    assert execute_run_request(instance, range_run_request(keys[:4], run_key=None, reason="test")).success
    gone = store.get(ids[1]).elevenlabs_agent_id
    assert sandbox.delete_agent_directly(gone)

    execute_all = dg.RunRequest(asset_selection=[], asset_check_keys=list(persona_agent_checks.check_keys))
    result = execute_run_request(instance, execute_all)

    assert result.success
    assert check_status_by_partition(instance, EXISTS) == {
        keys[0]: "SUCCEEDED", keys[1]: "FAILED", keys[2]: "SUCCEEDED", keys[3]: "SUCCEEDED", keys[4]: "FAILED"
    }
    assert check_status_by_partition(instance, MATCHES) == {keys[0]: "SUCCEEDED", keys[2]: "SUCCEEDED", keys[3]: "SUCCEEDED"}


def test_verify_agents_runs_each_check_once(store, sandbox, instance):
    """The verify_agents schedule's check-only runs are not followed by a second check run of their own."""
    ids = store.add_personas(persona_rows(3))
    keys = [str(i) for i in ids]
    instance.add_dynamic_partitions(PARTITIONS, keys)
    assert execute_run_request(instance, range_run_request(keys, run_key=None, reason="test")).success
    watched_from = instance.get_run_records(limit=1)[0].update_timestamp.timestamp()
    requests = list(verify_agents(dg.build_schedule_context(instance=instance, resources=RESOURCES)))
    gets = request_count(sandbox)

    assert [execute_run_request(instance, request).success for request in requests] == [True]
    follow_up = checks_after_materialize_sensor(dg.build_sensor_context(instance=instance, cursor=str(watched_from)))

    assert request_count(sandbox) - gets == 3, "one GET per agent"
    assert not follow_up.run_requests


def set_chattiness(store, persona_id: int, value: float) -> None:
    with store.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE personas SET chattiness = {value} WHERE id = {persona_id}")


def test_a_failed_partition_says_why_in_one_sentence_on_its_own_events(store, sandbox, instance):
    ids = store.add_personas(persona_rows(3))
    keys = [str(i) for i in ids]
    set_chattiness(store, ids[1], 7)
    instance.add_dynamic_partitions(PARTITIONS, keys)

    result = execute_run_request(instance, range_run_request(keys, run_key=None, reason="test"))

    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    sentence = f"Persona {ids[1]} 'Persona 1' is invalid: chattiness"
    assert description.startswith(sentence) and description.lower().count(f"persona {ids[1]}") == 1, description
    assert "click Materialize" in description
    [observation] = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=persona_agent.key, asset_partitions=[keys[1]]), limit=10).records
    reason = observation.asset_observation.metadata["reason"].value
    assert reason == f"Persona {ids[1]} 'Persona 1' is invalid: {store.get(ids[1]).invalid_reason()}."
    assert "Materialize" in observation.asset_observation.metadata["next_step"].value
    assert failed_partitions(instance, keys) == {keys[1]}


def test_an_invalid_persona_with_an_agent_is_not_shown_green(store, sandbox, instance):
    ids = store.add_personas(persona_rows(2))
    first, _ = run_tick(persona_partitions_sensor, instance, RESOURCES)
    assert execute_run_request(instance, range_run_request([str(i) for i in ids], run_key=None, reason="test")).success
    set_chattiness(store, ids[0], 7)

    run_tick(persona_partitions_sensor, instance, RESOURCES, first.cursor)

    assert check_status_by_partition(instance, MATCHES) == {str(ids[0]): "FAILED"}


def test_a_fixed_invalid_persona_is_retried_by_the_drift_sensor(store, sandbox, instance):
    """With automation on, the edit that fixes a failed persona (invalid, without an agent) or an invalid one
    with an agent (red check) is followed by a converge run of just those partitions: they turn green."""
    ids = store.add_personas(persona_rows(4))
    keys = [str(i) for i in ids]
    run_tick(persona_partitions_sensor, instance, RESOURCES)
    assert execute_run_request(instance, range_run_request(keys[2:], run_key=None, reason="test")).success
    set_chattiness(store, ids[0], 7)
    set_chattiness(store, ids[2], 7)
    cursor = tied_cursor(RESOURCES["persona_store"], str(store.latest_change_seq()))
    # ids[2]'s traits check turns red
    run_tick(persona_partitions_sensor, instance, RESOURCES, cursor=tied_cursor(RESOURCES["persona_store"], "0"))
    assert not execute_run_request(instance, range_run_request(keys[:2], run_key=None, reason="test")).success
    assert failed_partitions(instance, keys) == {keys[0]} and check_status_by_partition(instance, MATCHES) == {keys[2]: "FAILED"}
    set_chattiness(store, ids[0], 0.5)
    set_chattiness(store, ids[2], persona_rows(4)[2]["chattiness"])  # back to the traits its agent was built from

    result, runs = run_tick(agent_drift_sensor, instance, RESOURCES, cursor)

    assert sorted(range_of(request) for request in result.run_requests) == [(keys[0], keys[0]), (keys[2], keys[2])]
    assert all(run.success for run in runs)
    assert not failed_partitions(instance, keys) and instance.get_materialized_partitions(persona_agent.key) == set(keys)
    assert check_status_by_partition(instance, MATCHES) == {}, "the red check concerned an earlier materialization"


def report_materializations(instance) -> list:
    return instance.fetch_materializations(dg.AssetKey("agent_status_report"), limit=100).records


def test_a_materialize_click_makes_two_runs_and_leaves_the_report_current(store, sandbox, instance):
    """A Materialize as the UI launches it (asset and checks selected): its run, then its checks' run, which
    records the report (a deleted agent counted gone); the report sensor adds no third run."""
    ids = store.add_personas(persona_rows(3))
    keys = [str(i) for i in ids]
    first, _ = run_tick(persona_partitions_sensor, instance, RESOURCES)
    report_cursor = status_report_sensor(dg.build_sensor_context(instance=instance, resources=RESOURCES)).cursor
    assert execute_run_request(instance, range_run_request(keys, run_key=None, reason="test", run_config=ENSURE_RUN_CONFIG)).success
    automated = status_report_sensor(dg.build_sensor_context(instance=instance, cursor=report_cursor, resources=RESOURCES))
    assert len(automated.run_requests) == 1, "an automated run is followed by a report run"
    assert sandbox.delete_agent_directly(store.get(ids[1]).elevenlabs_agent_id)
    watched_from = instance.get_run_records(limit=1)[0].update_timestamp.timestamp()

    click = dg.RunRequest(asset_selection=[persona_agent.key], tags=range_run_request(keys[1:2], run_key=None, reason="ui").tags)
    assert execute_run_request(instance, click).success  # the asset's run, its checks selected and skipped
    follow_up = checks_after_materialize_sensor(dg.build_sensor_context(instance=instance, cursor=str(watched_from)))
    assert [execute_run_request(instance, request).success for request in follow_up.run_requests] == [True]
    tick = status_report_sensor(dg.build_sensor_context(instance=instance, cursor=automated.cursor, resources=RESOURCES))

    assert isinstance(tick, dg.SkipReason) or not tick.run_requests
    [latest, *_] = report_materializations(instance)
    assert latest.asset_materialization.metadata["count_active"].value == 3
