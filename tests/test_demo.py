"""`persona-agents demo` (what `make demo` runs): the main job end to end on the embedded default."""

import dagster as dg
from click.testing import CliRunner

from persona_agents_pipeline.cli import main
from persona_agents_pipeline.defs.assets import persona_agent
from persona_agents_pipeline.store import PersonaStore


def test_demo_provisions_demo_personas_through_dagster_and_is_idempotent(tmp_path, monkeypatch):
    for name in ("PERSONAS_DATABASE_URL", "ELEVENLABS_BASE_URL", "ELEVENLABS_API_KEY", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PERSONA_AGENTS_DATA_DIR", str(tmp_path / "data"))

    first = CliRunner().invoke(main, ["demo", "--personas", "6"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "Status: 6 active" in first.output
    # The last two lines are one copy-paste block opening the demo's instance, unbroken at 80 columns.
    home = (tmp_path / "data" / "dagster_home").resolve()
    assert first.output.rstrip().splitlines()[-2:] == [f"export DAGSTER_HOME={home}", ".venv/bin/dagster dev"]

    store = PersonaStore(f"sqlite:///{tmp_path / 'data' / 'personas.db'}")
    agent_ids = {p.id: p.elevenlabs_agent_id for p in store.with_agents()}
    assert len(agent_ids) == 6 and all(agent_ids.values())
    with dg.DagsterInstance.from_config(str(tmp_path / "data" / "dagster_home")) as instance:
        assert instance.get_materialized_partitions(persona_agent.key) == {str(pid) for pid in agent_ids}

    # A second demo seeds nothing, creates nothing, and still reports every persona active.
    second = CliRunner().invoke(main, ["demo", "--personas", "6"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert "Seeded" not in second.output and "The sandbox holds 6 agents." in second.output
    assert {p.id: p.elevenlabs_agent_id for p in store.with_agents()} == agent_ids
