"""Ctrl-C on a long CLI command: a real CLI process against the sandbox, interrupted mid-run by SIGINT."""

import os
import signal
import subprocess
import sys
import threading

import pytest
from sqlalchemy import text

from waiting import wait_until

from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.voice_policy import identity_tag

PERSONAS = 30
INTERRUPTED = 130


class CliProcess:
    """The CLI in its own process, its stderr read as it comes (to see when the first Ctrl-C was taken)."""

    def __init__(self, env: dict[str, str], *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "persona_agents_pipeline.cli", *args], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
        )
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True)
        self._reader.start()

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)

    def finish(self) -> tuple[int, str, str]:
        stdout = self.process.stdout.read()
        code = self.process.wait(timeout=120)
        self._reader.join(timeout=10)
        return code, stdout, "".join(self.stderr)


def claimed(store) -> list[tuple]:
    with store.engine.connect() as connection:
        return list(connection.execute(text("SELECT id, agent_claim_owner FROM personas WHERE agent_claim_owner IS NOT NULL")))


def assert_next_run_is_clean(cli_env, store, sandbox, ids: list[int]) -> None:
    sandbox.configure(latency=0.0)
    code, stdout, stderr = CliProcess(cli_env, "create-missing-agents", "--yes").finish()
    assert code == 0, stdout + stderr
    installation = store.installation_id()
    tags = [tag for agent in sandbox.agents() for tag in agent["tags"]]
    assert all(tags.count(identity_tag(installation, persona_id)) == 1 for persona_id in ids), "one agent per persona"
    assert len(sandbox.agents()) == len(ids)
    recorded = {persona.elevenlabs_agent_id for persona in store.with_agents()}
    assert recorded == {agent["agent_id"] for agent in sandbox.agents()}
    assert claimed(store) == []


def start_slow_run(cli_env, store, sandbox, latency: float) -> tuple[list[int], CliProcess]:
    ids = store.add_personas(demo_personas(PERSONAS))
    sandbox.configure(latency=latency)
    run = CliProcess(cli_env, "create-missing-agents", "--yes", "--concurrency", "2")
    wait_until(lambda: len(sandbox.agents()) >= 2, "the run has created two agents", timeout=120, interval=0.05)
    return ids, run


def test_one_ctrl_c_stops_new_work_settles_what_is_in_flight_and_exits_130(cli_env, store, sandbox):
    ids, run = start_slow_run(cli_env, store, sandbox, latency=0.3)
    run.interrupt()
    code, stdout, stderr = run.finish()
    assert code == INTERRUPTED, stdout + stderr
    assert "Summary:" in stdout and "not started" in stdout
    created_before_the_next_run = len(sandbox.agents())
    assert created_before_the_next_run < PERSONAS
    assert len(store.with_agents()) == created_before_the_next_run  # every request in flight was settled
    assert claimed(store) == []
    assert_next_run_is_clean(cli_env, store, sandbox, ids)


def test_a_second_ctrl_c_exits_at_once_and_leaves_nothing_claimed(cli_env, store, sandbox):
    ids, run = start_slow_run(cli_env, store, sandbox, latency=1.0)
    run.interrupt()
    wait_until(lambda: "Stopping" in "".join(run.stderr), "the first Ctrl-C is taken", timeout=60, interval=0.05)
    run.interrupt()
    code, stdout, stderr = run.finish()
    assert code == INTERRUPTED, stdout + stderr
    assert "Summary:" in stdout
    assert len(sandbox.agents()) < PERSONAS
    assert claimed(store) == []
    assert_next_run_is_clean(cli_env, store, sandbox, ids)
