"""Shared fixtures: real databases (SQLite file; PostgreSQL where one answers) and the ElevenLabs sandbox."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text

from persona_agents_pipeline.store import PersonaStore

# ---- tiers -------------------------------------------------------------------------------------
# `make test-fast` is the unit tier: domain, store and client against the sandbox, and Dagster definitions run in
# this process, on SQLite (`-m "not slow and not postgres"`). Marked slow here, and run by `make test` with the
# rest: tests that start other processes (Dagster's or the CLI's, races and load between processes), work at
# scale, or wait out real retries. Files that start Dagster's webserver, a browser or a cluster mark themselves.
SLOW_MODULES = {
    "test_budget_under_load",  # three processes against a strict sandbox, with and without the budget
    "test_dagster_scale",  # thousands of partitions
    "test_dagster_deploy",  # `dagster asset materialize` as a process
    "test_demo",  # the whole demo, twice
    "test_local_cluster_config",  # deploy/local-cluster as a process
}
SLOW_TESTS = {
    # several processes at once: races, kills, shared limits
    "test_eight_processes_ensuring_the_same_personas_create_one_agent_each",
    "test_killed_processes_amid_lost_answers_and_failing_searches_end_with_one_agent_each",
    "test_dropped_responses_5xx_and_429s_end_with_exactly_one_agent_each",
    "test_a_run_killed_mid_way_and_run_again_ends_with_exactly_one_agent_each",
    "test_a_rate_above_the_ring_size_still_holds_in_every_second",
    "test_a_cut_rate_above_the_ring_size_holds_in_every_second",
    "test_a_configured_rate_above_the_servers_is_cut_for_every_process_until_its_429s_stop",
    "test_two_processes_never_exceed_the_shared_concurrency",
    "test_a_killed_holder_gives_its_slots_back_within_one_lease",
    # hundreds of partitions, or retries through injected faults
    "test_scattered_backfill_of_200_partitions_runs_as_a_handful_of_runs",
    "test_a_batched_run_rides_out_429s_5xx_and_dropped_responses",
    "test_edited_personas_become_stale_and_only_they_are_updated_in_place",
    # the definitions loaded, or the CLI run, in a process of their own
    "test_the_definitions_use_the_settings",
    "test_a_misconfigured_environment_still_loads_the_code_location_with_automation_off",
    "test_recreate_agent_confirms_and_refuses_without_a_terminal",
    "test_delete_says_what_happens_to_the_agent_and_deletes_it_first",
    "test_delete_without_a_terminal_refuses_and_keeps_everything",
    "test_without_a_terminal_and_without_yes_it_refuses",
    "test_a_damaged_key_never_reaches_dagster_storage_or_compute_logs",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__ in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


# ---- databases ---------------------------------------------------------------------------------

POSTGRES_URL = os.environ.get("PERSONAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_unavailable_reason() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means "no server here"
        return f"no PostgreSQL server answers at {POSTGRES_URL} ({type(exc).__name__}); set PERSONAS_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    reason = _postgres_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh schema per test, reached through search_path, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{postgres_server}?options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(autouse=True)
def _release_budget_connections():
    """Each test's databases get their own budget engine in this process; close them with the test."""
    yield
    from persona_agents_pipeline.client_factory import close_budget_backends
    from persona_agents_pipeline.engines import close_shared_engines

    close_budget_backends()
    close_shared_engines()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'personas.db'}"


@contextmanager
def upgraded_store(database_url: str) -> Iterator[PersonaStore]:
    """A persona store with the current schema, its connections closed afterwards."""
    persona_store = PersonaStore(database_url)
    persona_store.upgrade()
    try:
        yield persona_store
    finally:
        persona_store.engine.dispose()


@pytest.fixture
def sqlite_store(sqlite_url):
    """A persona store in a SQLite file, for tests about SQLite itself."""
    with upgraded_store(sqlite_url) as persona_store:
        yield persona_store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(database_url):
    with upgraded_store(database_url) as persona_store:
        yield persona_store


# ---- ElevenLabs sandbox ------------------------------------------------------------------------


@pytest.fixture
def sandbox():
    """A fresh in-memory sandbox on a free loopback port."""
    from persona_agents_pipeline.sandbox import SandboxServer

    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox_client(sandbox):
    from persona_agents_pipeline.elevenlabs.client import ElevenLabsClient

    with ElevenLabsClient("sandbox-test-key", sandbox.url, backoff_base=0.01, backoff_max=0.05) as client:
        yield client


# ---- Dagster -----------------------------------------------------------------------------------


@pytest.fixture
def instance():
    """A fresh DagsterInstance with its own temporary storage."""
    import dagster as dg

    with dg.instance_for_test() as dagster_instance:
        yield dagster_instance


# ---- the CLI's environment ---------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch, store, sandbox, tmp_path):
    env = {
        "PERSONAS_DATABASE_URL": store.database_url,
        "ELEVENLABS_BASE_URL": sandbox.url,
        "ELEVENLABS_API_KEY": "sandbox-test-key",
        "ELEVENLABS_RATE_LIMIT": "200",
        "ELEVENLABS_MAX_CONCURRENT": "8",
        "PERSONA_AGENTS_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
