"""The distributed deployment (deploy/local-cluster: PostgreSQL storage, queued runs, Celery workers over
RabbitMQ with Redis results), found out by running it: which arrangement honours the `elevenlabs_api` pool.

The probe code location (deploy/pool_probe.py) holds the pool in three parallel ops per run and logs each
hold; two runs are submitted at once. A pool limit of 1 must leave no two holds overlapping, across runs
and across both workers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from cluster_helpers import REPO, LocalCluster, instance_yaml, max_overlap, rabbitmq_unavailable_reason

from persona_agents_pipeline.defs.dagster_internals import RANGE_END_TAG, RANGE_START_TAG
from persona_agents_pipeline.sandbox.local_servers import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LAUNCH = """
mutation($job: String!) {
  launchRun(executionParams: {selector: {repositoryLocationName: "pool_probe.py", repositoryName: "__repository__",
                                         jobName: $job}}) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}
"""


@pytest.fixture(scope="session")
def services(postgres_server):
    reason = rabbitmq_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from budget_helpers import redis_unavailable_reason

    reason = redis_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return postgres_server


@pytest.fixture(scope="class")
def probe_cluster(services, tmp_path_factory):
    """One cluster on the probe code location for every arrangement (each test restarts only the daemon with
    its settings). Every hold of the pool is appended to one log, the tests' own holds are the lines added while
    they ran."""
    tmp_path = tmp_path_factory.mktemp("pool-probe")
    log = tmp_path / "holds.log"
    log.touch()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_file:\n      relative_path: {REPO / 'deploy' / 'pool_probe.py'}\n"
                         f"      working_directory: {REPO / 'deploy'}\n")
    instance = instance_yaml(run_launcher="celery", pool_limit=1)
    with LocalCluster(tmp_path, services, instance, workspace, {"POOL_PROBE_LOG": str(log), "POOL_PROBE_SECONDS": "0.5"}) as cluster:
        yield cluster, log


class TestPoolArrangements:
    @pytest.mark.parametrize("arrangement, launcher, job, limit, granularity, honoured", [
        ("CeleryRunLauncher + in-process executor", "celery", "probe_in_process", 1, "op", True),
        ("default launcher + Celery executor", "default", "probe_celery", 1, "op", True),
        # Found here: granularity `run` limits runs, not the steps inside one, which the Celery executor runs in
        # parallel on both workers. This case is also the control: the measurement does see overlapping holds.
        ("pool granularity run + Celery executor", "default", "probe_celery", 1, "run", False),
    ])
    def test_which_arrangement_honours_the_pool(self, arrangement, launcher, job, limit, granularity, honoured, probe_cluster):
        cluster, log = probe_cluster
        cluster.restart_daemon(instance_yaml(run_launcher=launcher, pool_limit=limit, granularity=granularity))
        earlier_holds = len(log.read_text().splitlines())
        run_ids = []
        for _ in range(2):
            launched = cluster.graphql(LAUNCH, {"job": job})["launchRun"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            run_ids.append(launched["run"]["runId"])
        runs = cluster.wait_for_runs(run_ids, timeout=180)
        assert [run["status"] for run in runs] == ["SUCCESS", "SUCCESS"], arrangement
        holds = [line.split() for line in log.read_text().splitlines()[earlier_holds:]]
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
LOCATION = "persona_agents"
PROVISION_JOB = "provision_persona_agents"
RUN_BATCH = 250
CLI = [sys.executable, "-m", "persona_agents_pipeline.cli", "create-missing-agents", "--yes"]
ENSURE_LOOP = """
import sys
from persona_agents_pipeline import python_api
for persona_id in map(int, sys.argv[1:]):
    # Nobody else works on these personas, so the agent ensure_agent returns is this caller's own.
    assert not python_api.has_elevenlabs_agent(persona_id), f"persona {persona_id} got an agent from another caller"
    python_api.ensure_agent(persona_id)
"""


def code_location_env(personas_database_url: str, sandbox_url: str) -> dict[str, str]:
    return {
        "PERSONAS_DATABASE_URL": personas_database_url, "ELEVENLABS_BASE_URL": sandbox_url,
        "ELEVENLABS_API_KEY": "sandbox-test-key", "AUTO_CREATE_ELEVENLABS_AGENTS": "true",
        "ELEVENLABS_RATE_LIMIT": str(PER_SECOND), "PERSONA_AGENTS_SENSOR_INTERVAL": "2",
        "PERSONA_AGENTS_RUN_BATCH_SIZE": str(RUN_BATCH), "PERSONA_AGENTS_BUDGET_LEASE_SECONDS": "10",
        "PERSONA_AGENTS_CLAIM_LEASE_SECONDS": "10",
    }


def troubled(runs: list[dict]) -> list[dict]:
    """Runs that did not succeed, leaving out report refreshes still waiting or running: the status report
    sensor requests one after runs finish, so one may be queued whenever the test looks."""
    return [run for run in runs if run["status"] != "SUCCESS"
            and not (run["jobName"] == "refresh_agent_status_report" and run["status"] in ("QUEUED", "STARTING", "STARTED"))]


def provisioning_ranges(runs: list[dict]) -> dict[str, range]:
    """Each provisioning run's personas: its partition range (keys are persona ids, registered in order)."""
    tags = {run["runId"]: {tag["key"]: tag["value"] for tag in run["tags"]} for run in runs if run["jobName"] == PROVISION_JOB}
    return {run_id: range(int(tag[RANGE_START_TAG]), int(tag[RANGE_END_TAG]) + 1)
            for run_id, tag in tags.items()}


def id_ranges(ids: list[int]) -> str:
    """`--ids` for these persona ids: runs of consecutive ids as ranges."""
    spans: list[list[int]] = []
    for persona_id in sorted(ids):
        if spans and persona_id == spans[-1][1] + 1:
            spans[-1][1] = persona_id
        else:
            spans.append([persona_id, persona_id])
    return ",".join(f"{first}-{last}" for first, last in spans)


def created_by(output: str) -> int:
    """Agents a create-missing-agents pass made or adopted (a create the killed run sent may exist)."""
    summary = re.search(r"Summary: (\d+) created, (\d+) adopted", output)
    assert summary, output
    return int(summary[1]) + int(summary[2])


def finish_the_killed_runs_personas(cluster: LocalCluster, store, runs: list[dict]) -> None:
    """Only the killed run's personas may be left without an agent; an operator's CLI pass over them does
    what the daily backfill schedule would."""
    ranges = provisioning_ranges(runs)
    killed = [ranges[run["runId"]] for run in troubled(runs) if run["runId"] in ranges]
    left = store.ids_without_agents()
    assert all(any(persona_id in span for span in killed) for persona_id in left), (left, killed)
    if left:
        again = subprocess.run([*CLI, "--ids", id_ranges(left)], env=cluster.env, capture_output=True, text=True,
                               timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert created_by(again.stdout) == len(left), again.stdout


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
    with SandboxServer(max_concurrent=IN_FLIGHT, rate_limit=PER_SECOND, latency=0.05,
                       announce_limit="header") as sandbox:
        # Two API steps at once (one per worker): the shared budget, not the pool, keeps the account's limits.
        instance = instance_yaml(run_launcher="celery", pool_limit=2)
        with LocalCluster(tmp_path, services, instance, REPO / "workspace.yaml", code_location_env(postgres_url, sandbox.url)) as cluster:
            backfill = store.add_personas(demo_personas(1000, seed=21))
            # persona_partitions_sensor registers them (1,000 partitions and baselines: the daemon's slowest part,
            # README "At 100,000 personas"), then new_personas_sensor requests their runs.
            wait_until(lambda: len(provisioning_ranges(cluster.runs())) >= len(backfill) // RUN_BATCH,
                       "the sensor requests runs for the 1,000 personas", timeout=900)
            # The other sets are the CLI's and the application's alone: no sensor requests them.
            cluster.stop_sensor(LOCATION, "new_personas_sensor")
            cli_personas = store.add_personas(demo_personas(150, seed=22))
            interactive = store.add_personas(demo_personas(30, seed=23))
            everyone = backfill + cli_personas + interactive
            wait_until(lambda: sandbox.stats()["agents"] >= 50, "the runs create agents", timeout=600)
            cli = subprocess.Popen([*CLI, "--ids", id_ranges(cli_personas)], env=cluster.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            loop = subprocess.Popen([sys.executable, "-c", ENSURE_LOOP, *map(str, interactive)], env=cluster.env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wait_until(lambda: sandbox.stats()["agents"] >= 400, "400 agents exist", timeout=600)
            os.killpg(cluster.pid("worker1"), signal.SIGKILL)  # the worker and the run it executes, mid-run
            cluster.command("start")  # brings worker1 back
            cli_output, cli_errors = cli.communicate(timeout=300)
            assert cli.returncode == 0, cli_errors[-2000:]
            _, loop_errors = loop.communicate(timeout=300)
            assert loop.returncode == 0, loop_errors[-2000:]
            # Every run ends but the one killed with worker1: nothing tells Dagster that run is dead.
            wait_until(lambda: len(troubled(cluster.runs())) <= 1, "the runs finish", timeout=900)
            runs = cluster.runs()
            ranges = provisioning_ranges(runs)
            finish_the_killed_runs_personas(cluster, store, runs)
            worker_logs = [(cluster.state / "logs" / f"worker{n}.log").read_text() for n in (1, 2)]
        stats = sandbox.stats()
        assert_exactly_one_agent_each(store, sandbox.agents(), everyone)
        # Every live process has finished; only slots leaked by the killed worker could still be held.
        held = budget_backend(postgres_url).held_slots(account_id(sandbox.url, "sandbox-test-key"), time.time())
    store.engine.dispose()
    assert stats["peak_attempted_concurrency"] <= IN_FLIGHT, stats
    assert stats["max_requests_in_1s_window"] <= PER_SECOND, stats
    assert stats["rate_limited"] < 0.01 * stats["requests_total"], stats
    assert all("Task execute_job[" in log for log in worker_logs), "runs must go to both workers"
    # Who made which agent: the runs covered the 1,000 and nothing else; the CLI made every agent of its set
    # (the loop checked that each of its personas had none before its own call).
    assert all(any(persona_id in span for span in ranges.values()) for persona_id in backfill)
    assert not any(persona_id in span for span in ranges.values() for persona_id in cli_personas + interactive)
    assert created_by(cli_output) == len(cli_personas), cli_output
    # All runs succeed but the one killed mid-run (left STARTED, or FAILURE once its task is redelivered).
    assert len(ranges) >= len(backfill) // RUN_BATCH, runs
    assert len(troubled(runs)) <= 1, runs
    assert held == 0, "the killed worker's slots must come back within one lease"
