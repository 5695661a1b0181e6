"""The client learns the account's concurrency (header, GET /v1/user, plan, configuration as a ceiling)
and reacts to the two kinds of 429, against the sandbox announcing a limit unlike the defaults."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from persona_agents_pipeline.client_factory import build_client
from persona_agents_pipeline.config import Settings
from persona_agents_pipeline.elevenlabs.budget import DEFAULT_CONCURRENCY, PLAN_CONCURRENCY
from persona_agents_pipeline.sandbox import SandboxServer
from persona_agents_pipeline.sandbox.data import USER
from persona_agents_pipeline.persona_validation import PersonaSpec

KEY = "sandbox-test-key"
ANNOUNCED = 7  # unlike the default (2), the sandbox's plan (starter: 3) and its stock /v1/user figure (10)
FAST = dict(backoff_base=0.01, backoff_max=0.05)


def client_for(sandbox, sqlite_url, **settings):
    return build_client(Settings(database_url=sqlite_url, base_url=sandbox.url, **settings), api_key=KEY, **FAST)


@pytest.mark.parametrize("announce, source, expected", [
    ("header", "header", ANNOUNCED),
    ("both", "header", ANNOUNCED),
    ("user", "account", ANNOUNCED),
    ("none", "plan", PLAN_CONCURRENCY[USER["subscription"]["tier"]]),
])
def test_the_account_limit_is_learnt_from_the_best_evidence(announce, source, expected, sqlite_url):
    assert ANNOUNCED not in (DEFAULT_CONCURRENCY, USER["subscription_extras"]["concurrency"])
    with SandboxServer(max_concurrent=ANNOUNCED, announce_limit=announce) as sandbox:
        with client_for(sandbox, sqlite_url) as client:
            assert client.limiter.state().source == "default"
            list(client.list_agents())
            state = client.limiter.state(fresh=True)
    assert (state.source, state.account_limit, state.concurrency) == (source, expected, expected)


def test_a_configured_concurrency_is_a_ceiling_over_what_the_account_announces(sqlite_url):
    with SandboxServer(max_concurrent=ANNOUNCED, announce_limit="both") as sandbox:
        with client_for(sandbox, sqlite_url, max_concurrent=5) as client:
            list(client.list_agents())
            assert client.limiter.state(fresh=True).account_limit == 5


def test_too_many_concurrent_requests_cuts_the_shared_concurrency_and_nothing_fails(sqlite_url):
    # The plan says 3 but the account really allows 2 (another tool spends the rest): no header tells us.
    # (No interactive reserve, so that batch callers alone use all 3.)
    specs = [PersonaSpec(n, f"P{n}", 0.5, 0.5, 0.5, "") for n in range(1, 31)]
    with SandboxServer(max_concurrent=2, announce_limit="none", latency=0.05) as sandbox:
        with client_for(sandbox, sqlite_url, interactive_reserve=0) as client:
            template = Settings(database_url=sqlite_url).agent_template()
            with ThreadPoolExecutor(8) as pool:
                agent_ids = list(pool.map(lambda spec: client.create_agent(template.payload(spec)), specs))
            state = client.limiter.state(fresh=True)
        stats = sandbox.stats()
    assert stats["rate_limited"] > 0, "the sandbox must refuse some requests for the test to mean anything"
    assert len(set(agent_ids)) == 30 and stats["agents"] == 30
    assert state.concurrency <= 2 < state.account_limit


def test_system_busy_pauses_every_caller_and_the_requests_still_succeed(sqlite_url):
    with SandboxServer(system_busy_rate=0.3, seed=3) as sandbox:
        with client_for(sandbox, sqlite_url) as client:
            with ThreadPoolExecutor(4) as pool:
                bodies = list(pool.map(lambda _: client.list_voices(), range(20)))
            paused_until = client.limiter.state(fresh=True).paused_until
        stats = sandbox.stats()
    assert stats["requests_by_status"].get("429", 0) > 0
    assert all(bodies) and paused_until > 0, "system_busy must set the shared pause"


def test_the_shared_budget_stores_nothing_that_reveals_the_key(sqlite_url):
    with SandboxServer(announce_limit="both", max_concurrent=3) as sandbox:
        with client_for(sandbox, sqlite_url) as client:
            list(client.list_agents())
            engine = client.limiter.backend.engine
    with engine.connect() as connection:
        rows = [str(row) for table in ("accounts", "slots", "starts")
                for row in connection.execute(text(f"select * from persona_agents_budget_{table}"))]
    assert rows and not any(KEY in row for row in rows)
