"""SQLite hands a deleted persona's id to the next insert unless the table says AUTOINCREMENT. Tables the
project creates never reuse ids; in an application's own `personas` table a persona given an earlier one's
id starts a fresh history and never takes the earlier persona's agent for its own."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.elevenlabs.client import ElevenLabsClient
from persona_agents_pipeline.provisioning import ProvisioningService
from persona_agents_pipeline.reconcile import Action, apply_plan, build_plan
from persona_agents_pipeline.store import PersonaStore
from persona_agents_pipeline.identity import PROJECT_TAG, identity_of
from persona_agents_pipeline.voice_policy import DEFAULT_VOICE_CATALOGUE

APPLICATION_TABLE = """
CREATE TABLE personas (
    id INTEGER PRIMARY KEY, name VARCHAR(255) NOT NULL, temper_level FLOAT, chattiness FLOAT,
    emotional_attachment FLOAT, description TEXT
)
"""
INSERT = "INSERT INTO personas (name, temper_level, chattiness, emotional_attachment) VALUES ('New', 0.9, 0.9, 0.5)"


def test_tables_the_project_creates_never_hand_out_an_id_twice(store):
    ids = store.add_personas(demo_personas(3))
    store.delete_persona(ids[-1])
    [new_id] = store.add_personas(demo_personas(1))
    assert new_id > ids[-1]
    if store.dialect == "sqlite":
        with store.engine.connect() as connection:
            seq_before = connection.execute(text("SELECT max(seq) FROM persona_agents_changes")).scalar()
            connection.execute(text("DELETE FROM persona_agents_changes WHERE seq = :s"), {"s": seq_before})
            connection.execute(text(INSERT.replace("'New'", "'Newer'")))
            assert connection.execute(text("SELECT max(seq) FROM persona_agents_changes")).scalar() > seq_before
            connection.rollback()


def test_a_persona_given_an_earlier_ones_id_starts_afresh_and_never_takes_its_agent(sqlite_url, sandbox):
    with create_engine(sqlite_url).begin() as connection:
        connection.execute(text(APPLICATION_TABLE))
    store = PersonaStore(sqlite_url)
    store.upgrade()
    service = ProvisioningService(store, ElevenLabsClient("sandbox-test-key", sandbox.url), DEFAULT_VOICE_CATALOGUE)
    ids = store.add_personas(demo_personas(2))
    assert all(result.ok for result in service.provision_many(ids))
    earlier_agent = store.get(ids[1]).elevenlabs_agent_id

    # The application deletes its persona itself (the agent stays behind), then adds another: same id.
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM personas WHERE id = :id"), {"id": ids[1]})
        connection.execute(text(INSERT))
    assert store.get(ids[1]).name == "New", "precondition: SQLite reused the id"
    assert store.history(ids[1]) == []

    # Neither the plan nor a search for a lost create takes the earlier persona's agent.
    plan = build_plan(service)
    assert [(change.action, change.agent_id) for change in plan.changes] == [(Action.DELETE, earlier_agent),
                                                                          (Action.CREATE, None)]
    result = service.ensure_agent(ids[1], adopt_existing=True)
    assert result.ok and result.agent_id != earlier_agent
    assert all(change.ok for change in apply_plan(service, build_plan(service)))

    live = [agent for agent in sandbox.agents() if PROJECT_TAG in agent["tags"]]
    assert sorted(identity_of(agent, service.installation_id) for agent in live) == ids, "one live agent each"
    assert earlier_agent not in {agent["agent_id"] for agent in live}
    # Its history is its own; the clean-up of the earlier persona's agent is noted with why.
    history = {(event.action, event.agent_id): event.reason for event in store.history(ids[1])}
    assert set(history) == {("created", store.get(ids[1]).elevenlabs_agent_id), ("deleted", earlier_agent)}
    assert "earlier persona" in history[("deleted", earlier_agent)]
    store.engine.dispose()
