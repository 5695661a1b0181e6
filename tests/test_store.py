from datetime import timedelta

import pytest
from sqlalchemy import create_engine, inspect, text

from persona_agents_pipeline.store import PersonaStore
from persona_agents_pipeline.persona_validation import InvalidPersonaError

AGENT_COLUMNS = {"elevenlabs_agent_id", "voice_id", "conversation_prompt", "voice_settings", "agent_created_at"}
LEGACY_TABLE = """
CREATE TABLE personas (
    id INTEGER PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    temper_level FLOAT,
    chattiness FLOAT,
    emotional_attachment FLOAT,
    description TEXT
)
"""


def _persona(name="Ada", temper=0.5, chat=0.5, emo=0.5, description=None):
    return {"name": name, "temper_level": temper, "chattiness": chat, "emotional_attachment": emo, "description": description}


def test_upgrade_adds_agent_columns_to_a_legacy_table_and_keeps_every_row(database_url):
    legacy = create_engine(database_url)
    rows = [(1, "Ada", 0.1, 0.9, 0.3, "first"), (2, "Bo", 0.8, 0.2, 0.6, None), (7, "Cy", 0.5, 0.5, 0.5, "third")]
    with legacy.begin() as connection:
        connection.execute(text(LEGACY_TABLE))
        for row in rows:
            connection.execute(text("INSERT INTO personas VALUES (:a, :b, :c, :d, :e, :f)"), dict(zip("abcdef", row)))

    store = PersonaStore(database_url)
    assert store.upgrade() == ["0005_budget_tables"]
    columns = {column["name"] for column in inspect(store.engine).get_columns("personas")}
    assert AGENT_COLUMNS <= columns
    with legacy.connect() as connection:
        kept = connection.execute(
            text("SELECT id, name, temper_level, chattiness, emotional_attachment, description FROM personas ORDER BY id")
        ).all()
    assert [tuple(row) for row in kept] == rows
    assert {persona.id for persona in store.without_agents()} == {1, 2, 7}

    assert store.upgrade() == []  # a second run is a no-op
    with legacy.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM personas")).scalar() == 3
    legacy.dispose()
    store.engine.dispose()


def test_upgrade_creates_the_table_on_an_empty_database(store):
    columns = {column["name"] for column in inspect(store.engine).get_columns("personas")}
    assert {"id", "name", "temper_level", "chattiness", "emotional_attachment", "description"} | AGENT_COLUMNS <= columns
    assert store.upgrade() == []


def test_scopes_and_has_agent(store):
    first, second = store.add_personas([_persona("Ada"), _persona("Bo")])
    assert store.try_claim(first, "me", timedelta(minutes=1)).acquired
    assert store.record_agent(
        first, "me", agent_id="agent_x", voice_id="v", conversation_prompt="p", voice_settings={"stability": 0.6},
        config_hash="h", action="created", reason="test",
    )
    assert [p.id for p in store.with_agents()] == [first]
    assert [p.id for p in store.without_agents()] == [second]
    assert store.get(first).has_elevenlabs_agent and not store.get(second).has_elevenlabs_agent
    assert store.get(first).voice_settings == {"stability": 0.6}
    assert [event.action for event in store.history(first)] == ["created"]


def test_a_live_claim_excludes_others_and_an_expired_one_is_taken_over(store):
    [persona_id] = store.add_personas([_persona()])
    assert store.try_claim(persona_id, "a", timedelta(minutes=5)).acquired
    assert not store.try_claim(persona_id, "b", timedelta(minutes=5)).acquired
    store.release_claim(persona_id, "a", create_may_have_happened=True)
    assert store.try_claim(persona_id, "b", timedelta(seconds=-1)).acquired  # already expired lease
    taken_over = store.try_claim(persona_id, "c", timedelta(minutes=5))
    assert taken_over.acquired
    # The create marker survives the takeover, so the new owner knows to look for an agent to adopt.
    assert taken_over.persona.agent_create_attempted_at is not None


def test_a_caller_that_lost_its_claim_cannot_record(store):
    [persona_id] = store.add_personas([_persona()])
    store.try_claim(persona_id, "slow", timedelta(seconds=-1))
    store.try_claim(persona_id, "fast", timedelta(minutes=5))
    assert not store.record_agent(
        persona_id, "slow", agent_id="agent_slow", voice_id="v", conversation_prompt="p", voice_settings={},
        config_hash="h", action="created", reason="test",
    )
    assert store.get(persona_id).elevenlabs_agent_id is None


def test_change_log_records_inserts_trait_edits_and_deletes_but_not_agent_writes(store):
    start = store.latest_change_seq()
    first, second = store.add_personas([_persona("Ada"), _persona("Bo")])
    store.try_claim(first, "me", timedelta(minutes=1))
    store.record_agent(
        first, "me", agent_id="agent_1", voice_id="v", conversation_prompt="p", voice_settings={},
        config_hash="h", action="created", reason="test",
    )
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE personas SET chattiness = 0.9 WHERE id = :id"), {"id": first})
        connection.execute(text("UPDATE personas SET chattiness = 0.9 WHERE id = :id"), {"id": first})  # unchanged
        connection.execute(text("DELETE FROM personas WHERE id = :id"), {"id": second})
    changes = [(change.persona_id, change.change) for change in store.changes_since(start)]
    assert changes == [(first, "insert"), (second, "insert"), (first, "update"), (second, "delete")]
    assert store.changes_since(store.latest_change_seq()) == []


def test_add_personas_is_all_or_nothing(store):
    with pytest.raises(InvalidPersonaError, match="row 2 .*chattiness"):
        store.add_personas([_persona("Ok"), _persona("Bad", chat=3)])
    assert store.count() == 0


def test_iter_personas_streams_every_row_in_order(store):
    ids = store.add_personas([_persona(f"P{n}") for n in range(23)])
    assert [persona.id for persona in store.iter_personas(batch_size=5)] == ids


def test_repr_hides_the_database_password():
    store = PersonaStore("postgresql://user:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in repr(store)


def test_an_application_table_named_like_the_change_log_is_left_alone(database_url):
    app = create_engine(database_url)
    with app.begin() as connection:
        connection.execute(text("CREATE TABLE persona_changes (id INTEGER PRIMARY KEY, note VARCHAR(20))"))
        connection.execute(text("CREATE TABLE agent_events (id INTEGER PRIMARY KEY, note VARCHAR(20))"))
        connection.execute(text("INSERT INTO persona_changes VALUES (1, 'ours')"))
    store = PersonaStore(database_url)
    assert store.upgrade() == ["0005_budget_tables"]
    [persona_id] = store.add_personas([{"name": "Ada", "temper_level": 0.5, "chattiness": 0.5, "emotional_attachment": 0.5}])
    assert [change.persona_id for change in store.changes_since(0)] == [persona_id]
    with app.connect() as connection:
        assert connection.execute(text("SELECT id, note FROM persona_changes")).all() == [(1, "ours")]
    store.engine.dispose()
    app.dispose()


def test_an_installation_from_before_the_namespaced_tables_keeps_its_history(sqlite_url):
    from persona_agents_pipeline.models import Persona

    old = create_engine(sqlite_url)
    Persona.__table__.create(old)
    with old.begin() as connection:  # what the first release's migration left behind
        for statement in (
            "CREATE TABLE persona_changes (seq INTEGER PRIMARY KEY, persona_id INTEGER NOT NULL, change VARCHAR(16) NOT NULL, changed_at DATETIME)",
            "CREATE TABLE agent_events (id INTEGER PRIMARY KEY, persona_id INTEGER NOT NULL, agent_id VARCHAR(64), action VARCHAR(16) NOT NULL, reason TEXT, at DATETIME NOT NULL)",
            "CREATE INDEX ix_agent_events_persona_id ON agent_events (persona_id)",
            "CREATE TRIGGER persona_changes_on_insert AFTER INSERT ON personas BEGIN INSERT INTO persona_changes (persona_id, change) VALUES (NEW.id, 'insert'); END",
            "INSERT INTO agent_events (persona_id, agent_id, action, reason, at) VALUES (1, 'agent_x', 'created', 'old', '2025-01-01')",
            "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
            "INSERT INTO alembic_version VALUES ('0001_agent_columns')",
        ):
            connection.execute(text(statement))
    old.dispose()
    store = PersonaStore(sqlite_url)
    assert store.upgrade() == ["0005_budget_tables"]
    assert [(event.agent_id, event.reason) for event in store.history(1)] == [("agent_x", "old")]
    [persona_id] = store.add_personas([{"name": "Bo", "temper_level": 0.5, "chattiness": 0.5, "emotional_attachment": 0.5}])
    assert [change.persona_id for change in store.changes_since(0)] == [persona_id]
    with store.engine.connect() as connection:  # our revision moved out of the shared `alembic_version`
        assert "alembic_version" not in inspect(connection).get_table_names()
    store.engine.dispose()


def test_the_applications_own_alembic_history_is_left_alone(sqlite_url):
    app = create_engine(sqlite_url)
    with app.begin() as connection:  # an application that runs Alembic itself
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        connection.execute(text("INSERT INTO alembic_version VALUES ('app_rev_42')"))
    store = PersonaStore(sqlite_url)
    assert store.upgrade() == ["0005_budget_tables"]
    assert store.upgrade() == []
    with app.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["app_rev_42"]
        assert connection.execute(text("SELECT version_num FROM persona_agents_alembic_version")).scalar() == "0005_budget_tables"
    store.engine.dispose()
    app.dispose()
