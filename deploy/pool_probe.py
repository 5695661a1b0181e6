"""A probe code location that shows whether a deployment honours the `elevenlabs_api` pool.

Each op holds the pool while it sleeps and appends its (start, end) to $POOL_PROBE_LOG; with a pool limit of
1, no two intervals in that file may overlap, across runs and workers. `probe_in_process` runs its steps in
the run worker (e.g. under CeleryRunLauncher); `probe_celery` sends each step to the Celery workers.
"""

import os
import time

import dagster as dg
from dagster_celery import celery_executor

from persona_agents_pipeline.defs.assets import ELEVENLABS_POOL


def _probe(name: str) -> dg.OpDefinition:
    @dg.op(name=name, pool=ELEVENLABS_POOL)
    def hold_the_pool() -> None:
        started = time.time()
        time.sleep(float(os.environ.get("POOL_PROBE_SECONDS", "1.0")))
        with open(os.environ["POOL_PROBE_LOG"], "a") as log:
            log.write(f"{started!r} {time.time()!r} {os.getpid()}\n")

    return hold_the_pool


@dg.graph
def three_parallel_calls() -> None:
    for number in range(3):
        _probe(f"call_{number}")()


celery = celery_executor.configured({
    "broker": {"env": "DAGSTER_CELERY_BROKER_URL"},
    "backend": {"env": "DAGSTER_CELERY_BACKEND_URL"},
    # The steps go to the queue this deployment's workers take (deploy/local-cluster), not to Celery's default.
    "config_source": {"task_default_queue": os.environ.get("DAGSTER_CELERY_QUEUE", "dagster")},
})

defs = dg.Definitions(jobs=[
    three_parallel_calls.to_job(name="probe_in_process", executor_def=dg.in_process_executor),
    three_parallel_calls.to_job(name="probe_celery", executor_def=celery),
])
