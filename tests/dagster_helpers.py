"""Helpers for the Dagster tests: run what a sensor or schedule requested, the way the daemon would."""

from __future__ import annotations

from typing import Iterable

import dagster as dg

from persona_agents_pipeline.definitions import defs


def apply_partition_requests(instance: dg.DagsterInstance, requests: Iterable) -> None:
    """What the sensor daemon does with a SensorResult's dynamic_partitions_requests."""
    for request in requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def apply_asset_events(instance: dg.DagsterInstance, events: Iterable) -> None:
    """What the sensor daemon does with a SensorResult's asset_events (before it submits the runs)."""
    for event in events:
        instance.report_runless_asset_event(event)


def execute_run_request(instance: dg.DagsterInstance, request: dg.RunRequest, run_config: dict | None = None):
    """Execute one requested run in this process against the real instance."""
    job = defs.resolve_implicit_global_asset_job_def()
    if request.asset_check_keys is not None:  # the request names its checks (possibly none)
        job = job.get_subset(asset_selection=set(request.asset_selection), asset_check_selection=set(request.asset_check_keys))
    return job.execute_in_process(
        instance=instance,
        asset_selection=None if request.asset_check_keys is not None else list(request.asset_selection),
        tags=dict(request.tags),
        run_config=run_config or request.run_config or {},
        raise_on_error=False,
    )
