"""The CLI end to end: real HTTP to the sandbox, a real SQLite file (and PostgreSQL where it answers)."""

import json
import os
import subprocess
import sys

from sqlalchemy import text

from cli_helpers import run, snapshot

from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.identity import identity_tag


def test_create_missing_agents_creates_each_once(cli_env, store, sandbox):
    ids = store.add_personas(demo_personas(50))
    first = run("create-missing-agents", "--yes")
    assert first.exit_code == 0, first.output
    assert "50 created" in first.output
    agents = sandbox.agents()
    assert len(agents) == 50
    recorded = {p.id: p.elevenlabs_agent_id for p in store.with_agents()}
    assert set(recorded) == set(ids)
    for agent in agents:
        persona_id = next(pid for pid, aid in recorded.items() if aid == agent["agent_id"])
        assert identity_tag(store.installation_id(), persona_id) in agent["tags"]
    persona = store.get(ids[0])
    assert persona.voice_id and persona.conversation_prompt and persona.agent_created_at
    assert set(persona.voice_settings) == {"stability", "similarity_boost", "style", "use_speaker_boost"}

    second = run("create-missing-agents", "--yes")
    assert second.exit_code == 0 and "nothing to do" in second.output
    assert len(sandbox.agents()) == 50


def test_create_missing_agents_for_selected_ids_leaves_the_others(cli_env, store, sandbox):
    ids = store.add_personas(demo_personas(6))
    result = run("create-missing-agents", "--yes", "--ids", f"{ids[0]},{ids[2]}-{ids[3]}")
    assert result.exit_code == 0, result.output
    assert "3 created" in result.output
    assert {persona.id for persona in store.with_agents()} == {ids[0], ids[2], ids[3]}
    again = run("create-missing-agents", "--yes", "--ids", f"{ids[0]}-{ids[3]}")
    assert again.exit_code == 0 and "1 created" in again.output
    assert len(sandbox.agents()) == 4


def test_create_missing_agents_refuses_unknown_or_malformed_ids_before_any_request(cli_env, store, sandbox):
    [persona_id] = store.add_personas(demo_personas(1))
    unknown = run("create-missing-agents", "--yes", "--ids", f"{persona_id},{persona_id + 5}")
    assert unknown.exit_code == 1 and f"no persona with id {persona_id + 5}; nothing was done" in unknown.output
    for bad, says in [("7-x", "not an id or a range"), ("9-3", "from low to high"), ("0", "from 1 upwards"),
                      ("1-2-3", "from low to high"), ("1-99999999999", "more than 1,000,000 ids")]:
        result = run("create-missing-agents", "--yes", "--ids", bad)
        assert result.exit_code == 2 and says in result.output, (bad, result.output)
    assert sandbox.stats()["requests_total"] == 0 and store.with_agents() == []


def test_recreate_agent_leaves_exactly_one_remote_agent(cli_env, store, sandbox):
    [persona_id] = store.add_personas(demo_personas(1))
    assert run("create-missing-agents", "--yes").exit_code == 0
    old = store.get(persona_id).elevenlabs_agent_id
    result = run("recreate-agent", str(persona_id), "--yes")
    assert result.exit_code == 0, result.output
    new = store.get(persona_id).elevenlabs_agent_id
    assert new != old
    assert [agent["agent_id"] for agent in sandbox.agents()] == [new]
    assert [event.action for event in store.history(persona_id)] == ["created", "recreated", "deleted"]


def test_invalid_personas_are_reported_and_untouched(cli_env, store, sandbox):
    good = store.add_personas(demo_personas(3))
    with store.engine.begin() as connection:
        connection.execute(text("INSERT INTO personas (name, temper_level, chattiness, emotional_attachment) VALUES ('Hot', 1.7, 0.5, 0.5)"))
        connection.execute(text("INSERT INTO personas (name, temper_level, chattiness, emotional_attachment) VALUES ('', 0.5, 0.5, 0.5)"))
    invalid_before = [row for row in snapshot(store) if row[0] not in good]
    result = run("create-missing-agents", "--yes")
    assert result.exit_code == 1
    assert "temper_level is 1.7, outside 0..1" in result.output
    assert "name is empty" in result.output
    assert "3 created" in result.output and "2 invalid" in result.output
    assert len(sandbox.agents()) == 3
    assert [row for row in snapshot(store) if row[0] not in good] == invalid_before


def test_wrong_key_gives_a_clear_authentication_error_and_writes_nothing(cli_env, store, sandbox, monkeypatch):
    store.add_personas(demo_personas(5))
    before = snapshot(store)
    monkeypatch.setenv("ELEVENLABS_API_KEY", "definitely-wrong-key")
    result = run("create-missing-agents", "--yes")
    assert result.exit_code == 1
    assert "Invalid API key" in result.output or "invalid_api_key" in result.output
    assert "definitely-wrong-key" not in result.output
    assert snapshot(store) == before
    assert sandbox.agents() == []


def test_missing_key_is_a_clear_error(cli_env, store, monkeypatch):
    store.add_personas(demo_personas(1))
    monkeypatch.delenv("ELEVENLABS_API_KEY")
    result = run("create-missing-agents", "--yes")
    assert result.exit_code == 1 and "ELEVENLABS_API_KEY" in result.output


def test_list_agent_status_in_every_format(cli_env, store):
    ids = store.add_personas(demo_personas(4))
    run("create-missing-agents", "--yes")
    store.add_personas(demo_personas(1, seed=99))
    rows = json.loads(run("list-agent-status", "--format", "json").output)
    assert [row["id"] for row in rows] == ids + [ids[-1] + 1]
    assert [row["status"] for row in rows] == ["active"] * 4 + ["missing"]
    csv_lines = run("list-agent-status", "--format", "csv").output.splitlines()
    assert csv_lines[0].startswith("id,name,status") and len(csv_lines) == 6
    table = run("list-agent-status").output
    assert "5 personas: 4 active, 1 missing" in table


def test_unknown_persona_is_a_clear_error(cli_env, store):
    result = run("recreate-agent", "424242")
    assert result.exit_code == 1 and "persona 424242 does not exist" in result.output


def test_test_connection_reports_missing_voices_and_ok(cli_env, sandbox, monkeypatch):
    ok = run("test-connection")
    assert ok.exit_code == 0, ok.output
    assert "Warning:" in ok.output and "Rachel" in ok.output  # a legacy voice is a warning, not a failure
    monkeypatch.setenv("PERSONA_AGENTS_VOICES", json.dumps({"Rachel": "no-such-voice"}))
    missing = run("test-connection")
    assert missing.exit_code == 1 and "no-such-voice" in missing.output


def test_import_csv_validates_every_row_first(cli_env, store, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("name,temper_level,chattiness,emotional_attachment,description\nAda,0.1,0.9,0.5,Warm\nBo,0.9,0.1,0.2,\n")
    assert run("personas", "import", str(good)).exit_code == 0
    assert store.count() == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("name,temper_level,chattiness,emotional_attachment\nCy,0.5,0.5,0.5\nDi,abc,0.5,0.5\n")
    result = run("personas", "import", str(bad))
    assert result.exit_code == 1 and "row 2 (Di): temper_level must be a number" in result.output
    assert store.count() == 2


def test_without_a_terminal_and_without_yes_it_refuses(cli_env, store, sandbox):
    store.add_personas(demo_personas(2))
    result = subprocess.run(
        [sys.executable, "-m", "persona_agents_pipeline.cli", "create-missing-agents"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env={**os.environ, **cli_env}, timeout=60,
    )
    assert result.returncode == 1
    assert "pass --yes" in result.stderr
    assert sandbox.agents() == [] and store.with_agents() == []
