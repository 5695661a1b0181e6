"""converge_agent: materializing a persona converges it to the truth on ElevenLabs, not to the database."""

from sqlalchemy import text

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
