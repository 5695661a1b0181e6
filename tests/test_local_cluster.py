"""The distributed deployment (deploy/local-cluster: PostgreSQL storage, queued runs, Celery workers over
RabbitMQ with Redis results), found out by running it: which arrangement honours the `elevenlabs_api` pool.

The probe code location (deploy/pool_probe.py) holds the pool in three parallel ops per run and logs each
hold; two runs are submitted at once. A pool limit of 1 must leave no two holds overlapping, across runs
and across both workers.
"""

from __future__ import annotations

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
    with LocalCluster(tmp_path, services, instance, workspace, {"POOL_PROBE_LOG": str(log)}) as cluster:
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
