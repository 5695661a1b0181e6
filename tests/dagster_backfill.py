"""A backfill as the UI launches it, carried out by Dagster's own backfill daemon code in this process.

Dagster 1.13 gives no public way to run an asset backfill without a daemon; these non-public calls (the
daemon's iteration, the backfill record, an in-process code location and a synchronous run launcher) are
the ones `dagster-daemon` and the UI's "Materialize" over several partitions use, so the backfill's final
status is Dagster's own verdict.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from contextlib import contextmanager
from typing import Iterator, Sequence

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration

# Runs launched by the backfill execute synchronously in this process.
SYNC_RUN_LAUNCHER = {
    "run_launcher": {"module": "dagster._core.launcher.sync_in_memory_run_launcher", "class": "SyncInMemoryRunLauncher"},
    "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
}
MAX_ITERATIONS = 20


@contextmanager
def backfill_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(overrides=SYNC_RUN_LAUNCHER) as instance:
        yield instance


@contextmanager
def project_workspace(instance: dg.DagsterInstance) -> Iterator[WorkspaceProcessContext]:
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name="persona_agents_pipeline.definitions", attribute="defs")
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        yield context


def run_backfill(
    context: WorkspaceProcessContext, asset_key: dg.AssetKey, keys: Sequence[str], run_config: dict | None = None
) -> tuple[BulkActionStatus, PartitionBackfill]:
    """Launches a backfill of `keys` of the asset (the partitions page's Materialize) and iterates the
    backfill daemon until it ends; returns its final status and record."""
    instance = context.instance
    backfill_id = uuid.uuid4().hex[:8]
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id, asset_graph=context.create_request_context().asset_graph,
        partition_names=list(keys), asset_selection=[asset_key], backfill_timestamp=time.time(), tags={},
        dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=run_config,
    )
    instance.add_backfill(backfill)
    logger = logging.getLogger("test_backfill")
    for _ in range(MAX_ITERATIONS):
        list(execute_backfill_iteration(context, logger))
        record = instance.get_backfill(backfill_id)
        if record.status not in (BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING):
            return record.status, record
    return record.status, record
