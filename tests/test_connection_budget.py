"""Connections to PostgreSQL per process are bounded (PERSONA_AGENTS_DB_POOL_SIZE, 4 by default), shared by the
store and the budget, so many processes fit in the server's max_connections; a refused connection says why."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid

import pytest
from sqlalchemy import create_engine, text
from test_exactly_once import ENSURE_SCRIPT, assert_exactly_one_agent_each, env_for

from conftest import POSTGRES_URL, upgraded_store
from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.sandbox import SandboxServer

pytestmark = pytest.mark.postgres
CLI = [sys.executable, "-m", "persona_agents_pipeline.cli"]


class PeakConnections:
    """Samples pg_stat_activity for connections of one application_name while the block runs; `peak` is the most."""

    def __init__(self, application_name: str) -> None:
        self.application_name, self.peak = application_name, 0
        self._stop = threading.Event()
        self._engine = create_engine(POSTGRES_URL, pool_size=1)

    def _sample(self) -> None:
        query = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
        with self._engine.connect() as connection:
            while not self._stop.wait(0.01):
                self.peak = max(self.peak, connection.execute(query, {"name": self.application_name}).scalar())
                connection.rollback()  # a fresh snapshot of pg_stat_activity each time

    def __enter__(self) -> "PeakConnections":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self._engine.dispose()


@pytest.fixture
def pg_store(postgres_url):
    with upgraded_store(postgres_url) as persona_store:
        yield persona_store


def named(url: str, application_name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={application_name}"


def peak_connections_of(store, personas: int, *, cli_runs: int, ensure_loops: int) -> int:
    """Run `create-missing-agents --concurrency 8` processes and `ensure_agent` loops at once on the store's
    database; every one must exit 0 and every persona end with one agent. The peak of their connections."""
    ids = store.add_personas(demo_personas(personas))
    application = f"pa_{uuid.uuid4().hex[:12]}"
    with SandboxServer(latency=0.02) as sandbox, PeakConnections(application) as connections:
        env = env_for(store, sandbox, ELEVENLABS_MAX_CONCURRENT=8, PERSONAS_DATABASE_URL=named(store.database_url, application))
        runs = [subprocess.Popen([*CLI, "create-missing-agents", "--yes", "--concurrency", "8"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(cli_runs)]
        runs += [subprocess.Popen([sys.executable, "-c", ENSURE_SCRIPT, *map(str, ids)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(ensure_loops)]
        for run in runs:
            out, errors = run.communicate(timeout=600)
            assert run.returncode == 0, out + errors
        assert_exactly_one_agent_each(store, sandbox.agents(), ids)
    return connections.peak


def test_one_cli_run_at_concurrency_8_holds_at_most_4_connections(pg_store):
    peak = peak_connections_of(pg_store, 40, cli_runs=1, ensure_loops=0)
    print(f"peak connections of one create-missing-agents run at concurrency 8: {peak}")
    assert 1 <= peak <= 4


def test_a_refused_connection_says_what_to_change(postgres_url):
    role = f"pa_refused_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"))
    try:
        url = postgres_url.replace("postgres@", f"{role}@", 1)
        result = subprocess.run([*CLI, "list-agent-status"], env={**os.environ, "PERSONAS_DATABASE_URL": url, "COLUMNS": "300"}, capture_output=True,
                                text=True, timeout=120)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP ROLE {role}"))
        admin.dispose()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "refused a connection" in result.stderr and "PERSONA_AGENTS_DB_POOL_SIZE" in result.stderr, result.stderr


def test_ten_cli_runs_and_two_ensure_agent_loops_fit_in_the_default_max_connections(pg_store):
    peak = peak_connections_of(pg_store, 60, cli_runs=10, ensure_loops=2)
    print(f"peak connections of 10 CLI runs and 2 ensure_agent loops: {peak}")
    assert peak <= 12 * 4
