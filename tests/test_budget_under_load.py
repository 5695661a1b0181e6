"""Three processes spend one account against a strict sandbox: a batch provisioning script, the CLI's
create-missing-agents and an application process calling `ensure_agent` in a loop.

With the shared budget (in the personas database, SQLite or PostgreSQL, or in Redis) the sandbox's limits
hold; with it switched off (the negative control) the same load breaches them, so the test can fail.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from budget_helpers import redis_url
from test_exactly_once import assert_exactly_one_agent_each, env_for

from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.sandbox import SandboxServer

LIMIT_IN_FLIGHT = 4
LIMIT_PER_SECOND = 20
STRICT = dict(max_concurrent=LIMIT_IN_FLIGHT, rate_limit=LIMIT_PER_SECOND, latency=0.1, announce_limit="header")

BATCH_SCRIPT = """
import sys
from persona_agents_pipeline.config import Settings
from persona_agents_pipeline.provisioning import ProvisioningService
service = ProvisioningService.from_settings(Settings.from_env())
results = service.provision_many([int(arg) for arg in sys.argv[1:]], concurrency=8)
failed = [result for result in results if not result.ok]
sys.exit(f"{len(failed)} failed, e.g. {failed[0].error}" if failed else 0)
"""
INTERACTIVE_SCRIPT = """
import sys
from persona_agents_pipeline import python_api
for persona_id in sys.argv[1:]:
    python_api.ensure_agent(int(persona_id))
"""
CLI = [sys.executable, "-m", "persona_agents_pipeline.cli", "create-missing-agents", "--yes"]


def start_load(store, sandbox, **env_extra) -> tuple[list[int], list[subprocess.Popen]]:
    batch = store.add_personas(demo_personas(60, seed=1))
    others = store.add_personas(demo_personas(60, seed=2))  # left to the CLI (which also races for `batch`)
    interactive = store.add_personas(demo_personas(15, seed=3))
    # Every process is configured with the account's whole limit, as each would be alone.
    env = env_for(store, sandbox, ELEVENLABS_MAX_CONCURRENT=LIMIT_IN_FLIGHT, ELEVENLABS_RATE_LIMIT=LIMIT_PER_SECOND,
                  **env_extra)
    commands = [
        [sys.executable, "-c", BATCH_SCRIPT, *map(str, batch)],
        CLI,
        [sys.executable, "-c", INTERACTIVE_SCRIPT, *map(str, interactive)],
    ]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for command in commands]
    return batch + others + interactive, processes


@pytest.fixture(params=["personas-database", "redis"])
def budget_env(request, store) -> dict[str, str]:
    """Where the processes meet: the personas database (SQLite or PostgreSQL, per `store`), or Redis."""
    if request.param == "redis":
        if store.dialect != "sqlite":
            pytest.skip("Redis is tried once, beside the SQLite personas database")
        # The account is the sandbox's (its URL has a free port), so no other test run shares it.
        return {"PERSONA_AGENTS_BUDGET_URL": redis_url()}
    return {}


def test_three_processes_sharing_the_budget_stay_within_the_account_limits(store, budget_env):
    with SandboxServer(**STRICT) as sandbox:
        ids, processes = start_load(store, sandbox, **budget_env)
        for process in processes:
            _, errors = process.communicate(timeout=240)
            assert process.returncode == 0, errors[-2000:]
        stats = sandbox.stats()
        assert_exactly_one_agent_each(store, sandbox.agents(), ids)
    assert stats["peak_attempted_concurrency"] <= LIMIT_IN_FLIGHT, stats
    assert stats["max_requests_in_1s_window"] <= LIMIT_PER_SECOND, stats
    assert stats["rate_limited"] < 0.01 * stats["requests_total"], stats
    assert stats["requests_total"] >= len(ids)


def test_negative_control_without_the_shared_budget_the_same_load_breaches_the_limits(sqlite_url):
    from persona_agents_pipeline.store import PersonaStore

    store = PersonaStore(sqlite_url)
    store.upgrade()
    with SandboxServer(**STRICT) as sandbox:
        _, processes = start_load(store, sandbox, PERSONA_AGENTS_BUDGET_URL="off")
        try:
            deadline = time.monotonic() + 120
            while any(process.poll() is None for process in processes) and time.monotonic() < deadline:
                stats = sandbox.stats()
                if stats["rate_limited"] >= 0.05 * max(100, stats["requests_total"]):
                    break  # clearly breached; no need to wait for the retries to drain
                time.sleep(0.2)
            stats = sandbox.stats()
        finally:
            for process in processes:
                process.kill()
                process.communicate()
    store.engine.dispose()
    breached = (stats["peak_attempted_concurrency"] > LIMIT_IN_FLIGHT
                or stats["max_requests_in_1s_window"] > LIMIT_PER_SECOND
                or stats["rate_limited"] >= 0.01 * stats["requests_total"])
    assert breached, f"three processes each alone within the limit should oversubscribe the account: {stats}"
