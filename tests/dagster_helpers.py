"""Helpers for the Dagster tests: apply what a sensor returned, the way the daemon would."""

from __future__ import annotations

from typing import Iterable

import dagster as dg


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
