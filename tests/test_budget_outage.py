"""A Redis budget that restarts or goes away mid-run: the run waits it out within a bounded time, and past that
stops cleanly with its summary; never a traceback, never a duplicate, nothing left claimed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from budget_helpers import private_redis  # noqa: F401  (fixture)
from test_exactly_once import assert_exactly_one_agent_each, env_for

from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.sandbox import SandboxServer
from persona_agents_pipeline.sandbox.local_servers import wait_until

WAITING = "does not answer"
PERSONAS = 40


def start_run(store, sandbox, redis_url: str, stderr: Path, **extra) -> subprocess.Popen:
    env = env_for(store, sandbox, PERSONA_AGENTS_BUDGET_URL=redis_url, ELEVENLABS_MAX_CONCURRENT=4, **extra)
    return subprocess.Popen(
        [sys.executable, "-m", "persona_agents_pipeline.cli", "create-missing-agents", "--yes", "--concurrency", "4"],
        env=env, stdout=subprocess.PIPE, stderr=stderr.open("w"), text=True,
    )


def stop_redis_mid_run(run, sandbox, private_redis, stderr: Path) -> None:  # noqa: F811
    wait_until(lambda: len(sandbox.agents()) >= 4, "the run has created a few agents", timeout=120, interval=0.02)
    private_redis.stop()
    wait_until(lambda: WAITING in stderr.read_text() or run.poll() is not None, "the run notices that Redis is gone",
               timeout=120, interval=0.05)
    assert run.poll() is None, f"the run ended when Redis went away:\n{stderr.read_text()[-3000:]}"
    assert len(sandbox.agents()) < PERSONAS, "the run ended before Redis went away: the test proves nothing"


def test_a_redis_restart_mid_run_is_waited_out_and_every_persona_gets_one_agent(store, private_redis, tmp_path):  # noqa: F811
    ids = store.add_personas(demo_personas(PERSONAS))
    stderr = tmp_path / "stderr"
    with SandboxServer(latency=0.1) as sandbox:
        run = start_run(store, sandbox, private_redis.url, stderr)
        stop_redis_mid_run(run, sandbox, private_redis, stderr)
        private_redis.start()  # empty: the restart lost every key, as one without persistence does
        out, _ = run.communicate(timeout=300)
        errors = stderr.read_text()
        assert run.returncode == 0, out + errors
        assert "Traceback" not in errors
        assert_exactly_one_agent_each(store, sandbox.agents(), ids)


def test_a_redis_outage_past_the_bound_stops_the_run_with_its_summary(store, private_redis, tmp_path):  # noqa: F811
    ids = store.add_personas(demo_personas(PERSONAS))
    stderr = tmp_path / "stderr"
    with SandboxServer(latency=0.1) as sandbox:
        run = start_run(store, sandbox, private_redis.url, stderr, PERSONA_AGENTS_BUDGET_OUTAGE_SECONDS=2)
        stop_redis_mid_run(run, sandbox, private_redis, stderr)
        out, _ = run.communicate(timeout=300)
        errors = stderr.read_text()
        assert run.returncode == 1, out + errors
        assert "Traceback" not in errors, errors
        assert "Summary:" in out and "has not answered for 2 s" in out, out
        assert not [p.id for p in store.iter_personas() if p.agent_claim_owner], "claims were left behind"
        recorded = {p.elevenlabs_agent_id for p in store.iter_personas()} - {None}
        assert recorded == {agent["agent_id"] for agent in sandbox.agents()}, "an agent was created but not recorded"

        private_redis.start()
        rerun = start_run(store, sandbox, private_redis.url, tmp_path / "stderr-rerun")
        out, _ = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, out + (tmp_path / "stderr-rerun").read_text()
        assert_exactly_one_agent_each(store, sandbox.agents(), ids)
