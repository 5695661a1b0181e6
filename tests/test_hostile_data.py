"""Hostile and legacy data: markup and terminal escapes in names, CSV formulas, CSV fidelity,
legacy agent ids and voice settings, malformed identity tags on remote agents."""

import csv
import io

import pytest
from sqlalchemy import create_engine, text
from cli_helpers import run

from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.store import PersonaStore
from persona_agents_pipeline.identity import PROJECT_TAG, parse_identity_tag
from persona_agents_pipeline.voice_policy import agent_payload

HEADER = "name,temper_level,chattiness,emotional_attachment"


def execute(store, sql, **params):
    with store.engine.begin() as connection:
        connection.execute(text(sql), params)


def test_names_with_markup_and_escapes_are_shown_as_written(cli_env, store, sandbox):
    store.add_personas([{"name": name, "temper_level": 0.5, "chattiness": 0.5, "emotional_attachment": 0.5}
                        for name in ("[/]", "Bob [red]x", "=HYPERLINK(\"http://evil\")", "-2+3")])
    # The application wrote a name our validation would refuse: ESC sequences retitling the terminal.
    execute(store, "INSERT INTO personas (name, temper_level, chattiness, emotional_attachment) "
                   "VALUES (:name, 0.5, 0.5, 0.5)", name="Eve\x1b]0;pwned\x07\x1b[2J")

    created = run("create-missing-agents", "--yes")
    assert len(sandbox.agents()) == 4, created.output
    assert "[/]" in created.output and "Bob [red]x" in created.output
    assert "\x1b" not in created.output and "\x07" not in created.output

    table = run("list-agent-status").output
    assert "Bob [red]x" in table and "\x1b" not in table and "Eve\\x1b]0;pwned" in table
    rows = list(csv.DictReader(io.StringIO(run("list-agent-status", "--format", "csv").output)))
    names = [row["name"] for row in rows]
    assert "'=HYPERLINK(\"http://evil\")" in names and "'-2+3" in names
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())
    assert not any("\x1b" in cell for row in rows for cell in row.values())


def test_an_import_path_with_markup_imports_and_says_so(cli_env, store, tmp_path):
    folder = tmp_path / "[bold]" / "[/d]"
    folder.mkdir(parents=True)
    path = folder / "people.csv"
    path.write_text(f"{HEADER}\nAda,0.5,0.5,0.5\n")
    result = run("personas", "import", str(path))
    assert result.exit_code == 0 and store.count() == 1
    # Printed literally, not read as markup; rich may fold the long path anywhere, so compare without whitespace.
    assert str(path) in "".join(result.output.split())


def test_csv_names_are_text_and_unknown_columns_are_warned_about(cli_env, store, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(f"{HEADER},descripton\nNA,0.5,0.5,0.5,x\nNone,0.5,0.5,0.5,x\nnull,0.5,0.5,0.5,x\n")
    result = run("personas", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "unknown column(s) descripton" in " ".join(result.output.split())
    assert [persona.name for persona in store.iter_personas()] == ["NA", "None", "null"]


LEGACY_TABLE = (
    "CREATE TABLE personas (id INTEGER PRIMARY KEY, name VARCHAR(255), temper_level FLOAT, chattiness FLOAT, "
    "emotional_attachment FLOAT, description TEXT, elevenlabs_agent_id VARCHAR(64), voice_settings TEXT)"
)


def legacy_database(url, rows):
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(LEGACY_TABLE))
        for row in rows:
            connection.execute(text("INSERT INTO personas VALUES (:id, 'P', 0.5, 0.5, 0.5, NULL, :agent, :settings)"), row)
    engine.dispose()


def test_upgrade_clears_blank_agent_ids_and_names_shared_ones(database_url, monkeypatch):
    monkeypatch.setenv("PERSONAS_DATABASE_URL", database_url)
    legacy_database(database_url, [
        {"id": 1, "agent": "", "settings": None}, {"id": 2, "agent": "agent_a", "settings": None},
        {"id": 3, "agent": "agent_a", "settings": None}, {"id": 4, "agent": "agent_b", "settings": None},
    ])
    refused = run("db", "upgrade")
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "agent agent_a is recorded by personas 2, 3" in " ".join(refused.output.split())
    engine = create_engine(database_url)
    with engine.connect() as connection:  # nothing changed, not even the blank id
        assert connection.execute(text("SELECT elevenlabs_agent_id FROM personas WHERE id = 1")).scalar() == ""
    with engine.begin() as connection:
        connection.execute(text("UPDATE personas SET elevenlabs_agent_id = NULL WHERE id = 3"))
    engine.dispose()

    assert run("db", "upgrade").exit_code == 0
    store = PersonaStore(database_url)
    assert {p.id: p.elevenlabs_agent_id for p in store.iter_personas()} == {1: None, 2: "agent_a", 3: None, 4: "agent_b"}
    store.engine.dispose()


def test_legacy_yaml_voice_settings_do_not_break_status_or_plan(cli_env, sqlite_url, monkeypatch, sandbox):
    monkeypatch.setenv("PERSONAS_DATABASE_URL", sqlite_url.replace("personas.db", "legacy.db"))
    url = sqlite_url.replace("personas.db", "legacy.db")
    legacy_database(url, [{"id": 1, "agent": None, "settings": "---\nstability: 0.5\n:style: 0.2\n"}])
    assert run("db", "upgrade").exit_code == 0
    status = run("list-agent-status", "--format", "json")
    assert status.exit_code == 0 and '"missing"' in status.output
    assert run("plan").exit_code == 0


@pytest.mark.parametrize("tag", ["persona:\u00b2", "persona:99999999999999999999", "persona:0001", "persona:-1", "persona:"])
def test_malformed_identity_tags_are_nobodys(cli_env, store, sandbox, tag):
    ids = store.add_personas(demo_personas(2))
    assert run("create-missing-agents", "--yes").exit_code == 0
    assert parse_identity_tag(f"{PROJECT_TAG}:{store.installation_id()}:{tag.split(':')[1]}") is None
    payload = agent_payload(store.get(ids[0]).spec())
    payload["tags"] = [PROJECT_TAG, f"{PROJECT_TAG}:{store.installation_id()}:{tag.split(':')[1]}", f"{PROJECT_TAG}:{tag}"]
    odd = sandbox.create_agent_directly(payload)
    plan = run("plan", "--format", "json")
    assert plan.exit_code == 0 and '"changes": []' in plan.output
    assert run("apply", "--yes").exit_code == 0
    assert odd in {agent["agent_id"] for agent in sandbox.agents()}
