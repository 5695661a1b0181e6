"""Ctrl-C on a long CLI command: a real CLI process against the sandbox, interrupted mid-run by SIGINT."""

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.models import utcnow
from persona_agents_pipeline.identity import identity_tag
from persona_agents_pipeline.sandbox.local_servers import wait_until

PERSONAS = 30
CONCURRENCY = 2
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
    """(persona id, claim expiry) of every claimed persona."""
    return [(p.id, p.agent_claim_expires_at) for p in store.iter_personas() if p.agent_claim_owner is not None]


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


CREATE_MISSING = ("create-missing-agents", "--yes", "--concurrency", str(CONCURRENCY))


def start_slow_run(cli_env, store, sandbox, latency: float, command=CREATE_MISSING) -> tuple[list[int], CliProcess]:
    ids = store.add_personas(demo_personas(PERSONAS))
    sandbox.configure(latency=latency)
    run = CliProcess(cli_env, *command)
    installation = store.installation_id()

    def waiting_for_a_create() -> bool:
        # Some agents made, and a persona claimed whose create is still held back by the latency.
        tags = {tag for agent in sandbox.agents() for tag in agent["tags"]}
        made = {persona_id for persona_id in ids if identity_tag(installation, persona_id) in tags}
        return len(made) >= 2 and any(persona_id not in made for persona_id, _expiry in claimed(store))

    wait_until(waiting_for_a_create, "the run has created two agents and waits for another", timeout=120, interval=0.05)
    return ids, run


@pytest.mark.parametrize(
    "command, summary",
    [(CREATE_MISSING, "not started"), (("apply", "--yes"), "not done (interrupted)")],
    ids=["create-missing-agents", "apply"],
)
def test_one_ctrl_c_stops_new_work_settles_what_is_in_flight_and_exits_130(cli_env, store, sandbox, command, summary):
    ids, run = start_slow_run(cli_env, store, sandbox, latency=0.3, command=command)
    run.interrupt()
    code, stdout, stderr = run.finish()
    assert code == INTERRUPTED, stdout + stderr
    assert summary in stdout
    created_before_the_next_run = len(sandbox.agents())
    assert created_before_the_next_run < PERSONAS
    assert len(store.with_agents()) == created_before_the_next_run  # every request in flight was settled
    assert claimed(store) == []
    assert_next_run_is_clean(cli_env, store, sandbox, ids)


def test_a_second_ctrl_c_quits_at_once_and_the_next_run_adopts_what_was_in_flight(cli_env, store, sandbox):
    lease = 4  # seconds; longer than the sandbox's latency, so a create in flight lands within it
    cli_env = {**cli_env, "PERSONA_AGENTS_CLAIM_LEASE_SECONDS": str(lease)}
    ids, run = start_slow_run(cli_env, store, sandbox, latency=2.0)
    run.interrupt()
    wait_until(lambda: "Stopping" in "".join(run.stderr), "the first Ctrl-C is taken", timeout=60, interval=0.05)
    run.interrupt()
    code, stdout, stderr = run.finish()
    assert code == INTERRUPTED, stdout + stderr
    assert "Summary:" in stdout and "persona(s) in flight" in stderr  # it did not wait for them
    assert len(sandbox.agents()) < PERSONAS
    # Only the personas let go in flight stay claimed, and only until their lease runs out.
    left = claimed(store)
    assert 0 < len(left) <= CONCURRENCY
    assert all(expiry <= utcnow() + timedelta(seconds=lease) for _persona_id, expiry in left)
    assert_next_run_is_clean(cli_env, store, sandbox, ids)
