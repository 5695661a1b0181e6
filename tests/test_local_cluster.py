"""The distributed deployment (deploy/local-cluster: PostgreSQL storage, queued runs, Celery workers over
RabbitMQ with Redis results), found out by running it: which arrangement honours the `elevenlabs_api` pool.

The probe code location (deploy/pool_probe.py) holds the pool in three parallel ops per run and logs each
hold; two runs are submitted at once. A pool limit of 1 must leave no two holds overlapping, across runs
and across both workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from cluster_helpers import REPO, LocalCluster, instance_yaml, max_overlap, rabbitmq_unavailable_reason

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LAUNCH = """
mutation($job: String!) {
  launchRun(executionParams: {selector: {repositoryLocationName: "pool_probe.py", repositoryName: "__repository__",
                                         jobName: $job}}) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}
"""


@pytest.fixture
def services(postgres_server):
    reason = rabbitmq_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from budget_helpers import redis_unavailable_reason

    reason = redis_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return postgres_server


@pytest.mark.parametrize("arrangement, launcher, job, limit, granularity, honoured", [
    ("CeleryRunLauncher + in-process executor", "celery", "probe_in_process", 1, "op", True),
    ("default launcher + Celery executor", "default", "probe_celery", 1, "op", True),
    # Found here: granularity `run` limits runs, not the steps inside one, which the Celery executor runs in
    # parallel on both workers. This case is also the control: the measurement does see overlapping holds.
    ("pool granularity run + Celery executor", "default", "probe_celery", 1, "run", False),
])
def test_which_arrangement_honours_the_pool(arrangement, launcher, job, limit, granularity, honoured, services, tmp_path):
    log = tmp_path / "holds.log"
    log.touch()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_file:\n      relative_path: {REPO / 'deploy' / 'pool_probe.py'}\n"
                         f"      working_directory: {REPO / 'deploy'}\n")
    instance = instance_yaml(run_launcher=launcher, pool_limit=limit, granularity=granularity)
    with LocalCluster(tmp_path, services, instance, workspace, {"POOL_PROBE_LOG": str(log), "POOL_PROBE_SECONDS": "0.5"}) as cluster:
        for _ in range(2):
            launched = cluster.graphql(LAUNCH, {"job": job})["launchRun"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
        runs = cluster.wait_for_runs(2, timeout=180)
    assert [run["status"] for run in runs] == ["SUCCESS", "SUCCESS"], arrangement
    holds = [line.split() for line in log.read_text().splitlines()]
    assert len(holds) == 6
    overlap = max_overlap([(float(start), float(end)) for start, end, _ in holds])
    workers = {pid for _, _, pid in holds}
    assert len(workers) == 2, f"{arrangement}: the steps must spread over both workers to prove anything ({holds})"
    if honoured:
        assert overlap == 1, f"{arrangement}: pool limit 1, yet {overlap} holds overlapped"
    else:
        assert overlap > 1, f"{arrangement}: expected overlapping holds (the pool does not bind here)"


# ---- acceptance: the account's limits hold across the cluster, the CLI and the application --------------

IN_FLIGHT, PER_SECOND = 8, 50
PROVISION_JOB = "provision_persona_agents"
CLI = [sys.executable, "-m", "persona_agents_pipeline.cli", "create-missing-agents", "--yes"]
ENSURE_LOOP = """
import sys
from persona_agents_pipeline import python_api
for persona_id in sys.argv[1:]:
    python_api.ensure_agent(int(persona_id))
"""


def troubled(runs: list[dict]) -> list[dict]:
    """Runs that did not succeed, leaving out report refreshes still waiting or running: the status report
    sensor requests one after runs finish, so one may be queued whenever the test looks."""
    return [run for run in runs if run["status"] != "SUCCESS"
            and not (run["jobName"] == "refresh_agent_status_report" and run["status"] in ("QUEUED", "STARTING", "STARTED"))]


def wait_until(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting until {what}"
        time.sleep(0.5)


@pytest.mark.timeout(1800)
def test_a_thousand_personas_over_two_workers_the_cli_and_the_application_keep_the_account_limits(
        services, postgres_url, tmp_path):
    from test_exactly_once import assert_exactly_one_agent_each

    from persona_agents_pipeline.client_factory import account_id, budget_backend
    from persona_agents_pipeline.demo_data import demo_personas
    from persona_agents_pipeline.sandbox import SandboxServer
    from persona_agents_pipeline.store import PersonaStore

    store = PersonaStore(postgres_url)
    store.upgrade()
    backfill = store.add_personas(demo_personas(1000, seed=21))
    with SandboxServer(max_concurrent=IN_FLIGHT, rate_limit=PER_SECOND, latency=0.05,
                       announce_limit="header") as sandbox:
        env = {
            "PERSONAS_DATABASE_URL": postgres_url, "ELEVENLABS_BASE_URL": sandbox.url,
            "ELEVENLABS_API_KEY": "sandbox-test-key", "AUTO_CREATE_ELEVENLABS_AGENTS": "true",
            "ELEVENLABS_RATE_LIMIT": str(PER_SECOND), "PERSONA_AGENTS_SENSOR_INTERVAL": "2",
            "PERSONA_AGENTS_RUN_BATCH_SIZE": "250", "PERSONA_AGENTS_BUDGET_LEASE_SECONDS": "10",
            "PERSONA_AGENTS_CLAIM_LEASE_SECONDS": "10",
        }
        # Two API steps at once (one per worker): the shared budget, not the pool, keeps the account's limits.
        instance = instance_yaml(run_launcher="celery", pool_limit=2)
        with LocalCluster(tmp_path, services, instance, REPO / "workspace.yaml", env) as cluster:
            wait_until(lambda: any(run["status"] == "STARTED" and run["jobName"] == PROVISION_JOB for run in cluster.runs()),
                       "a provisioning run requested by the sensor starts")
            cli_personas = store.add_personas(demo_personas(150, seed=22))
            interactive = store.add_personas(demo_personas(30, seed=23))
            everyone = backfill + cli_personas + interactive
            cli = subprocess.Popen(CLI, env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            loop = subprocess.Popen([sys.executable, "-c", ENSURE_LOOP, *map(str, interactive)], env=cluster.env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wait_until(lambda: sandbox.stats()["agents"] >= 400, "400 agents exist")
            os.killpg(cluster.pid("worker1"), signal.SIGKILL)  # the worker and the run it executes, mid-run
            cluster.command("start")  # brings worker1 back
            for process in (cli, loop):
                _, errors = process.communicate(timeout=300)
                assert process.returncode == 0, errors[-2000:]
            # Every run ends but the one killed with worker1: nothing tells Dagster that run is dead.
            wait_until(lambda: len(troubled(cluster.runs())) <= 1, "the runs finish",
                       timeout=900)
            # Its personas are the backfill schedule's; an operator's CLI pass does the same here.
            again = subprocess.run(CLI, env=cluster.env, capture_output=True, text=True, timeout=300)
            assert again.returncode == 0, again.stdout + again.stderr
            worker_logs = [(cluster.state / "logs" / f"worker{n}.log").read_text() for n in (1, 2)]
            runs = cluster.runs()
        stats = sandbox.stats()
        assert_exactly_one_agent_each(store, sandbox.agents(), everyone)
        # Every live process has finished; only slots leaked by the killed worker could still be held.
        held = budget_backend(postgres_url).held_slots(account_id(sandbox.url, "sandbox-test-key"), time.time())
    store.engine.dispose()
    assert stats["peak_attempted_concurrency"] <= IN_FLIGHT, stats
    assert stats["max_requests_in_1s_window"] <= PER_SECOND, stats
    assert stats["rate_limited"] < 0.01 * stats["requests_total"], stats
    assert all("Task execute_job[" in log for log in worker_logs), "runs must go to both workers"
    # All runs succeed but the one killed mid-run (left STARTED, or FAILURE once its task is redelivered).
    # 1,000 personas at 250 per run: at least four provisioning runs (report refreshes come on top).
    assert sum(run["jobName"] == PROVISION_JOB for run in runs) >= 4, runs
    assert len(troubled(runs)) <= 1, runs
    assert held == 0, "the killed worker's slots must come back within one lease"
