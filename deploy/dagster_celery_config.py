"""Celery settings for the workers of `deploy/local-cluster` (dagster_celery.app imports this module by name
when it is on PYTHONPATH): RabbitMQ carries the tasks, Redis keeps their results."""

import os

broker_url = os.environ.get("DAGSTER_CELERY_BROKER_URL", "pyamqp://guest:guest@127.0.0.1:5672//")
result_backend = os.environ.get("DAGSTER_CELERY_BACKEND_URL", "redis://127.0.0.1:6379/1")
# One task at a time per worker process: a run (or a step) is long; prefetching would starve the other worker.
worker_prefetch_multiplier = 1
