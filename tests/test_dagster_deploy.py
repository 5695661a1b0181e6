"""The production instance config (deploy/dagster.yaml) works against a real PostgreSQL server."""

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from persona_agents_pipeline.demo_data import demo_personas

DEPLOY_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "dagster.yaml"


@pytest.fixture
def dagster_database(postgres_server):
    name = f"dagster_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(postgres_server).set(drivername="postgresql+psycopg2", database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.mark.postgres
def test_a_run_records_into_postgres_storage_with_the_deploy_config(dagster_database, store, tmp_path, monkeypatch):
    store.add_personas(demo_personas(3))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_CONFIG, home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), "DAGSTER_PG_URL": dagster_database, "PERSONAS_DATABASE_URL": store.database_url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
         "-m", "persona_agents_pipeline.definitions", "--select", "agent_status_report"],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    engine = create_engine(dagster_database)
    with engine.connect() as connection:
        statuses = connection.execute(text("SELECT status FROM runs")).scalars().all()
    engine.dispose()
    assert statuses == ["SUCCESS"]
