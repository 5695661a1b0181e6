"""converge_agent: materializing a persona converges it to the truth on ElevenLabs, not to the database."""

import pytest
from sqlalchemy import text

from persona_agents_pipeline.agent_comparison import differing_fields
from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.provisioning import Outcome, ProvisioningService
from persona_agents_pipeline.voice_policy import DEFAULT_VOICE_CATALOGUE, choose_voice


def calls(sandbox, since):
    return [(record.method, record.path.split("?")[0].rsplit("/", 1)[0]) for record in sandbox.request_log()[since:]]


def test_converge_creates_verifies_replaces_and_repairs(store, sandbox, sandbox_client):
    first, second = store.add_personas(demo_personas(2))
    service = ProvisioningService(store, sandbox_client, DEFAULT_VOICE_CATALOGUE)

    # No agent yet: created like ensure_agent, without a lookup first.
    seen = len(sandbox.request_log())
    created = service.converge_agent(first)
    assert created.outcome is Outcome.CREATED
    assert ("GET", "/v1/convai/agents") not in calls(sandbox, seen)

    # Current: one GET, nothing else, and it says so.
    seen = len(sandbox.request_log())
    assert service.converge_agent(first).outcome is Outcome.VERIFIED
    assert [method for method, _ in calls(sandbox, seen)] == ["GET"]

    # Deleted upstream (the database still records it): replaced, exactly one agent left.
    sandbox.delete_agent_directly(created.agent_id)
    replaced = service.converge_agent(first)
    assert replaced.outcome is Outcome.REPLACED and replaced.agent_id != created.agent_id
    assert [agent["agent_id"] for agent in sandbox.agents()] == [replaced.agent_id]
    assert store.get(first).elevenlabs_agent_id == replaced.agent_id

    # Edited behind our back (another voice set on ElevenLabs; the recorded hash still matches): PATCHed back.
    wanted_voice = store.get(first).voice_id
    other_voice = next(voice for voice in DEFAULT_VOICE_CATALOGUE.values() if voice != wanted_voice)
    sandbox_client.update_agent(replaced.agent_id, {"conversation_config": {"tts": {"voice_id": other_voice}}})
    repaired = service.converge_agent(first)
    assert repaired.outcome is Outcome.UPDATED and repaired.agent_id == replaced.agent_id
    assert sandbox_client.get_agent(replaced.agent_id)["conversation_config"]["tts"]["voice_id"] == wanted_voice
    assert service.converge_agent(first).outcome is Outcome.VERIFIED

    # Traits edited in the database: updated in place.
    service.ensure_agent(second)
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE personas SET chattiness = 1 - chattiness WHERE id = :id"), {"id": second})
    assert service.converge_agent(second).outcome is Outcome.UPDATED
    assert service.converge_agent(second).outcome is Outcome.VERIFIED
    assert len(sandbox.agents()) == 2


def test_converge_of_invalid_traits_fails_before_any_call(store, sandbox, sandbox_client):
    [persona_id] = store.add_personas(demo_personas(1))
    service = ProvisioningService(store, sandbox_client, DEFAULT_VOICE_CATALOGUE)
    service.ensure_agent(persona_id)
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE personas SET chattiness = 7 WHERE id = :id"), {"id": persona_id})
    seen = len(sandbox.request_log())
    result = service.provision_many([persona_id], operation=service.converge_agent)[0]
    assert result.outcome is Outcome.INVALID and "chattiness" in result.error
    assert calls(sandbox, seen) == []


def test_iter_provision_yields_every_result_and_check_many_reports_each_persona_in_order(store, sandbox, sandbox_client):
    ids = store.add_personas(demo_personas(4))
    service = ProvisioningService(store, sandbox_client, DEFAULT_VOICE_CATALOGUE)

    arrived = list(service.iter_provision([*ids[:3], 10**6], concurrency=3))

    assert sorted(result.persona_id for result in arrived) == sorted([*ids[:3], 10**6])
    assert {r.persona_id: r.outcome for r in arrived} == {**{i: Outcome.CREATED for i in ids[:3]}, 10**6: Outcome.NOT_FOUND}
    sandbox.delete_agent_directly(store.get(ids[1]).elevenlabs_agent_id)
    value = 0.1 if choose_voice(store.get(ids[2]).spec()).name == "Bella" else 0.9  # the opposite voice corner
    with store.engine.begin() as connection:  # a trait edit: the voice no longer matches
        connection.execute(text("UPDATE personas SET temper_level = :v, chattiness = :v WHERE id = :id"), {"v": value, "id": ids[2]})

    checks = service.check_many([ids[0], ids[1], ids[3], 10**6, ids[2]], concurrency=3)

    assert [check.persona_id for check in checks] == [ids[0], ids[1], ids[3], 10**6, ids[2]]
    assert checks[0].passed and checks[0].exists
    assert not checks[1].exists and "gone" in checks[1].problems[0]
    assert not checks[2].exists and checks[2].problems == ("persona has no agent recorded",)
    assert not checks[3].exists and "does not exist" in checks[3].problems[0]
    assert checks[4].exists and not checks[4].voice_matches


def edit_upstream(sandbox, agent_id, edit):
    """Change the stored agent as someone in the ElevenLabs dashboard would."""
    agent = sandbox.gateway.store.get(agent_id)
    edit(agent)
    sandbox.gateway.store.put(agent)


UPSTREAM_EDITS = {
    "name": (lambda agent: agent.update(name="Renamed in the dashboard"), "name"),
    "tags": (lambda agent: agent.update(tags=["persona-agents"]), "tags"),
    "first message": (lambda agent: agent["conversation_config"]["agent"].update(first_message="Yo."),
                      "conversation_config.agent.first_message"),
    "llm": (lambda agent: agent["conversation_config"]["agent"]["prompt"].update(llm="gpt-4o"),
            "conversation_config.agent.prompt.llm"),
    "temperature": (lambda agent: agent["conversation_config"]["agent"]["prompt"].update(temperature=0.1),
                    "conversation_config.agent.prompt.temperature"),
    "stability": (lambda agent: agent["conversation_config"]["tts"].update(stability=0.05),
                  "conversation_config.tts.stability"),
    "speed": (lambda agent: agent["conversation_config"]["tts"].update(speed=1.2), "conversation_config.tts.speed"),
    "a missing field": (lambda agent: agent["conversation_config"]["tts"].pop("model_id"),
                        "conversation_config.tts.model_id"),
}


@pytest.mark.parametrize("edit", list(UPSTREAM_EDITS))
def test_converge_repairs_every_field_the_project_sets_and_names_it(store, sandbox, sandbox_client, edit):
    [persona_id] = store.add_personas(demo_personas(1))
    service = ProvisioningService(store, sandbox_client, DEFAULT_VOICE_CATALOGUE)
    agent_id = service.ensure_agent(persona_id).agent_id
    change, field_path = UPSTREAM_EDITS[edit]
    edit_upstream(sandbox, agent_id, change)

    repaired = service.converge_agent(persona_id)

    assert repaired.outcome is Outcome.UPDATED and repaired.differences == (field_path,)
    assert differing_fields(service.payload_for(store.get(persona_id).spec()), sandbox_client.get_agent(agent_id)) == []
    assert field_path in store.history(persona_id)[-1].reason
    assert service.converge_agent(persona_id).outcome is Outcome.VERIFIED
    assert [agent["agent_id"] for agent in sandbox.agents()] == [agent_id]


def test_converge_leaves_what_the_project_does_not_set_and_ignores_harmless_differences(store, sandbox, sandbox_client):
    [persona_id] = store.add_personas(demo_personas(1))
    service = ProvisioningService(store, sandbox_client, DEFAULT_VOICE_CATALOGUE)
    agent_id = service.ensure_agent(persona_id).agent_id
    knowledge_base = [{"type": "file", "id": "doc_1", "name": "Handbook"}]

    def dashboard_additions(agent):
        agent["conversation_config"]["agent"]["prompt"]["knowledge_base"] = knowledge_base
        agent["conversation_config"]["agent"]["prompt"]["tool_ids"] = ["tool_1"]
        agent["tags"] = ["team-blue", *reversed(agent["tags"])]  # another tag, and ours in another order
        tts = agent["conversation_config"]["tts"]
        tts["speed"] = int(tts["speed"])  # 1 for 1.0
        tts["stability"] += 1e-9  # the float that came back

    edit_upstream(sandbox, agent_id, dashboard_additions)
    assert service.converge_agent(persona_id).outcome is Outcome.VERIFIED

    edit_upstream(sandbox, agent_id, lambda agent: agent["conversation_config"]["agent"].update(first_message="Yo."))
    assert service.converge_agent(persona_id).outcome is Outcome.UPDATED
    remote = sandbox_client.get_agent(agent_id)
    assert remote["conversation_config"]["agent"]["prompt"]["knowledge_base"] == knowledge_base
    assert remote["conversation_config"]["agent"]["prompt"]["tool_ids"] == ["tool_1"]
    assert "team-blue" in remote["tags"]
    assert service.converge_agent(persona_id).outcome is Outcome.VERIFIED


def test_converge_treats_a_remote_agent_of_unexpected_shape_as_differing_not_as_a_crash(store, sandbox, sandbox_client):
    [persona_id] = store.add_personas(demo_personas(1))
    service = ProvisioningService(store, sandbox_client, DEFAULT_VOICE_CATALOGUE)
    agent_id = service.ensure_agent(persona_id).agent_id

    def garble(agent):
        agent["tags"] = "persona-agents"
        agent["conversation_config"]["tts"] = None
        del agent["name"]

    edit_upstream(sandbox, agent_id, garble)
    repaired = service.converge_agent(persona_id)
    assert repaired.outcome is Outcome.UPDATED
    assert {"name", "tags", "conversation_config.tts.voice_id"} <= set(repaired.differences)
    assert service.converge_agent(persona_id).outcome is Outcome.VERIFIED
