"""A copy of the database on the same ElevenLabs account (staging restored from production's backup):
it refuses destructive and adopting work until told which installation it is, production's agents stay
exactly as they were, and after `db upgrade --new-installation` the copy manages agents of its own."""

from __future__ import annotations

import copy
import shutil
import sqlite3
import subprocess
import uuid

import dagster as dg
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from persona_agents_pipeline.cli import main
from persona_agents_pipeline.config import Settings
from persona_agents_pipeline.defs.resources import ElevenLabsResource, PersonaStoreResource, provisioning_service
from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.installation import InstallationError
from persona_agents_pipeline.provisioning import ProvisioningService
from persona_agents_pipeline.store import PersonaStore
from persona_agents_pipeline.identity import identity_of

from conftest import POSTGRES_URL

COPY_REFUSED = "this database looks like a copy"


def cli(env, *args):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def environment(url, sandbox, tmp_path):
    return {
        "PERSONAS_DATABASE_URL": url,
        "ELEVENLABS_BASE_URL": sandbox.url,
        "ELEVENLABS_API_KEY": "sandbox-test-key",
        "ELEVENLABS_MAX_CONCURRENT": "4",
        "PERSONA_AGENTS_BUDGET_URL": "off",
        "PERSONA_AGENTS_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }


def agents_of(sandbox, installation_id):
    """The installation's agents on the account, whole, so any change to any field shows."""
    return {agent["agent_id"]: copy.deepcopy(agent) for agent in sandbox.agents() if identity_of(agent, installation_id)}


def sqlite_copy(production_url, tmp_path):
    """`cp` of the file, after a checkpoint has moved everything from the write-ahead log into it."""
    staging, original = tmp_path / "staging.db", make_url(production_url).database
    with sqlite3.connect(original) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(original, staging)
    yield f"sqlite:///{staging}"


def postgres_copy(production_url, _tmp_path):
    """`pg_dump | psql` of production's schema into a new database of its own, dropped afterwards."""
    if not (shutil.which("pg_dump") and shutil.which("psql")):
        pytest.skip("pg_dump and psql are needed for a PostgreSQL copy and are not installed")
    url = make_url(production_url)
    schema = url.query["options"].split("=", 1)[1]
    database = f"staging_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {database}"))
    connect = ["-h", url.host, "-p", str(url.port or 5432), "-U", url.username]
    try:
        dump = subprocess.run(["pg_dump", *connect, "-n", schema, url.database], check=True, capture_output=True)
        subprocess.run(["psql", *connect, "-q", "-v", "ON_ERROR_STOP=1", database], input=dump.stdout, check=True,
                       capture_output=True)
        yield url.set(database=database).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def production_and_copy(request, tmp_path, sandbox):
    """Production with an agent for each of four personas, and a copy of its database as staging."""
    production_url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    production = PersonaStore(production_url)
    production.upgrade()
    env = environment(production_url, sandbox, tmp_path)
    production.add_personas(demo_personas(4))
    assert cli(env, "create-missing-agents", "--yes").exit_code == 0
    copies = sqlite_copy if request.param == "sqlite" else postgres_copy
    for staging_url in copies(production_url, tmp_path):
        yield env, environment(staging_url, sandbox, tmp_path), production


def test_a_copy_refuses_every_destructive_and_adopting_operation_until_told(production_and_copy, sandbox):
    production_env, staging_env, production = production_and_copy
    installation_id = production.installation_id()
    before = agents_of(sandbox, installation_id)
    assert len(before) == 4

    # A restored copy is usually upgraded first: that says what it is, at once.
    upgraded = cli(staging_env, "db", "upgrade")
    assert upgraded.exit_code == 0 and COPY_REFUSED in " ".join(upgraded.output.split())
    # On the copy: an edit (a row change, allowed), then everything that would act on the agents.
    edited = cli(staging_env, "personas", "edit", "1", "--name", "Staging Name", "--temper-level", "0.99")
    assert edited.exit_code == 0, edited.output
    with PersonaStore(staging_env["PERSONAS_DATABASE_URL"]).engine.begin() as connection:
        connection.execute(text("DELETE FROM personas WHERE id = 4"))  # its agent would be an orphan to delete
    for command in (["apply", "--yes"], ["plan"], ["personas", "delete", "2", "--yes"], ["recreate-agent", "3", "--yes"],
                    ["create-missing-agents", "--yes"]):
        result = cli(staging_env, *command)
        assert result.exit_code == 1 and COPY_REFUSED in " ".join(result.output.split()), (command, result.output)
    # The Python API and Dagster go through the same gate.
    with pytest.raises(InstallationError, match=COPY_REFUSED):
        ProvisioningService.from_settings(Settings.from_env(staging_env))
    resources = (PersonaStoreResource(database_url=staging_env["PERSONAS_DATABASE_URL"]),
                 ElevenLabsResource(api_key="sandbox-test-key", base_url=sandbox.url))
    with pytest.raises(dg.Failure, match=COPY_REFUSED):
        provisioning_service(*resources)

    assert agents_of(sandbox, installation_id) == before
    assert cli(production_env, "plan").output.startswith("No changes")

    # Told it is a copy: a new id, no copied agent ids, and agents of its own.
    result = cli(staging_env, "db", "upgrade", "--new-installation")
    assert result.exit_code == 0 and "3 persona(s) no longer record" in " ".join(result.output.split()), result.output
    staging = PersonaStore(staging_env["PERSONAS_DATABASE_URL"])
    assert staging.installation_id() != installation_id
    assert staging.with_agents() == []
    assert "disowned" in [event.action for event in staging.history(1)]
    assert cli(staging_env, "apply", "--yes").exit_code == 0
    assert len(agents_of(sandbox, staging.installation_id())) == 3
    assert cli(staging_env, "personas", "delete", "2", "--yes").exit_code == 0
    assert len(agents_of(sandbox, staging.installation_id())) == 2

    assert agents_of(sandbox, installation_id) == before, "production's agents changed"
    assert cli(production_env, "plan").output.startswith("No changes"), "production sees the copy's agents"
    staging.engine.dispose()


def test_the_same_installation_moved_is_adopted_and_keeps_its_agents(production_and_copy, sandbox):
    _, moved_env, production = production_and_copy
    installation_id = production.installation_id()
    before = agents_of(sandbox, installation_id)
    shown = cli(moved_env, "installation", "show").output
    assert "a copy or a move" in shown

    assert cli(moved_env, "installation", "adopt").exit_code == 0
    assert "this database is the installation" in cli(moved_env, "installation", "show").output
    moved = PersonaStore(moved_env["PERSONAS_DATABASE_URL"])
    assert moved.installation_id() == installation_id and len(moved.with_agents()) == 4
    assert cli(moved_env, "plan").output.startswith("No changes")
    assert agents_of(sandbox, installation_id) == before
    moved.engine.dispose()


def test_reopening_the_same_database_is_no_copy(sqlite_url, tmp_path):
    link = tmp_path / "link.db"
    with PersonaStore(sqlite_url).engine.connect():
        pass
    first = PersonaStore(sqlite_url)
    first.upgrade()
    link.symlink_to(make_url(sqlite_url).database)
    assert PersonaStore(f"sqlite:///{link}").installation_id() == first.installation_id()
