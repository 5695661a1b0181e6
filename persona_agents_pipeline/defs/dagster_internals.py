"""Every Dagster surface this package relies on that Dagster 1.13 does not make public, in one place.

Each is here because the public API offers no way to do what it does at the scale the pipeline runs at
(100,000 partitions). tests/test_dagster_internals.py pins each against Dagster's own behaviour, so an
upgrade that changes one fails there, not silently in the UI; pyproject.toml pins the Dagster family to
the minor release that test passes on.

Strings Dagster reads without a public name:
- the run tags naming a run's partitions (`dagster/partition`, the partition range start and end):
  `RunRequest` has no public range argument, and a run's partitions are read back from them;
- `dagster/backfill`, on every run a backfill launches;
- the provenance tags (data version, code version, input data versions and event pointers) that
  Dagster's stale status reads from a materialization, and `logical_data_version`, a copy of the hash
  Dagster computes for an output: the asset yields one materialization per persona (Dagster writes
  provenance only for an asset's output), so it writes the provenance Dagster would have written.

Calls and classes without a public name:
- `check_target`: an asset check result's target materialization
  (`AssetCheckEvaluationTargetMaterializationData`), built from its serialized form;
- `latest_storage_id_by_partition` (`event_log_storage.get_latest_storage_id_by_partition`): each
  partition's newest event in one indexed query; the public `fetch_*` calls read every event;
- `current_failed_check_partitions` (`event_log_storage.get_asset_check_partition_info`): each
  partition's latest check result in one query;
- `existing_dynamic_partitions` (`DagsterInstance.get_existing_dynamic_partitions`): which of some keys
  are registered, without reading all 100,000 (`has_dynamic_partition` is one query per key).

deploy/dagster.yaml also names the queued run coordinator by its module, `dagster._core.run_coordinator`,
as Dagster's deployment documentation does: it is the only way to set the queue's dequeue interval.
"""

from __future__ import annotations

import json
from hashlib import sha256
from typing import AbstractSet, Any, Iterable, Mapping, Sequence

import dagster as dg

# dagster/_core/storage/tags.py: PARTITION_NAME_TAG, ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# dagster/_core/storage/tags.py: BACKFILL_ID_TAG, on every run a backfill launches
BACKFILL_TAG = "dagster/backfill"

# dagster/_core/definitions/data_version.py: DATA_VERSION_TAG, CODE_VERSION_TAG,
# INPUT_DATA_VERSION_TAG_PREFIX, INPUT_EVENT_POINTER_TAG_PREFIX, NULL_EVENT_POINTER, DEFAULT_DATA_VERSION
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
INPUT_DATA_VERSION_TAG_PREFIX = "dagster/input_data_version"
INPUT_EVENT_POINTER_TAG_PREFIX = "dagster/input_event_pointer"
NO_INPUT_EVENT = "NULL"  # the event pointer of an input never materialized nor observed
INITIAL_DATA_VERSION = dg.DataVersion("INITIAL")  # the data version of such an input


def range_tags(first_key: str, last_key: str) -> dict[str, str]:
    """The tags that make a run cover the partition range first_key..last_key."""
    return {RANGE_START_TAG: first_key, RANGE_END_TAG: last_key}


def input_data_version_tag(asset_key: dg.AssetKey) -> str:
    return f"{INPUT_DATA_VERSION_TAG_PREFIX}/{asset_key.to_user_string()}"


def input_event_pointer_tag(asset_key: dg.AssetKey) -> str:
    return f"{INPUT_EVENT_POINTER_TAG_PREFIX}/{asset_key.to_user_string()}"


def logical_data_version(code_version: str, input_versions: Mapping[dg.AssetKey, dg.DataVersion]) -> dg.DataVersion:
    """The data version Dagster gives an output it computed: a hash of the code version and the input data
    versions in key order (compute_logical_data_version in dagster/_core/definitions/data_version.py)."""
    ordered = [input_versions[key].value for key in sorted(input_versions, key=str)]
    return dg.DataVersion(sha256("".join([code_version, *ordered]).encode("utf8")).hexdigest())


def check_target(record: dg.EventLogRecord) -> Any:
    """The materialization a check result is about, as AssetCheckEvaluation's target_materialization_data.

    Its class has no public name, so it is built from its serialized form: the event log's storage format,
    which Dagster keeps readable across versions."""
    fields = {"storage_id": record.storage_id, "run_id": record.run_id, "timestamp": record.timestamp}
    return dg.deserialize_value(json.dumps({"__class__": "AssetCheckEvaluationTargetMaterializationData", **fields}))


def latest_storage_id_by_partition(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, event_type: dg.DagsterEventType, partitions: Iterable[str]
) -> dict[str, int]:
    """Storage id of each of `partitions`' newest event of one type (partitions without one are left out)."""
    return instance.event_log_storage.get_latest_storage_id_by_partition(asset_key, event_type, partitions=set(partitions))


def current_failed_check_partitions(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, partition_keys: Sequence[str] | None = None
) -> set[str]:
    """Partitions (of `partition_keys`, or all) whose latest evaluation of the check failed and is about their
    newest materialization."""
    return {
        info.partition_key
        for info in instance.event_log_storage.get_asset_check_partition_info([check_key], partition_keys=partition_keys)
        if info.partition_key and info.latest_execution_status.value == "FAILED" and info.is_current
    }


def existing_dynamic_partitions(instance: dg.DagsterInstance, partitions_def_name: str, keys: Sequence[str]) -> AbstractSet[str]:
    """Those of `keys` registered in the dynamic partitions definition: one query, whatever the count registered."""
    return instance.get_existing_dynamic_partitions(partitions_def_name, keys)
