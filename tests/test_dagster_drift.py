"""Drift in Dagster: trait edits mark persona_agent partitions stale, agent_drift_sensor updates exactly those agents.

Real DagsterInstance, real persona store (SQLite and PostgreSQL), the HTTP sandbox; sensor ticks and their
runs are carried out the way the daemon does (asset events reported, partitions added, runs executed).
"""

from __future__ import annotations

import copy

import dagster as dg
import pytest
from sqlalchemy import text

from persona_agents_pipeline.defs.assets import persona_agent
from persona_agents_pipeline.defs.change_cursor import own_position
from persona_agents_pipeline.defs.checks import MATCHES, persona_agent_checks
from persona_agents_pipeline.defs.partitions import personas_partitions
from persona_agents_pipeline.defs.resources import PersonaStoreResource
from persona_agents_pipeline.defs.run_requests import range_run_request
from persona_agents_pipeline.defs.schedules import missing_agent_run_requests
from persona_agents_pipeline.defs.sensors import agent_drift_sensor, new_personas_sensor, persona_partitions_sensor
from persona_agents_pipeline.definitions import defs
from persona_agents_pipeline.in_process_runs import execute_run_request
from persona_agents_pipeline.voice_policy import DEFAULT_VOICE_CATALOGUE, choose_voice, voice_settings

from dagster_helpers import (
    apply_asset_events, flip_traits, latest_metadata, materializations, persona_rows, point_env_at, run_tick, stale_keys,
)

PERSONAS = 30
EDITED = slice(2, None, 7)  # 4 scattered personas out of 30


@pytest.fixture
def env(monkeypatch, store, sandbox):
    point_env_at(monkeypatch, store.database_url, sandbox.url)
    return {"persona_store": PersonaStoreResource(database_url=store.database_url)}


def test_edited_personas_become_stale_and_only_they_are_updated_in_place(store, sandbox, env, instance):
    ids = store.add_personas(persona_rows(PERSONAS))
    keys = [str(i) for i in ids]
    run_tick(persona_partitions_sensor, instance, env)  # registers them
    created, runs = run_tick(new_personas_sensor, instance, env)
    assert runs and all(run.success for run in runs)
    agents = {p.id: p.elevenlabs_agent_id for p in store.with_agents()}
    assert len(agents) == PERSONAS == len(sandbox.agents())
    assert stale_keys(instance, keys) == set()

    # The drift sensor starts from the same point of the change log as the creation.
    first = agent_drift_sensor(dg.build_sensor_context(instance=instance, cursor=created.cursor, resources=env))
    assert isinstance(first, dg.SkipReason)

    edited = ids[EDITED]
    for persona_id in edited:
        flip_traits(store, persona_id)
    # An edit that changes nothing the agent is built from (same value written back) requests nothing.
    untouched_edit = ids[0]
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE personas SET temper_level = temper_level WHERE id = :id"), {"id": untouched_edit})
    remote_before = {agent["agent_id"]: copy.deepcopy(agent) for agent in sandbox.agents()}
    counts_before = {key: len(materializations(instance, key)) for key in keys}

    # One tick: the edited personas are observed with their new config hash (stale in the UI) ...
    result = agent_drift_sensor(dg.build_sensor_context(instance=instance, cursor=created.cursor, resources=env))
    assert isinstance(result, dg.SensorResult)
    apply_asset_events(instance, result.asset_events)
    assert stale_keys(instance, keys) == {str(i) for i in edited}
    # ... and their update is requested in update mode, in runs over exactly the edited partitions.
    assert len(result.run_requests) == len(edited)  # scattered: one run each
    for request in result.run_requests:
        assert request.run_config["ops"]["persona_agent"]["config"]["mode"] == "update"
        assert request.asset_check_keys == [], "automated runs leave the per-agent checks to verify_agents"
    assert own_position(env["persona_store"], result.cursor) == str(store.latest_change_seq())

    assert all(execute_run_request(instance, request).success for request in result.run_requests)

    # Updated in place: same agent ids, the voice and settings the new traits produce.
    assert {p.id: p.elevenlabs_agent_id for p in store.with_agents()} == agents
    remote = {agent["agent_id"]: agent for agent in sandbox.agents()}
    assert set(remote) == set(agents.values())
    for persona_id in edited:
        spec = store.get(persona_id).spec()
        tts = remote[agents[persona_id]]["conversation_config"]["tts"]
        assert tts["voice_id"] == DEFAULT_VOICE_CATALOGUE[choose_voice(spec).name]
        assert tts["stability"] == voice_settings(spec)["stability"]
        assert tts != remote_before[agents[persona_id]]["conversation_config"]["tts"]
        metadata = latest_metadata(instance, str(persona_id))
        assert metadata["outcome"] == "updated"
        assert metadata["agent_id"] == agents[persona_id]
        history = metadata["history"]
        assert history.index("| updated |") < history.index("| created |"), "newest first"
        assert agents[persona_id] in history
    # Unchanged personas: their agents are exactly as before, and no no-op materialization buries their history.
    unchanged = [pid for pid in ids if pid not in edited]
    for persona_id in unchanged:
        assert remote[agents[persona_id]] == remote_before[agents[persona_id]]
        assert len(materializations(instance, str(persona_id))) == counts_before[str(persona_id)]

    # Fresh again, and the next tick requests nothing.
    assert stale_keys(instance, keys) == set()
    again = agent_drift_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor, resources=env))
    assert isinstance(again, dg.SkipReason)
    # The config-drift check, run as the verify_agents schedule runs it, passes.
    verify = range_run_request(keys, run_key=None, reason="test", checks_only=True)
    checks = {e.check_name: e for e in execute_run_request(instance, verify).get_asset_check_evaluations()}
    assert checks[MATCHES].passed


def test_drift_sensor_ignores_inserts_deletes_and_personas_without_agents(store, sandbox, env, instance):
    ids = store.add_personas(persona_rows(3))
    instance.add_dynamic_partitions(personas_partitions.name, [str(i) for i in ids])
    flip_traits(store, ids[0])  # no agent yet: a creation matter, not drift
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM personas WHERE id = :id"), {"id": ids[1]})

    result = agent_drift_sensor(dg.build_sensor_context(instance=instance, resources=env))

    assert not result.run_requests and not result.asset_events
    assert own_position(env["persona_store"], result.cursor) == str(store.latest_change_seq()), "the cursor moves past what needed nothing"
    assert len(sandbox.agents()) == 0


def test_failed_check_points_to_the_repair():
    spec = next(spec for spec in persona_agent_checks.check_specs if spec.name == MATCHES)
    assert "Materialize" in spec.description and "persona-agents apply" in spec.description


def test_partitions_made_by_the_demo_path_become_stale_after_a_trait_edit(store, sandbox, env, instance):
    """The backfill schedule's path (also the demo's): its partitions get a baseline, so an edit shows stale."""
    ids = store.add_personas(persona_rows(3))
    keys = [str(i) for i in ids]
    requests = missing_agent_run_requests(instance, env["persona_store"])
    assert all(execute_run_request(instance, request).success for request in requests)
    assert stale_keys(instance, keys) == set()
    flip_traits(store, ids[1])
    result, runs = run_tick(agent_drift_sensor, instance, env)
    assert stale_keys(instance, keys) == set() and runs and all(run.success for run in runs)
    assert latest_metadata(instance, keys[1])["outcome"] == "updated"


def test_an_edit_shows_stale_until_the_update_runs(store, sandbox, env, instance):
    ids = store.add_personas(persona_rows(2))
    keys = [str(i) for i in ids]
    for request in missing_agent_run_requests(instance, env["persona_store"]):
        assert execute_run_request(instance, request).success
    flip_traits(store, ids[0])
    result = agent_drift_sensor(dg.build_sensor_context(instance=instance, resources=env))
    apply_asset_events(instance, result.asset_events)
    assert stale_keys(instance, keys) == {keys[0]}


def test_drift_sensor_is_registered_with_the_automation_default():
    sensor = defs.get_sensor_def("agent_drift_sensor")
    assert sensor.default_status == defs.get_sensor_def("new_personas_sensor").default_status
