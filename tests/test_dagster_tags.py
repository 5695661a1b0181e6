"""The Dagster strings without a public name (defs/dagster_tags.py) equal Dagster's own values.

The only place private Dagster names are imported: comparing with them is the point of this test.
"""

import dagster as dg
from dagster._core.definitions import data_version as dagster_data_version
from dagster._core.storage import tags as dagster_tags

from persona_agents_pipeline.defs import dagster_tags as ours

KEY = dg.AssetKey(["some", "asset"])


def test_partition_tags_are_dagsters():
    assert ours.PARTITION_TAG == dagster_tags.PARTITION_NAME_TAG
    assert ours.BACKFILL_TAG == dagster_tags.BACKFILL_ID_TAG
    assert ours.range_tags("3", "9") == {
        dagster_tags.ASSET_PARTITION_RANGE_START_TAG: "3", dagster_tags.ASSET_PARTITION_RANGE_END_TAG: "9"
    }


def test_provenance_tags_are_dagsters():
    assert ours.DATA_VERSION_TAG == dagster_data_version.DATA_VERSION_TAG
    assert ours.CODE_VERSION_TAG == dagster_data_version.CODE_VERSION_TAG
    assert ours.input_data_version_tag(KEY) == dagster_data_version.get_input_data_version_tag(KEY)
    assert ours.input_event_pointer_tag(KEY) == dagster_data_version.get_input_event_pointer_tag(KEY)
    assert ours.NO_INPUT_EVENT == dagster_data_version.NULL_EVENT_POINTER
    assert ours.INITIAL_DATA_VERSION == dagster_data_version.DEFAULT_DATA_VERSION


def test_the_logical_data_version_is_dagsters():
    versions = {KEY: dg.DataVersion("b"), dg.AssetKey("personas"): dg.DataVersion("a"), dg.AssetKey("z"): dg.DataVersion("c")}
    for code_version, inputs in (("v1", versions), ("run-123", {}), ("v2", {KEY: ours.INITIAL_DATA_VERSION})):
        assert ours.logical_data_version(code_version, inputs) == dagster_data_version.compute_logical_data_version(
            code_version, inputs
        )


def test_provenance_written_with_them_is_read_back_by_dagsters_public_reader():
    tags = {
        ours.CODE_VERSION_TAG: "v1",
        ours.DATA_VERSION_TAG: "d1",
        ours.input_data_version_tag(KEY): "upstream-version",
        ours.input_event_pointer_tag(KEY): "42",
    }
    provenance = dg.DataProvenance.from_tags(tags)
    assert provenance.code_version == "v1"
    assert provenance.input_data_versions == {KEY: dg.DataVersion("upstream-version")}
    assert provenance.input_storage_ids == {KEY: 42}


def test_a_check_target_is_dagsters_target_materialization_record():
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    from persona_agents_pipeline.defs.checks import check_target

    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("x", partition=None))
        [record] = instance.fetch_materializations(dg.AssetKey("x"), limit=1).records
    target = check_target(record)
    assert target == AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )
