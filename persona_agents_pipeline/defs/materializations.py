"""Per-partition materializations recorded at the run's own cost, whatever the number of partitions.

`context.add_asset_metadata(partition_key=...)` checks each key against every registered partition: a
full read of the dynamic partitions per call (about 0.2-0.4 s at 100,000 partitions), so a 500-persona
run spent minutes on it. The asset instead yields one `AssetMaterialization` per persona as its result
arrives, which Dagster stores as it is.

Yielded materializations get no data provenance from Dagster (it writes that only for an asset's
output), and without it Dagster's stale status (the UI's "stale") cannot see a later trait edit. So the
recorder attaches the provenance Dagster would have written for the run's output: the code version,
and for each upstream asset the newest event the run started from (its storage id and data version). A
partition is then stale exactly when its `personas` partition is observed with a new data version
after that event, as for materializations Dagster records itself.

A verification that changed nothing (a no-op) is a materialization too: Dagster 1.13 counts a partition
of a backfill (and of a run) as done only by a materialization from that run, so a "Backfill all" over
healthy personas recorded as observations ended as a failed backfill. A no-op on the agent the partition's
last materialization recorded keeps that one's data version, so the partition shows no new version; its
provenance is the run's, so a stale partition turns fresh; its outcome `verified` says nothing changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import dagster as dg

from .dagster_internals import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    INITIAL_DATA_VERSION,
    NO_INPUT_EVENT,
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    input_data_version_tag,
    input_event_pointer_tag,
    latest_storage_id_by_partition,
    logical_data_version,
)
from .partitions import key_chunks, personas_partitions


def newest_event(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> dg.EventLogRecord | None:
    """The asset's newest materialization or observation: one indexed query each, at any partition count."""
    candidates = [
        *instance.fetch_materializations(asset_key, limit=1).records,
        *instance.fetch_observations(asset_key, limit=1).records,
    ]
    return max(candidates, key=lambda record: record.storage_id, default=None)


def provenance(instance: dg.DagsterInstance, dep_keys: Sequence[dg.AssetKey], code_version: str) -> dict[str, str]:
    """Provenance tags of a materialization made now from `dep_keys`' newest events, under `code_version`."""
    tags = {CODE_VERSION_TAG: code_version}
    input_versions: dict[dg.AssetKey, dg.DataVersion] = {}
    for dep_key in dep_keys:
        record = newest_event(instance, dep_key)
        version = (record.event_log_entry.tags or {}).get(DATA_VERSION_TAG) if record else None
        input_versions[dep_key] = dg.DataVersion(version) if version else INITIAL_DATA_VERSION
        tags[input_data_version_tag(dep_key)] = input_versions[dep_key].value
        tags[input_event_pointer_tag(dep_key)] = str(record.storage_id) if record else NO_INPUT_EVENT
    tags[DATA_VERSION_TAG] = logical_data_version(code_version, input_versions).value
    return tags


def provenance_tags(context: dg.AssetExecutionContext) -> dict[str, str]:
    """The provenance of the current step's asset, read now (call it when the step starts)."""
    asset_key = context.asset_key
    code_version = context.assets_def.code_versions_by_key.get(asset_key) or context.run.run_id
    return provenance(context.instance, [dep.asset_key for dep in context.assets_def.specs_by_key[asset_key].deps], code_version)


def latest_by_partition(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, event_type: dg.DagsterEventType, keys: list[str]
) -> dict[str, int]:
    """Storage id of each partition's newest event of one type: one indexed query per chunk of keys."""
    latest: dict[str, int] = {}
    for chunk in key_chunks(keys):
        latest.update(latest_storage_id_by_partition(instance, asset_key, event_type, chunk))
    return latest


def latest_materializations(instance: dg.DagsterInstance, asset_key: dg.AssetKey, keys: list[str]) -> dict[str, dg.EventLogRecord]:
    """Each partition's newest materialization record: two indexed queries per chunk of keys."""
    latest: dict[str, dg.EventLogRecord] = {}
    for chunk in key_chunks(list(latest_by_partition(instance, asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, keys).values())):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=chunk), limit=len(chunk)
        ).records
        latest.update({record.partition_key: record for record in records if record.partition_key})
    return latest


def run_partition_keys(instance: dg.DagsterInstance, tags: Mapping[str, str]) -> list[str] | None:
    """The partition keys a run targets, from its tags (None: the run names no partitions)."""
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    if RANGE_START_TAG not in tags or RANGE_END_TAG not in tags:
        return None
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        key_range = dg.PartitionKeyRange(tags[RANGE_START_TAG], tags[RANGE_END_TAG])
        return list(personas_partitions.get_partition_keys_in_range(key_range))


@dataclass(frozen=True)
class PartitionRecorder:
    """Builds the materialization of one partition of the step's asset, with the step's provenance."""

    asset_key: dg.AssetKey
    tags: Mapping[str, str]


    @classmethod
    def at_step_start(cls, context: dg.AssetExecutionContext) -> PartitionRecorder:
        return cls(context.asset_key, provenance_tags(context))

    def materialization(
        self, partition_key: str, metadata: Mapping[str, dg.MetadataValue], same_as: dg.EventLogRecord | None = None
    ) -> dg.AssetMaterialization:
        """The partition's materialization; `same_as`: the earlier materialization a no-op confirmed, whose
        data version (and code version) it keeps."""
        tags = dict(self.tags)
        if same_as is not None:
            earlier = same_as.event_log_entry.tags or {}
            tags.update({tag: earlier[tag] for tag in (DATA_VERSION_TAG, CODE_VERSION_TAG) if tag in earlier})
        return dg.AssetMaterialization(asset_key=self.asset_key, partition=partition_key, metadata=dict(metadata), tags=tags)
