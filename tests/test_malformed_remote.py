"""Agents listed in a shape the project does not expect (tags not a list, no agent_id, not an object, no name)
are skipped and named by plan, apply and ensure; they never stop the run for everyone else."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from persona_agents_pipeline.cli import main
from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.provisioning import Outcome, ProvisioningService
from persona_agents_pipeline.identity import PROJECT_TAG, identity_tag
from persona_agents_pipeline.voice_policy import DEFAULT_VOICE_CATALOGUE

NAMED = ("agent_tags_text", "agent_tags_number", "agent_no_name", "agent_name_number")


def malformed_items(installation_id: str, persona_id: int) -> list:
    ours = [PROJECT_TAG, identity_tag(installation_id, persona_id)]
    return [
        "just text",
        42,
        None,
        {"name": f"No id [persona:{persona_id}]", "tags": ours},
        {"agent_id": 123, "name": f"Numeric id [persona:{persona_id}]", "tags": ours},
        {"agent_id": "agent_tags_text", "name": f"Tags text [persona:{persona_id}]", "tags": PROJECT_TAG},
        {"agent_id": "agent_tags_number", "name": f"Tags number [persona:{persona_id}]", "tags": 7},
        {"agent_id": "agent_no_name", "tags": ours},
        {"agent_id": "agent_name_number", "name": 5, "tags": ours},
    ]


@pytest.fixture
def garbled(cli_env, store, sandbox):
    persona_ids = store.add_personas(demo_personas(3))
    sandbox.configure(malformed_list_items=malformed_items(store.installation_id(), persona_ids[0]))
    return persona_ids


def test_plan_and_apply_skip_and_name_agents_of_unexpected_shape(garbled, store, sandbox):
    runner = CliRunner()
    plan = runner.invoke(main, ["plan"])
    as_json = runner.invoke(main, ["plan", "--format", "json"])
    applied = runner.invoke(main, ["apply", "--yes"])

    assert plan.exit_code == 0, plan.output
    assert all(agent_id in plan.output for agent_id in NAMED), plan.output
    assert "without an agent_id" in plan.output and "not an object" in plan.output
    assert as_json.exit_code == 0, as_json.output
    skipped = json.loads(as_json.output)["skipped_remote_agents"]
    assert len(skipped) == 9 and {entry["agent_id"] for entry in skipped} >= set(NAMED)
    assert applied.exit_code == 0, applied.output
    summary = applied.output.split("Applied:")[1]
    assert "skipped 9" in summary.lower() and all(agent_id in summary for agent_id in NAMED), summary
    assert sorted(store.get(persona_id).elevenlabs_agent_id is not None for persona_id in garbled) == [True] * 3
    assert len(sandbox.agents()) == 3


def test_ensure_and_create_missing_agents_get_past_agents_of_unexpected_shape(garbled, store, sandbox, sandbox_client):
    service = ProvisioningService(store, sandbox_client, DEFAULT_VOICE_CATALOGUE)
    assert service.ensure_agent(garbled[0], adopt_existing=True).outcome is Outcome.CREATED
    result = CliRunner().invoke(main, ["create-missing-agents", "--yes"])
    assert result.exit_code == 0, result.output
    assert all(store.get(persona_id).elevenlabs_agent_id for persona_id in garbled)
    assert len(sandbox.agents()) == 3
    # Nothing listed in an unexpected shape was adopted, recorded or deleted.
    recorded = {store.get(persona_id).elevenlabs_agent_id for persona_id in garbled}
    assert recorded == {agent["agent_id"] for agent in sandbox.agents()}


def test_a_recorded_agent_listed_in_an_unexpected_shape_is_not_taken_for_gone(cli_env, store, sandbox, sandbox_client):
    [persona_id] = store.add_personas(demo_personas(1))
    agent_id = ProvisioningService(store, sandbox_client, DEFAULT_VOICE_CATALOGUE).ensure_agent(persona_id).agent_id
    # The real agent is listed garbled (its tags a string), as well as its proper self hidden: archived.
    sandbox.configure(malformed_list_items=[{"agent_id": agent_id, "name": "x", "tags": "persona-agents"}])
    agent = sandbox.gateway.store.get(agent_id)
    agent["platform_settings"]["archived"] = True
    sandbox.gateway.store.put(agent)

    plan = CliRunner().invoke(main, ["plan", "--format", "json"])

    assert plan.exit_code == 0, plan.output
    changes = json.loads(plan.output)["changes"]
    assert [change for change in changes if change["action"] in ("replace", "create", "adopt")] == []
