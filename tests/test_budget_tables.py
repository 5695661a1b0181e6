"""The shared budget's tables are the project's: `persona_agents_budget_*`, made by its migrations wherever the
budget lives, with the rows an earlier version left under `api_budget_*` kept."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from persona_agents_pipeline.client_factory import budget_backend, close_budget_backends
from persona_agents_pipeline.elevenlabs.budget import SharedBudget
from persona_agents_pipeline.schema_errors import SchemaError
from persona_agents_pipeline.store import MIGRATIONS_DIR, PersonaStore

NEW_TABLES = {"persona_agents_budget_accounts", "persona_agents_budget_slots", "persona_agents_budget_starts"}
# As an earlier version made them on first use, outside the migrations.
OLD_TABLES = [
    "CREATE TABLE api_budget_accounts (account VARCHAR(64) NOT NULL, account_limit INTEGER NOT NULL, "
    "concurrency INTEGER NOT NULL, source VARCHAR(16) NOT NULL, paused_until FLOAT NOT NULL, "
    "changed_at FLOAT NOT NULL, interactive_seen_at FLOAT NOT NULL, version INTEGER NOT NULL, "
    "rate FLOAT DEFAULT '0' NOT NULL, rate_changed_at FLOAT DEFAULT '0' NOT NULL, PRIMARY KEY (account))",
    "CREATE TABLE api_budget_slots (account VARCHAR(64) NOT NULL, slot INTEGER NOT NULL, holder VARCHAR(32), "
    "lease_until FLOAT NOT NULL, PRIMARY KEY (account, slot))",
    "CREATE TABLE api_budget_starts (account VARCHAR(64) NOT NULL, slot INTEGER NOT NULL, started_at FLOAT NOT NULL, "
    "PRIMARY KEY (account, slot))",
]
OLD_ROWS = [
    "INSERT INTO api_budget_accounts VALUES ('acct', 7, 5, 'header', 0, 11.5, 0, 42, 3.5, 12.5)",
    "INSERT INTO api_budget_slots VALUES ('acct', 0, 'holder-1', 99.5), ('acct', 1, NULL, 0)",
    "INSERT INTO api_budget_starts VALUES ('acct', 0, 10.25), ('acct', 1, 10.75)",
]


def _rows(connection, table: str) -> list[tuple]:
    return [tuple(row) for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))]


@pytest.fixture
def closed_budgets():
    yield
    close_budget_backends()


def _store_at(database_url: str, revision: str) -> PersonaStore:
    store = PersonaStore(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return store


def test_an_upgrade_keeps_the_rows_of_the_old_budget_tables_under_the_new_names(database_url, closed_budgets):
    store = _store_at(database_url, "0004_database_identity")
    with store.engine.begin() as connection:
        for statement in OLD_TABLES + OLD_ROWS:
            connection.execute(text(statement))
        before = {name: _rows(connection, f"api_budget_{name}") for name in ("accounts", "slots", "starts")}

    assert store.upgrade() == ["0005_budget_tables"]

    with store.engine.connect() as connection:
        after = {name: _rows(connection, f"persona_agents_budget_{name}") for name in ("accounts", "slots", "starts")}
        tables = set(inspect(connection).get_table_names())
    assert after == before and before["slots"]
    assert NEW_TABLES <= tables and not {table for table in tables if table.startswith("api_budget_")}
    state = SharedBudget(budget_backend(database_url), "acct").state(fresh=True)
    assert (state.account_limit, state.version, state.rate) == (7, 42, 3.5)


def test_a_budget_database_nobody_upgraded_gets_its_tables_from_the_migrations(database_url, closed_budgets):
    budget = SharedBudget(budget_backend(database_url), "acct", concurrency_ceiling=2)
    with budget.slot():
        assert budget.backend.held_slots("acct", budget.backend.now()) == 1
    with budget.backend.engine.connect() as connection:
        assert NEW_TABLES <= set(inspect(connection).get_table_names())
        revision = connection.execute(text("SELECT version_num FROM persona_agents_alembic_version")).scalar()
    assert revision == "0005_budget_tables"


def test_the_budget_never_runs_the_first_upgrade_of_an_applications_personas_table(database_url, closed_budgets):
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE personas (id INTEGER PRIMARY KEY, name VARCHAR(255))"))
    with pytest.raises(SchemaError) as refused:
        budget_backend(database_url)
    assert "persona-agents db upgrade" in str(refused.value) and "PERSONAS_DATABASE_URL" in str(refused.value)
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) == {"personas"}
        assert [column["name"] for column in inspect(connection).get_columns("personas")] == ["id", "name"]
    engine.dispose()


def _open_the_budget(database_url: str, ready) -> None:
    ready.wait()
    SharedBudget(budget_backend(database_url), "acct").state(fresh=True)


def test_processes_opening_a_new_budget_database_at_once_all_get_one_set_of_tables(database_url, closed_budgets):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    ready = context.Barrier(4)
    processes = [context.Process(target=_open_the_budget, args=(database_url, ready)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    store = PersonaStore(database_url)
    with store.engine.connect() as connection:
        assert NEW_TABLES <= set(inspect(connection).get_table_names())
        assert connection.execute(text("SELECT count(*) FROM persona_agents_installation")).scalar() == 1
    assert store.upgrade() == []
