"""Where a shared budget can live in the tests: the SQLite file, PostgreSQL, or Redis where one answers."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

REDIS_URL = os.environ.get("PERSONA_AGENTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def redis_unavailable_reason() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return None
    except redis.RedisError as exc:
        return f"no Redis server answers at {REDIS_URL} ({type(exc).__name__}); set PERSONA_AGENTS_TEST_REDIS_URL"


def redis_url(*accounts: str) -> str:
    """The test Redis database, without any budget these accounts left there earlier (skips where none answers).

    Only the named accounts' keys go: test runs in other checkouts share this database at the same time, and
    wiping every budget there pulled the state from under their running processes."""
    import redis

    reason = redis_unavailable_reason()
    if reason:
        pytest.skip(reason)
    client = redis.Redis.from_url(REDIS_URL)
    for account in accounts:
        for key in client.scan_iter(f"persona-agents:budget:{account}:*"):
            client.delete(key)
    client.close()
    return REDIS_URL


# Unique to this test process, so concurrent runs elsewhere never share its budget in Redis.
TEST_ACCOUNT = f"test-account-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "redis"])
def budget_url(request):
    """A budget location for TEST_ACCOUNT: the personas database itself (SQLite file, PostgreSQL schema) or
    Redis, each without state from an earlier test."""
    if request.param == "redis":
        return redis_url(TEST_ACCOUNT)
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


def wipe_shared_state(budget) -> None:
    """Remove the account's shared state from its store, as a Redis restart without persistence would."""
    from persona_agents_pipeline.elevenlabs.budget_redis import RedisBudgetBackend
    from persona_agents_pipeline.elevenlabs.budget_sql import accounts

    if isinstance(budget.backend, RedisBudgetBackend):
        budget.backend.client.delete(f"persona-agents:budget:{budget.account}:state")
        return
    with budget.backend.engine.begin() as connection:
        connection.execute(accounts.delete().where(accounts.c.account == budget.account))


def forget_rate_fields(url: str) -> None:
    """Leave the account's shared state as a version before the shared rate stored it, with this process's
    budget connections closed, so the next budget opens the store anew. In SQL that version made its tables by
    hand, under their old names and without the rate columns, in a database the migrations had taken to 0004."""
    from sqlalchemy import text

    from persona_agents_pipeline.client_factory import budget_backend, close_budget_backends
    from persona_agents_pipeline.elevenlabs.budget_redis import RedisBudgetBackend

    backend = budget_backend(url)
    if isinstance(backend, RedisBudgetBackend):
        backend.client.hdel(f"persona-agents:budget:{TEST_ACCOUNT}:state", "rate", "rate_changed_at")
    else:
        with backend.engine.begin() as connection:
            for name in ("accounts", "slots", "starts"):
                connection.execute(text(f"ALTER TABLE persona_agents_budget_{name} RENAME TO api_budget_{name}"))
            for column in ("rate", "rate_changed_at"):
                connection.execute(text(f"ALTER TABLE api_budget_accounts DROP COLUMN {column}"))
            connection.execute(text("UPDATE persona_agents_alembic_version SET version_num = '0004_database_identity'"))
    close_budget_backends()


class PrivateRedis:
    """A redis-server of this test alone, on a free port, without persistence: stopped and started at will."""

    def __init__(self, workdir) -> None:
        from persona_agents_pipeline.sandbox.local_servers import free_port

        self.port, self.workdir, self.process = free_port(), workdir, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess

        import redis

        from persona_agents_pipeline.sandbox.local_servers import wait_until

        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            try:
                return redis.Redis(port=self.port, socket_connect_timeout=1).ping()
            except redis.RedisError:
                return False

        wait_until(answers, f"redis-server answers on port {self.port}", timeout=30, interval=0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def private_redis(tmp_path):
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary on PATH")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


class SlotTakers:
    """Threads that each take a slot of a budget and hold it until the block ends; all are joined then."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.threads: list[threading.Thread] = []

    def got_within(self, budget, seconds: float) -> bool:
        """Whether `budget` gets a slot within `seconds` (the attempt goes on, to the block's end)."""
        got = threading.Event()

        def take() -> None:
            with budget.slot():
                got.set()
                self.done.wait(60)

        self.threads.append(threading.Thread(target=take, daemon=True))
        self.threads[-1].start()
        return got.wait(seconds)

    def __enter__(self) -> "SlotTakers":
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(60)
