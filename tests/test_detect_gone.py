"""Agents deleted upstream are found by the scheduled listing, with nobody launching anything: red
`remote_agent_exists` on their partition and `gone` in the report; orphans are named; a listing that
fails or is incomplete marks nothing gone. Real DagsterInstance, SQLite store and HTTP sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from persona_agents_pipeline.defs.checks import EXISTS
from persona_agents_pipeline.defs.detection import detect_gone_agents_schedule, replace_gone_agents_sensor
from persona_agents_pipeline.defs.jobs import DETECT_JOB
from persona_agents_pipeline.defs.partitions import personas_partitions
from persona_agents_pipeline.defs.resources import ElevenLabsResource, PersonaStoreResource, provisioning_service
from persona_agents_pipeline.defs.run_requests import ENSURE_RUN_CONFIG, range_run_request
from persona_agents_pipeline.detection import detect_gone_agents
from persona_agents_pipeline.in_process_runs import execute_run_request

from dagster_helpers import persona_rows, point_env_at

API_KEY = "sandbox-test-key"


@pytest.fixture
def env_store(store, monkeypatch, sandbox):
    """The shared store fixture (SQLite and PostgreSQL), with the environment pointing at it and the sandbox."""
    point_env_at(monkeypatch, store.database_url, sandbox.url, API_KEY)
    # The lag is the service's concern (tested below); here every agent is old enough to judge.
    monkeypatch.setenv("ELEVENLABS_LISTING_LAG_SECONDS", "0")
    return store


def provisioned(env_store, instance, count: int) -> list[int]:
    """Personas with agents made by an ensure run over their registered partitions."""
    ids = env_store.add_personas(persona_rows(count))
    keys = [str(pid) for pid in ids]
    instance.add_dynamic_partitions(personas_partitions.name, keys)
    assert execute_run_request(instance, range_run_request(keys, None, "test", ENSURE_RUN_CONFIG)).success
    return ids


def scheduled_listing(instance) -> dg.ExecuteInProcessResult:
    """What the daemon does when the detection schedule is due: evaluate it and launch its run."""
    [request] = detect_gone_agents_schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests
    assert request.job_name in (None, DETECT_JOB)
    return execute_run_request(instance, dg.RunRequest(job_name=DETECT_JOB, tags=request.tags))


def exists_status(instance) -> dict[str, str]:
    infos = instance.event_log_storage.get_asset_check_partition_info([dg.AssetCheckKey(dg.AssetKey("persona_agent"), EXISTS)])
    return {info.partition_key: info.latest_execution_status.value for info in infos if info.is_current}


def metadata_of(result: dg.ExecuteInProcessResult, node: str) -> dict:
    [materialization] = result.asset_materializations_for_node(node)
    return {name: value.value for name, value in materialization.metadata.items()}


def report_metadata(result: dg.ExecuteInProcessResult) -> dict:
    return metadata_of(result, "agent_status_report")


def listing_metadata(result: dg.ExecuteInProcessResult) -> dict:
    return metadata_of(result, "elevenlabs_agent_listing")


def test_an_agent_deleted_upstream_turns_red_and_gone_after_the_scheduled_listing(env_store, instance, sandbox, monkeypatch):
    ids = provisioned(env_store, instance, 3)
    gone = env_store.get(ids[1])
    assert sandbox.delete_agent_directly(gone.elevenlabs_agent_id)
    agents_before = {agent["agent_id"] for agent in sandbox.agents()}
    log_before = len(sandbox.request_log())

    result = scheduled_listing(instance)

    assert result.success
    assert exists_status(instance) == {str(ids[1]): "FAILED"}  # healthy partitions get no event at all
    report = report_metadata(result)
    assert report["count_gone"] == 1 and report["count_active"] == 2
    assert f"| {ids[1]} | {gone.name} | gone |" in report["needs_attention"]
    assert gone.elevenlabs_agent_id in listing_metadata(result)["gone_agents"]
    # Detection only: one list page, no create, no agent touched.
    requests = sandbox.request_log()[log_before:]
    assert [(r.method, r.path.split("?")[0]) for r in requests] == [("GET", "/v1/convai/agents")]
    assert {agent["agent_id"] for agent in sandbox.agents()} == agents_before

    # A second listing writes nothing new and keeps the partition red.
    assert scheduled_listing(instance).success and exists_status(instance) == {str(ids[1]): "FAILED"}

    # Repair waits for the auto-creation switch; with it on, only the gone persona is converged.
    context = dg.build_run_status_sensor_context(
        sensor_name=replace_gone_agents_sensor.name, dagster_instance=instance,
        dagster_run=result.dagster_run, dagster_event=result.get_run_success_event(),
    )
    monkeypatch.setenv("AUTO_CREATE_ELEVENLABS_AGENTS", "false")
    assert isinstance(replace_gone_agents_sensor(context), dg.SkipReason)
    monkeypatch.setenv("AUTO_CREATE_ELEVENLABS_AGENTS", "true")
    [repair] = replace_gone_agents_sensor(context)
    assert execute_run_request(instance, repair).success
    replaced = env_store.get(ids[1]).elevenlabs_agent_id
    assert replaced != gone.elevenlabs_agent_id and replaced in {agent["agent_id"] for agent in sandbox.agents()}
    assert exists_status(instance) == {}  # the red result no longer concerns the current agent
    assert report_metadata(scheduled_listing(instance))["count_gone"] == 0


def test_an_orphan_of_this_installation_is_named_in_the_listing_and_the_report(env_store, instance, sandbox):
    ids = provisioned(env_store, instance, 2)
    orphan = env_store.get(ids[0])
    with env_store.engine.begin() as connection:  # the persona row goes; its agent stays on the account
        connection.exec_driver_sql(f"DELETE FROM personas WHERE id = {ids[0]}")
    sandbox.create_agent_directly({"name": "someone else's agent", "conversation_config": {}})

    result = scheduled_listing(instance)

    assert result.success
    [named] = listing_metadata(result)["orphans"]
    assert named["agent_id"] == orphan.elevenlabs_agent_id and named["persona_id"] == ids[0]
    report = report_metadata(result)
    assert report["count_orphaned_agents"] == 1
    assert orphan.elevenlabs_agent_id in report["orphaned_agents"] and named["name"] in report["orphaned_agents"]
    assert exists_status(instance) == {}


@pytest.mark.parametrize("fault", ["500", "malformed"])
def test_a_listing_cut_off_midway_marks_nothing_gone(env_store, instance, sandbox, fault):
    ids = provisioned(env_store, instance, 2)
    for n in range(100):  # other agents on the account: the listing takes two pages
        sandbox.create_agent_directly({"name": f"other {n}", "conversation_config": {}})
    assert sandbox.delete_agent_directly(env_store.get(ids[0]).elevenlabs_agent_id)
    sandbox.configure(list_page_fault=fault)

    result = scheduled_listing(instance)

    assert not result.success
    assert "nothing is marked gone" in str(result.failure_data_for_node("elevenlabs_agent_listing").error)
    assert exists_status(instance) == {}
    assert not result.asset_materializations_for_node("agent_status_report")


def test_a_listed_item_without_an_agent_id_marks_nothing_gone_and_is_named(env_store, instance, sandbox):
    ids = provisioned(env_store, instance, 2)
    assert sandbox.delete_agent_directly(env_store.get(ids[0]).elevenlabs_agent_id)
    sandbox.configure(malformed_list_items=[{"name": "odd item", "agent_id": None}])

    result = scheduled_listing(instance)

    assert not result.success
    error = str(result.failure_data_for_node("elevenlabs_agent_listing").error)
    assert "odd item" in error and "nothing is marked gone" in error
    assert exists_status(instance) == {}


def test_an_agent_recorded_within_the_listing_lag_is_not_judged(env_store, instance, sandbox):
    ids = provisioned(env_store, instance, 1)
    assert sandbox.delete_agent_directly(env_store.get(ids[0]).elevenlabs_agent_id)
    service = provisioning_service(PersonaStoreResource(), ElevenLabsResource(api_key=API_KEY))
    with service.client:
        recent = detect_gone_agents(service, listing_lag_seconds=60)
        judged = detect_gone_agents(service, listing_lag_seconds=0)
    assert recent.gone == [] and recent.too_recent == 1
    assert [gone.persona_id for gone in judged.gone] == ids


LOAD_SCHEDULE = """
import json
from persona_agents_pipeline.definitions import defs
schedule = defs.get_schedule_def("detect_gone_agents_schedule")
print(json.dumps([schedule.cron_schedule, schedule.default_status.value]))
"""


@pytest.mark.parametrize("env, cron", [({}, "30 * * * *"), ({"PERSONA_AGENTS_DETECT_CRON": "*/2 * * * *"}, "*/2 * * * *")])
def test_the_detection_schedule_runs_by_default_without_auto_creation_at_the_configured_interval(tmp_path, env, cron):
    clean = {name: value for name, value in os.environ.items()
             if name not in ("PERSONA_AGENTS_DETECT_CRON", "PERSONA_AGENTS_ENV", "AUTO_CREATE_ELEVENLABS_AGENTS")}
    loaded = subprocess.run([sys.executable, "-c", LOAD_SCHEDULE], capture_output=True, text=True, timeout=300,
                            env={**clean, **env, "PERSONA_AGENTS_DATA_DIR": str(tmp_path)})
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == [cron, "RUNNING"]
