"""The CLI around personas: edit and delete personas, confirm recreate-agent, say where the database and the
key were looked for, --version, the recorded voice in list-agent-status. Real SQLite/PostgreSQL, the sandbox."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from cli_helpers import run, snapshot

from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.voice_policy import choose_voice


def cli(*args, env: dict[str, str], cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The CLI as a separate process: a real stdin (not a terminal), cwd and environment."""
    return subprocess.run([sys.executable, "-m", "persona_agents_pipeline.cli", *args], input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def in_terminal(*args, answer: str, env: dict[str, str]) -> tuple[int, str]:
    """The CLI as a separate process whose stdin is a real (pseudo) terminal, answering its question."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "persona_agents_pipeline.cli", *args], stdin=terminal,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    os.close(terminal)
    os.write(controller, answer.encode() + b"\n")
    output, _ = process.communicate(timeout=60)
    os.close(controller)
    return process.returncode, output


@pytest.fixture
def with_agent(cli_env, store, sandbox):
    [persona_id] = store.add_personas([{"name": "Ada", "temper_level": 0.1, "chattiness": 0.9, "emotional_attachment": 0.5}])
    assert run("create-missing-agents", "--yes").exit_code == 0
    return persona_id


def test_edit_changes_the_traits_and_points_to_the_agent_update(with_agent, store, sandbox):
    agent_id = store.get(with_agent).elevenlabs_agent_id
    result = run("personas", "edit", str(with_agent), "--chattiness", "0.2", "--description", "Quiet now")
    assert result.exit_code == 0, result.output
    persona = store.get(with_agent)
    assert (persona.chattiness, persona.description, persona.temper_level) == (0.2, "Quiet now", 0.1)
    assert f"agent {agent_id} was built from the old traits" in result.output and "persona-agents apply" in result.output
    assert [agent["agent_id"] for agent in sandbox.agents()] == [agent_id], "edit makes no API call"


@pytest.mark.parametrize("args, message", [
    (["--chattiness", "1.5"], "chattiness is 1.5, outside 0..1"),
    (["--name", "   "], "name is empty"),
    (["--temper-level", "nan"], "temper_level"),
    ([], "nothing to change"),
])
def test_edit_with_a_bad_value_changes_nothing(with_agent, store, args, message):
    before = snapshot(store)
    result = run("personas", "edit", str(with_agent), *args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert snapshot(store) == before


def test_edit_of_an_unknown_persona_or_a_non_number_is_refused(cli_env, store):
    store.add_personas(demo_personas(2))
    before = snapshot(store)
    unknown = run("personas", "edit", "424242", "--chattiness", "0.5")
    assert unknown.exit_code == 1 and "persona 424242 does not exist" in unknown.output
    not_a_number = run("personas", "edit", "1", "--chattiness", "loud")
    assert not_a_number.exit_code == 2 and "'loud' is not a valid float" in not_a_number.output
    assert snapshot(store) == before


def test_delete_says_what_happens_to_the_agent_and_deletes_it_first(with_agent, cli_env, store, sandbox):
    agent_id = store.get(with_agent).elevenlabs_agent_id
    code, output = in_terminal("personas", "delete", str(with_agent), answer="n", env={**os.environ, **cli_env})
    assert code == 1 and f"Its agent {agent_id} is deleted from ElevenLabs first" in output and "nothing was changed" in output
    assert store.get(with_agent) is not None and len(sandbox.agents()) == 1

    deleted = run("personas", "delete", str(with_agent), "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert store.get(with_agent) is None and sandbox.agents() == []
    assert [event.action for event in store.history(with_agent)][-1] == "deleted", "the history outlives the persona"


def test_delete_without_a_terminal_refuses_and_keeps_everything(with_agent, cli_env, store, sandbox):
    before = snapshot(store)
    result = cli("personas", "delete", str(with_agent), env={**os.environ, **cli_env})
    assert result.returncode == 1 and "pass --yes" in result.stderr
    assert snapshot(store) == before and len(sandbox.agents()) == 1


def test_delete_keeps_the_persona_when_its_agent_cannot_be_deleted(with_agent, store, sandbox, monkeypatch):
    before = snapshot(store)
    monkeypatch.setenv("ELEVENLABS_API_KEY", "wrong-key-for-delete")
    result = run("personas", "delete", str(with_agent), "--yes")
    assert result.exit_code == 1 and "wrong-key-for-delete" not in result.output
    assert snapshot(store) == before and len(sandbox.agents()) == 1


def test_delete_refuses_while_an_agent_is_being_created(cli_env, store, sandbox):
    [persona_id] = store.add_personas(demo_personas(1))
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE personas SET agent_claim_owner = 'other-process', "
                                "agent_claim_expires_at = :until WHERE id = :id"),
                           {"until": "2999-01-01 00:00:00", "id": persona_id})
    before = snapshot(store)
    result = run("personas", "delete", str(persona_id), "--yes")
    assert result.exit_code == 1 and "being created" in result.output
    assert snapshot(store) == before


def test_delete_of_a_persona_without_agent_needs_no_key(cli_env, store, monkeypatch):
    [persona_id] = store.add_personas(demo_personas(1))
    monkeypatch.delenv("ELEVENLABS_API_KEY")
    result = run("personas", "delete", str(persona_id), "--yes")
    assert result.exit_code == 0 and f"Deleted persona {persona_id}." in result.output and store.get(persona_id) is None


def test_recreate_agent_confirms_and_refuses_without_a_terminal(with_agent, cli_env, store, sandbox):
    old = store.get(with_agent).elevenlabs_agent_id
    refused = cli("recreate-agent", str(with_agent), env={**os.environ, **cli_env})
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    env = {**os.environ, **cli_env}
    code, output = in_terminal("recreate-agent", str(with_agent), answer="n", env=env)
    assert code == 1 and f"then its current agent {old} is deleted" in " ".join(output.split())
    assert store.get(with_agent).elevenlabs_agent_id == old and [a["agent_id"] for a in sandbox.agents()] == [old]

    code, output = in_terminal("recreate-agent", str(with_agent), answer="y", env=env)
    assert code == 0, output
    assert [a["agent_id"] for a in sandbox.agents()] == [store.get(with_agent).elevenlabs_agent_id] != [old]


def test_outside_the_project_it_says_where_it_looked_and_creates_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERSONAS_", "PERSONA_AGENTS_"))}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli("list-agent-status", env=env, cwd=elsewhere)
    assert result.returncode == 1
    message = result.stderr.replace("\n", "")  # rich wraps at the terminal width
    assert str(elsewhere / ".persona-agents" / "personas.db") in message
    assert "persona-agents db upgrade" in message and "no such table" not in message
    assert list(elsewhere.iterdir()) == [], "no empty .persona-agents left behind"


def test_a_database_without_the_table_asks_for_db_upgrade(tmp_path, monkeypatch):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    monkeypatch.setenv("PERSONAS_DATABASE_URL", f"sqlite:///{empty}")
    result = run("list-agent-status")
    assert result.exit_code == 1 and "has no personas table" in result.output and "db upgrade" in result.output


def test_test_connection_without_a_key_says_where_keys_are_read_from(cli_env, monkeypatch):
    monkeypatch.delenv("ELEVENLABS_API_KEY")
    result = run("test-connection")
    assert result.exit_code == 1
    text_ = " ".join(result.output.split())
    assert "No ElevenLabs API key is set" in text_ and "ELEVENLABS_API_KEY" in text_
    assert cli_env["PERSONA_AGENTS_CREDENTIALS_FILE"] in text_.replace(" ", "") or "does not exist" in text_
    assert "rejected" not in text_ and "explicitly" not in text_


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and result.output.startswith("persona-agents, version ")


def test_list_agent_status_shows_the_recorded_voice_and_marks_a_difference(with_agent, store):
    recorded = choose_voice(store.get(with_agent).spec()).name  # Rachel: calm and chatty
    [other] = store.add_personas(demo_personas(1))
    assert run("personas", "edit", str(with_agent), "--temper-level", "0.9").exit_code == 0
    wanted = choose_voice(store.get(with_agent).spec()).name
    assert wanted != recorded

    rows = {row["id"]: row for row in json.loads(run("list-agent-status", "--format", "json").output)}
    assert (rows[with_agent]["voice"], rows[with_agent]["wanted_voice"], rows[with_agent]["voice_differs"]) == (recorded, wanted, True)
    assert (rows[other]["voice"], rows[other]["voice_differs"]) == ("", False), "no agent, no recorded voice"
    table = run("list-agent-status").output
    assert f"{recorded}*>{wanted}" in table and "1 agent(s) have a voice their traits no longer produce" in table


def test_test_connection_needs_no_persona_database(cli_env, tmp_path, monkeypatch):
    nowhere = tmp_path / "not-here" / "personas.db"
    monkeypatch.setenv("PERSONAS_DATABASE_URL", f"sqlite:///{nowhere}")
    result = run("test-connection")
    assert result.exit_code == 0, result.output
    assert not nowhere.parent.exists()
