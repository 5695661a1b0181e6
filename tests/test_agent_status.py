"""One status model: the CLI's list-agent-status, the Python API's agent_status() and the Dagster
agent_status_report give each persona the same status, with real HTTP to the sandbox and a real store."""

import json
import re

import dagster as dg
import pytest

from cli_helpers import run

from persona_agents_pipeline import python_api
from persona_agents_pipeline.agent_status import AgentStatus
from persona_agents_pipeline.config import Settings
from persona_agents_pipeline.defs.partitions import personas_partitions
from persona_agents_pipeline.defs.resources import PersonaStoreResource
from persona_agents_pipeline.defs.run_requests import range_run_request
from persona_agents_pipeline.definitions import defs
from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.in_process_runs import execute_run_request
from persona_agents_pipeline.provisioning import ProvisioningService


def set_traits(store, persona_id: int, assignments: str) -> None:
    with store.engine.begin() as connection:  # as the application would, behind the CLI's back
        connection.exec_driver_sql(f"UPDATE personas SET {assignments} WHERE id = {persona_id}")


def service_for(cli_env, store) -> ProvisioningService:
    return ProvisioningService.from_settings(Settings.from_env(), api_key=cli_env["ELEVENLABS_API_KEY"], store=store)


@pytest.fixture
def personas(cli_env, store, sandbox) -> dict[int, AgentStatus]:
    """Persona id -> the status it must show, one persona per status a reader can meet."""
    in_sync, drifted, gone, invalid_with_agent, invalid, missing = store.add_personas(demo_personas(6))
    service = service_for(cli_env, store)
    for persona_id in (in_sync, drifted, gone, invalid_with_agent):
        service.ensure_agent(persona_id)
    set_traits(store, drifted, "temper_level = 0.95, chattiness = 0.95")
    assert sandbox.delete_agent_directly(store.get(gone).elevenlabs_agent_id)
    set_traits(store, invalid_with_agent, "chattiness = 2")
    set_traits(store, invalid, "emotional_attachment = -1")
    return {in_sync: AgentStatus.ACTIVE, drifted: AgentStatus.DRIFTED, gone: AgentStatus.GONE,
            invalid_with_agent: AgentStatus.INVALID, invalid: AgentStatus.INVALID, missing: AgentStatus.MISSING}


def test_cli_python_api_and_report_give_each_persona_the_same_status(personas, store, instance, cli_env):
    expected = {persona_id: status.value for persona_id, status in personas.items()}

    listed = run("list-agent-status", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert {row["id"]: row["status"] for row in json.loads(listed.output)} == expected

    service = service_for(cli_env, store)
    assert {persona_id: python_api.agent_status(persona_id, service).status.value for persona_id in personas} == expected

    assert report_statuses(instance, list(personas)) == expected


def report_statuses(instance: dg.DagsterInstance, ids: list[int]) -> dict[int, str]:
    """The report's status per persona, after the checks the UI runs (they find the gone agent)."""
    keys = [str(persona_id) for persona_id in ids]
    instance.add_dynamic_partitions(personas_partitions.name, keys)
    execute_run_request(instance, range_run_request(keys, run_key=None, reason="test", checks_only=True))
    result = dg.materialize([defs.get_assets_def("agent_status_report")], instance=instance,
                            resources={"persona_store": PersonaStoreResource()})
    metadata = result.asset_materializations_for_node("agent_status_report")[0].metadata
    rows = re.findall(r"^\| (\d+) \| [^|]* \| (\w+) \|", metadata["needs_attention"].value, flags=re.MULTILINE)
    statuses = {int(persona_id): status for persona_id, status in rows}
    assert metadata["count_active"].value == len(ids) - len(statuses)
    return {persona_id: statuses.get(persona_id, "active") for persona_id in ids}


def test_without_the_remote_check_a_gone_agent_is_not_looked_up(personas, store, sandbox):
    requests_before = sandbox.stats()["requests_total"]
    listed = run("list-agent-status", "--format", "json", "--no-check-remote")
    rows = {row["id"]: row["status"] for row in json.loads(listed.output)}
    gone = next(persona_id for persona_id, status in personas.items() if status is AgentStatus.GONE)
    assert rows[gone] == "active" and sandbox.stats()["requests_total"] == requests_before


def test_list_agent_status_without_a_key_names_the_way_to_read_the_database_alone(personas, monkeypatch):
    monkeypatch.delenv("ELEVENLABS_API_KEY")
    result = run("list-agent-status")
    assert result.exit_code == 1 and "--no-check-remote" in result.output
