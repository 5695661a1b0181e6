"""What Dagster 1.13 reads but gives no public name, each defined once here.

Run tags that name a run's partitions (`RunRequest` has no public range argument, and a run's partitions
are read back from them); the provenance tags its stale-status logic reads from a materialization, and
the logical data version it computes for one. tests/test_dagster_tags.py pins every value against
Dagster's own, so an upgrade that changes one fails there, not silently in the UI.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Mapping

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
