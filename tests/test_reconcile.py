"""Plan and apply against the sandbox, on SQLite and PostgreSQL: drift, lost agents, orphans, adoption, history."""

import json

from sqlalchemy import text
from cli_helpers import run

from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.provisioning import Outcome, ProvisioningService
from persona_agents_pipeline.drift import drifted_hashes
from persona_agents_pipeline.identity import PROJECT_TAG, identity_tag
from persona_agents_pipeline.voice_policy import DEFAULT_VOICE_CATALOGUE, agent_payload, choose_voice, voice_settings


def provisioned(store, count):
    ids = store.add_personas(demo_personas(count))
    result = run("create-missing-agents", "--yes")
    assert result.exit_code == 0, result.output
    return ids


def recorded_agents(store):
    return {persona.id: persona.elevenlabs_agent_id for persona in store.with_agents()}


def execute(store, sql, **params):
    """Change the store the way an application would: plain SQL."""
    with store.engine.begin() as connection:
        connection.execute(text(sql), params)


def flip_traits(store, persona_id):
    """Move the persona to the opposite voice corner, so voice and stability both change."""
    hot_and_chatty = choose_voice(store.get(persona_id).spec()).name == "Bella"
    value = 0.1 if hot_and_chatty else 0.9
    execute(store, "UPDATE personas SET temper_level = :v, chattiness = :v WHERE id = :id", v=value, id=persona_id)


def plan_json():
    result = run("plan", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def planned(plan, action):
    return [(change["persona_id"], change["agent_id"]) for change in plan["changes"] if change["action"] == action]


def project_agents(sandbox):
    return [agent for agent in sandbox.agents() if PROJECT_TAG in agent["tags"]]


def test_edited_traits_are_planned_as_updates_and_applied_in_place(cli_env, store, sandbox, sandbox_client):
    ids = provisioned(store, 100)
    before = recorded_agents(store)
    edited = ids[3::10]
    for persona_id in edited:
        flip_traits(store, persona_id)
    service = ProvisioningService(store, sandbox_client, DEFAULT_VOICE_CATALOGUE)
    assert sorted(drifted_hashes(service.template, store.iter_personas())) == edited

    requests_before = len(sandbox.request_log())
    plan = plan_json()
    assert [(change["persona_id"], change["action"]) for change in plan["changes"]] == [(pid, "update") for pid in edited]
    assert planned(plan, "update") == [(pid, before[pid]) for pid in edited]
    assert plan["summary"]["in_sync"] == 90
    assert all("voice" in change["reason"] and "stability" in change["reason"] for change in plan["changes"])
    # One paginated list, never a GET per agent.
    assert {(r.method, r.path) for r in sandbox.request_log()[requests_before:]} == {("GET", "/v1/convai/agents")}
    assert "10 update; 90 in sync" in run("plan").output

    applied = run("apply")
    assert applied.exit_code == 0, applied.output
    assert "10 update; 0 failed" in applied.output
    assert recorded_agents(store) == before
    remote = {agent["agent_id"]: agent for agent in sandbox.agents()}
    assert len(remote) == 100
    for persona_id in edited:
        spec = store.get(persona_id).spec()
        tts = remote[before[persona_id]]["conversation_config"]["tts"]
        assert tts["voice_id"] == DEFAULT_VOICE_CATALOGUE[choose_voice(spec).name]
        assert tts["stability"] == voice_settings(spec)["stability"]
        assert remote[before[persona_id]]["conversation_config"]["agent"]["prompt"]["prompt"] == store.get(persona_id).conversation_prompt
    assert [event.action for event in store.history(edited[0])] == ["created", "updated"]

    assert plan_json()["changes"] == []
    assert "No changes: 100 persona(s) in sync." in run("plan").output
    assert drifted_hashes(service.template, store.iter_personas()) == {}


def test_lost_agents_are_replaced_and_orphans_deleted_but_foreign_agents_untouched(cli_env, store, sandbox):
    ids = provisioned(store, 20)
    before = recorded_agents(store)
    lost, gone = ids[:3], ids[-2:]
    for persona_id in lost:
        assert sandbox.delete_agent_directly(before[persona_id])
    execute(store, "DELETE FROM personas WHERE id IN (:a, :b)", a=gone[0], b=gone[1])
    # Someone else's agent, even one naming a persona, lacks the project tag and is never ours to touch.
    foreign_payload = agent_payload(store.get(ids[5]).spec())
    foreign_payload["tags"] = ["support", identity_tag(store.installation_id(), gone[0])]
    foreign_id = sandbox.create_agent_directly(foreign_payload)
    foreign = next(agent for agent in sandbox.agents() if agent["agent_id"] == foreign_id)

    plan = plan_json()
    assert planned(plan, "replace") == [(pid, before[pid]) for pid in lost]
    assert planned(plan, "delete") == [(pid, before[pid]) for pid in gone]
    assert len(plan["changes"]) == 5

    refused = run("apply")
    assert refused.exit_code == 1 and "pass --yes" in refused.output
    assert len(sandbox.agents()) == 20 - 3 + 1 and recorded_agents(store) == {pid: before[pid] for pid in ids if pid not in gone}

    applied = run("apply", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "2 delete, 3 replace; 0 failed" in applied.output
    after = recorded_agents(store)
    assert set(after) == set(ids) - set(gone)
    assert all(after[pid] != before[pid] for pid in lost)
    assert all(after[pid] == before[pid] for pid in set(after) - set(lost))
    ours = project_agents(sandbox)
    assert sorted(agent["agent_id"] for agent in ours) == sorted(after.values())
    assert [agent for agent in sandbox.agents() if agent["agent_id"] == foreign_id] == [foreign]
    assert [event.action for event in store.history(lost[0])] == ["created", "lost", "replaced"]
    [deleted] = [event for event in store.history(gone[0]) if event.action == "deleted"]
    assert deleted.agent_id == before[gone[0]] and "no longer exists" in deleted.reason

    assert plan_json()["changes"] == []


def test_unrecorded_agent_is_adopted_updated_and_its_duplicate_deleted(cli_env, store, sandbox):
    ids = provisioned(store, 3)
    persona_id = ids[1]
    original = recorded_agents(store)[persona_id]
    # A later agent carrying the same identity, and a store that forgot its agent (restored from a backup).
    duplicate = sandbox.create_agent_directly(agent_payload(store.get(persona_id).spec(), installation_id=store.installation_id()))
    execute(store, "UPDATE personas SET elevenlabs_agent_id = NULL, agent_config_hash = NULL WHERE id = :id", id=persona_id)
    flip_traits(store, persona_id)

    plan = plan_json()
    # Both were made within one second (the list's clock), so which one is kept is decided by agent id.
    [(_, kept)] = planned(plan, "adopt")
    [(_, dropped)] = planned(plan, "delete")
    assert {kept, dropped} == {original, duplicate} and len(plan["changes"]) == 2

    applied = run("apply", "--yes")
    assert applied.exit_code == 0, applied.output
    assert recorded_agents(store)[persona_id] == kept
    assert sorted(agent["agent_id"] for agent in project_agents(sandbox)) == sorted(recorded_agents(store).values())
    # Adoption brings the agent to the current traits, so nothing is left to update.
    [adopted] = [agent for agent in sandbox.agents() if agent["agent_id"] == kept]
    spec = store.get(persona_id).spec()
    assert adopted["conversation_config"]["tts"]["voice_id"] == DEFAULT_VOICE_CATALOGUE[choose_voice(spec).name]
    assert plan_json()["changes"] == []

    history = json.loads(run("history", str(persona_id), "--format", "json").output)
    assert [(row["action"], row["agent_id"]) for row in history] == [
        ("created", original),
        ("adopted", kept),
        ("deleted", dropped),
    ]
    assert all(row["at"].endswith("Z") and row["reason"] for row in history)
    text_history = run("history", str(persona_id)).output
    assert "adopted" in text_history and f"duplicate: persona {persona_id} keeps agent {kept}" in text_history


def test_invalid_personas_are_listed_and_never_acted_on(cli_env, store, sandbox):
    provisioned(store, 2)
    execute(store, "INSERT INTO personas (name, temper_level, chattiness, emotional_attachment) VALUES ('[b]Hot[/b]', 1.7, 0.5, 0.5)")
    plan = plan_json()
    assert [(change["action"], change["reason"]) for change in plan["changes"]] == [
        ("invalid", "temper_level is 1.7, outside 0..1")
    ]
    applied = run("apply", "--yes")
    assert applied.exit_code == 0 and "temper_level is 1.7, outside 0..1" in applied.output
    assert len(sandbox.agents()) == 2


def test_update_of_an_agent_deleted_meanwhile_replaces_it(store, sandbox, sandbox_client):
    [persona_id] = store.add_personas(demo_personas(1))
    service = ProvisioningService(store, sandbox_client, DEFAULT_VOICE_CATALOGUE)
    old = service.ensure_agent(persona_id).agent_id
    assert service.update_agent(persona_id).outcome is Outcome.PRESENT  # nothing changed, nothing sent
    flip_traits(store, persona_id)
    sandbox.delete_agent_directly(old)
    result = service.update_agent(persona_id)
    assert result.outcome is Outcome.REPLACED and result.agent_id != old
    assert [agent["agent_id"] for agent in sandbox.agents()] == [result.agent_id]


def test_history_of_an_unknown_persona_and_a_wrong_key_are_clear_errors(cli_env, store, monkeypatch):
    [persona_id] = store.add_personas(demo_personas(1))
    assert "No agent changes recorded for persona" in run("history", str(persona_id)).output
    unknown = run("history", "424242")
    assert unknown.exit_code == 1 and "persona 424242 does not exist" in unknown.output
    monkeypatch.setenv("ELEVENLABS_API_KEY", "definitely-wrong-key")
    for command in (["plan"], ["apply", "--yes"]):
        result = run(*command)
        assert result.exit_code == 1 and "definitely-wrong-key" not in result.output


def test_agents_recorded_without_a_config_hash_are_brought_to_the_policy(cli_env, store, sandbox):
    [persona_id] = provisioned(store, 1)
    agent_id = recorded_agents(store)[persona_id]
    execute(store, "UPDATE personas SET agent_config_hash = NULL WHERE id = :id", id=persona_id)
    [change] = plan_json()["changes"]
    assert (change["action"], change["agent_id"]) == ("update", agent_id)
    assert change["reason"].startswith("no config hash recorded")
    assert run("apply").exit_code == 0
    assert recorded_agents(store) == {persona_id: agent_id} and plan_json()["changes"] == []
