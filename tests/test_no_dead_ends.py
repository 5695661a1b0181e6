"""States that used to leave no way out: a deleted installation row, an invalid installation id, a
persona id past the integer range, a FIFO where the credentials file belongs."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from cli_helpers import run
from persona_agents_pipeline.config import ConfigurationError, load_api_key
from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.store import PersonaStore
from persona_agents_pipeline.identity import MAX_PERSONA_ID, PROJECT_TAG, identity_of


def one_line(result) -> str:
    return " ".join(result.output.split())


def test_a_deleted_installation_row_is_restored_with_its_id_and_leaves_no_claim(cli_env, store, sandbox):
    ids = store.add_personas(demo_personas(3))
    assert run("create-missing-agents", "--ids", f"{ids[0]}-{ids[1]}", "--yes").exit_code == 0
    installation_id = store.installation_id()
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM persona_agents_installation"))

    for command in (["plan"], ["create-missing-agents", "--yes"], ["db", "upgrade"]):
        result = run(*command)
        assert result.exit_code == (0 if command == ["db", "upgrade"] else 1), one_line(result)
        assert "installation adopt" in one_line(result), one_line(result)
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM personas WHERE agent_claim_owner IS NOT NULL "
                                       "OR agent_create_attempted_at IS NOT NULL")).scalar() == 0

    result = run("installation", "adopt")
    assert result.exit_code == 0 and f"installation {installation_id} again" in one_line(result), one_line(result)
    assert PersonaStore(store.database_url).installation_id() == installation_id
    assert run("apply", "--yes").exit_code == 0
    agents = [agent for agent in sandbox.agents() if PROJECT_TAG in agent["tags"]]
    assert sorted(identity_of(agent, installation_id) for agent in agents) == ids, "one agent per persona, all ours"


def test_an_installation_id_that_tags_cannot_carry_is_refused_before_any_agent_work(cli_env, store, sandbox):
    store.add_personas(demo_personas(3))
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE persona_agents_installation SET installation_id = 'Prod-EU'"))
    for command in (["create-missing-agents", "--yes"], ["plan"], ["apply", "--yes"]):
        result = run(*command)
        assert result.exit_code == 1, one_line(result)
        assert "'Prod-EU' is not valid" in one_line(result) and "installation_id = 'prodeu'" in one_line(result)
    assert sandbox.agents() == []


@pytest.mark.parametrize("persona_id", [2**31, MAX_PERSONA_ID, MAX_PERSONA_ID + 1, 10**30])
def test_a_persona_id_past_the_integer_range_is_no_persona(cli_env, store, persona_id):
    for command in (["personas", "edit", str(persona_id), "--name", "X"], ["personas", "delete", str(persona_id), "--yes"],
                    ["history", str(persona_id)], ["recreate-agent", str(persona_id), "--yes"]):
        result = run(*command)
        assert result.exit_code == 1 and f"persona {persona_id} does not exist" in one_line(result), (command, one_line(result))


@pytest.mark.timeout(30)
def test_a_fifo_at_the_credentials_path_is_refused_at_once(tmp_path, monkeypatch):
    fifo = tmp_path / "credentials"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigurationError, match="not a regular file"):
        load_api_key({"PERSONA_AGENTS_CREDENTIALS_FILE": str(fifo)})
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    monkeypatch.setenv("PERSONA_AGENTS_CREDENTIALS_FILE", str(fifo))
    monkeypatch.setenv("PERSONAS_DATABASE_URL", f"sqlite:///{tmp_path / 'personas.db'}")
    assert run("db", "upgrade").exit_code == 0
    result = run("plan")
    assert result.exit_code == 1 and "not a regular file" in one_line(result)
