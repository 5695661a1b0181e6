"""The paths a user takes through the Dagster UI end as the truth: a "Backfill all" over healthy personas
succeeds, a new instance over personas with agents shows them materialized, the Checks tab's "Execute all"
checks every persona, a failed partition says why in one sentence."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus

from persona_agents_pipeline.defs.assets import persona_agent
from persona_agents_pipeline.defs.dagster_tags import DATA_VERSION_TAG
from persona_agents_pipeline.defs.partitions import personas_partitions

from dagster_backfill import backfill_instance, project_workspace, run_backfill
from dagster_helpers import failed_partitions, materializations, persona_rows, point_env_at

PARTITIONS = personas_partitions.name


@pytest.fixture
def store(sqlite_store, monkeypatch, sandbox):
    point_env_at(monkeypatch, sqlite_store.database_url, sandbox.url)
    return sqlite_store


def data_versions(instance, key: str) -> list[str]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=persona_agent.key, asset_partitions=[key]), limit=100
    ).records
    return [record.event_log_entry.tags[DATA_VERSION_TAG] for record in records]


def test_backfill_all_over_healthy_personas_ends_succeeded(store, sandbox):
    """Dagster counts a backfill's partition as done only by a materialization from one of its runs: a
    verified no-op must be one, with the partition's data version unchanged (no new version shown)."""
    ids = store.add_personas(persona_rows(5))
    keys = [str(i) for i in ids]
    with backfill_instance() as instance, project_workspace(instance) as workspace:
        instance.add_dynamic_partitions(PARTITIONS, keys)
        first, _ = run_backfill(workspace, persona_agent.key, keys)
        assert first == BulkActionStatus.COMPLETED_SUCCESS
        agents = {agent["agent_id"] for agent in sandbox.agents()}

        again, _ = run_backfill(workspace, persona_agent.key, keys)

        assert again == BulkActionStatus.COMPLETED_SUCCESS
        assert {agent["agent_id"] for agent in sandbox.agents()} == agents and len(agents) == 5
        for key in keys:
            latest, created = materializations(instance, key)
            assert (latest.metadata["outcome"].value, created.metadata["outcome"].value) == ("verified", "created")
            assert "no-op" in latest.metadata["note"].value
            newer, older = data_versions(instance, key)
            assert newer == older, "a verified no-op must not show a new data version"
        assert not failed_partitions(instance, keys)
