"""Every Dagster surface without a public name (defs/dagster_internals.py) behaves as Dagster's own does.

An upgrade that changes one fails here. The only place private Dagster names are imported: comparing with
them is the point of this test.
"""

from pathlib import Path

import dagster as dg
import yaml
from dagster._core.definitions import data_version as dagster_data_version
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage import tags as dagster_tags

from persona_agents_pipeline.defs import dagster_internals as ours

KEY = dg.AssetKey(["some", "asset"])
CHECK = dg.AssetCheckKey(KEY, "some_check")
DEPLOY_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"


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


def materialize(instance: dg.DagsterInstance, partition: str) -> dg.EventLogRecord:
    instance.report_runless_asset_event(dg.AssetMaterialization(KEY, partition=partition))
    return instance.fetch_materializations(KEY, limit=1).records[0]


def test_a_check_target_is_dagsters_target_materialization_record(instance):
    record = materialize(instance, "1")
    assert ours.check_target(record) == AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )


def test_the_latest_storage_id_by_partition_is_each_partitions_newest_event(instance):
    first_of_1, only_of_2, newest_of_1 = (materialize(instance, key) for key in ("1", "2", "1"))
    instance.report_runless_asset_event(dg.AssetObservation(KEY, partition="3"))
    latest = ours.latest_storage_id_by_partition(instance, KEY, dg.DagsterEventType.ASSET_MATERIALIZATION, ["1", "2", "3"])
    assert latest == {"1": newest_of_1.storage_id, "2": only_of_2.storage_id}
    assert first_of_1.storage_id < newest_of_1.storage_id
    observed = ours.latest_storage_id_by_partition(instance, KEY, dg.DagsterEventType.ASSET_OBSERVATION, ["1", "3"])
    assert set(observed) == {"3"}


def evaluate(instance: dg.DagsterInstance, partition: str, passed: bool, target: dg.EventLogRecord) -> None:
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=KEY, check_name=CHECK.name, partition=partition, passed=passed,
        target_materialization_data=ours.check_target(target),
    ))


def test_a_failed_check_counts_until_a_newer_materialization(instance):
    targets = {key: materialize(instance, key) for key in ("1", "2", "3")}
    evaluate(instance, "1", False, targets["1"])
    evaluate(instance, "2", False, targets["2"])
    evaluate(instance, "3", True, targets["3"])
    assert ours.current_failed_check_partitions(instance, CHECK) == {"1", "2"}
    materialize(instance, "1")  # repaired: the failure is about an older materialization
    assert ours.current_failed_check_partitions(instance, CHECK) == {"2"}


def test_existing_dynamic_partitions_answers_for_the_keys_asked_in_a_bounded_query(instance):
    instance.add_dynamic_partitions("personas", ["1", "2", "3"])
    assert set(ours.existing_dynamic_partitions(instance, "personas", ["2", "3", "4"])) == {"2", "3"}
    # Without this, Dagster answers by reading every registered key: minutes at 100,000 personas.
    assert instance.event_log_storage.has_bounded_dynamic_partition_membership_query


def test_the_deploy_configs_run_coordinator_module_is_dagsters_queued_run_coordinator(tmp_path):
    config = yaml.safe_load(DEPLOY_CONFIG.read_text())["run_coordinator"]
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"run_coordinator": config}))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_coordinator.dequeue_interval_seconds == config["config"]["dequeue_interval_seconds"]
