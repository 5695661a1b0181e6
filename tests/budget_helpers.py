"""Where a shared budget can live in the tests: the SQLite file, PostgreSQL, or Redis where one answers."""

from __future__ import annotations

import os

import pytest

REDIS_URL = os.environ.get("PERSONA_AGENTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
BUDGET_KEY_PATTERN = "persona-agents:budget:*"


def redis_unavailable_reason() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return None
    except redis.RedisError as exc:
        return f"no Redis server answers at {REDIS_URL} ({type(exc).__name__}); set PERSONA_AGENTS_TEST_REDIS_URL"


def fresh_redis_url() -> str:
    """The test Redis database with no budget left over from earlier runs (skips where none answers)."""
    import redis

    reason = redis_unavailable_reason()
    if reason:
        pytest.skip(reason)
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(BUDGET_KEY_PATTERN):
        client.delete(key)
    return REDIS_URL


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "redis"])
def budget_url(request):
    """A budget location: the personas database itself (SQLite file, PostgreSQL schema) or Redis."""
    if request.param == "redis":
        return fresh_redis_url()
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
