"""The Dagster layer against a real DagsterInstance, a real SQLite persona store and the HTTP sandbox."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest

from persona_agents_pipeline.defs.assets import persona_agent
from persona_agents_pipeline.defs.change_cursor import own_position
from persona_agents_pipeline.defs.checks import EXISTS, MATCHES
from persona_agents_pipeline.defs.checks_after_materialize import checks_after_materialize_sensor
from persona_agents_pipeline.defs.dagster_internals import BACKFILL_TAG, DATA_VERSION_TAG, range_tags
from persona_agents_pipeline.defs.partitions import personas_partitions
from persona_agents_pipeline.defs.resources import ElevenLabsResource, PersonaStoreResource, provisioning_service
from persona_agents_pipeline.defs.run_requests import ENSURE_RUN_CONFIG, range_run_request, spans
from persona_agents_pipeline.defs.schedules import backfill_missing_agents
from persona_agents_pipeline.defs.sensors import new_personas_sensor, persona_partitions_sensor
from persona_agents_pipeline.definitions import defs
from persona_agents_pipeline.in_process_runs import execute_run_request
from persona_agents_pipeline.sandbox import SandboxServer

from dagster_helpers import (
    apply_partition_requests,
    failed_partitions,
    latest_metadata,
    materializations,
    persona_rows,
    point_env_at,
    range_of,
    run_tick,
)

PARTITIONS = personas_partitions.name
RESOURCES = {"persona_store": PersonaStoreResource()}


@pytest.fixture
def api_key() -> str:
    # A key unique to the test, so finding it anywhere in the event log is unambiguous.
    return f"sk-dagster-test-{uuid.uuid4().hex}"


@pytest.fixture
def env_sandbox(api_key):
    """The sandbox the environment points the Dagster definitions at; it accepts only api_key."""
    with SandboxServer(api_keys=[api_key], latency=0.005) as server:
        yield server


@pytest.fixture
def env_store(sqlite_store, monkeypatch, env_sandbox, api_key):
    """A SQLite persona store that the Dagster definitions find through the environment, with env_sandbox."""
    point_env_at(monkeypatch, sqlite_store.database_url, env_sandbox.url, api_key)
    return sqlite_store


def run_sensor_tick(instance, cursor=None):
    """A tick of persona_partitions_sensor (which registers new personas), then one of new_personas_sensor (which
    requests their runs), both from the same place in the change log; new_personas_sensor's result and runs."""
    run_tick(persona_partitions_sensor, instance, RESOURCES, cursor)
    return run_tick(new_personas_sensor, instance, RESOURCES, cursor)


def data_version(instance, key: str) -> str:
    """The data version of persona_agent's latest materialization of one partition."""
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=persona_agent.key, asset_partitions=[key]), limit=1
    ).records
    return record.event_log_entry.tags[DATA_VERSION_TAG]


def test_a_verified_noop_is_materialized_with_the_partitions_data_version(env_store, instance, env_sandbox, api_key):
    """Converging to 'verified' materializes every partition (Dagster counts a run's or a backfill's partition
    as done only so): one never materialized (agent made outside Dagster), one failed since, one stale, and a
    green, fresh one. Each that was materialized keeps its data version: the same agent, no new version."""
    ids = env_store.add_personas(persona_rows(4))
    keys = [str(i) for i in ids]
    instance.add_dynamic_partitions(PARTITIONS, keys)
    assert execute_run_request(instance, range_request(ids[:3])).success
    service = provisioning_service(PersonaStoreResource(), ElevenLabsResource(api_key=api_key))
    assert service.ensure_agent(ids[3]).ok  # the CLI's path: an agent, no materialization
    with env_store.engine.begin() as connection:  # a bad value fails ids[1]'s partition ...
        connection.exec_driver_sql(f"UPDATE personas SET chattiness = 7 WHERE id = {ids[1]}")
    assert not execute_run_request(instance, range_request(ids[1:2])).success
    with env_store.engine.begin() as connection:  # ... and is put back: its agent is current again
        connection.exec_driver_sql(f"UPDATE personas SET chattiness = {persona_rows(4)[1]['chattiness']} WHERE id = {ids[1]}")
    # ids[2]'s persona is observed with a new data version (stale); its agent is brought up to date by the CLI.
    with env_store.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE personas SET temper_level = 0.95 WHERE id = {ids[2]}")
    instance.report_runless_asset_event(dg.AssetObservation("personas", partition=keys[2], tags={DATA_VERSION_TAG: "edited"}))
    assert service.update_agent(ids[2]).outcome.value == "updated"
    service.client.close()
    before = {key: len(materializations(instance, key)) for key in keys}
    versions = {key: data_version(instance, key) for key in keys[:3]}

    assert execute_run_request(instance, range_request(ids)).success

    assert {key: len(materializations(instance, key)) - before[key] for key in keys} == dict.fromkeys(keys, 1)
    assert {key: latest_metadata(instance, key)["outcome"] for key in keys} == dict.fromkeys(keys, "verified")
    assert {key: data_version(instance, key) for key in keys[:3]} == versions
    assert instance.get_materialized_partitions(persona_agent.key) == set(keys)
    assert not failed_partitions(instance, keys)


def single_partition_request(key: str) -> dg.RunRequest:
    return dg.RunRequest(asset_selection=[persona_agent.key], tags=range_tags(key, key))


def check_results(run_result) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in run_result.get_asset_check_evaluations()}


def test_definitions_load_and_validate():
    repository = defs.get_repository_def()
    assert {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()} >= {
        "personas",
        "persona_agent",
        "agent_status_report",
    }
    assert defs.get_sensor_def("new_personas_sensor")
    assert defs.get_schedule_def("backfill_missing_agents").cron_schedule == "0 3 * * *"
    assert persona_agent.op.pool == "elevenlabs_api"


def test_sensor_adds_partitions_and_its_runs_create_agents(env_store, instance, env_sandbox, api_key):
    ids = env_store.add_personas(persona_rows(30))

    result, runs = run_sensor_tick(instance)

    assert isinstance(result, dg.SensorResult)
    assert sorted(instance.get_dynamic_partitions(PARTITIONS), key=int) == [str(i) for i in ids]
    assert 1 <= len(result.run_requests) <= 2, "30 personas must not become 30 runs"
    assert all(run.success for run in runs)
    assert len(env_sandbox.agents()) == 30
    assert env_store.ids_without_agents() == []
    assert instance.get_materialized_partitions(persona_agent.key) == {str(i) for i in ids}

    metadata = latest_metadata(instance, str(ids[0]))
    persona = env_store.get(ids[0])
    assert metadata["outcome"] == "created"
    assert metadata["agent_id"] == persona.elevenlabs_agent_id
    assert metadata["voice_id"] == persona.voice_id
    assert metadata["voice_name"] in {"Bella", "Rachel", "Adam", "Domi", "Ethan"}
    assert metadata["voice_settings"] == persona.voice_settings
    assert metadata["dashboard"].endswith("/" + persona.elevenlabs_agent_id)

    # The next tick, from the cursor the first one returned, adds and requests nothing.
    again, runs_again = run_sensor_tick(instance, result.cursor)
    assert isinstance(again, dg.SkipReason) or (not again.run_requests and not again.dynamic_partitions_requests)
    assert runs_again == []
    assert len(env_sandbox.agents()) == 30

    # The key never appears in any event of the instance's event log.
    for run in instance.get_runs():
        for record in instance.all_logs(run.run_id):
            assert api_key not in repr(record), f"API key leaked into an event of run {run.run_id}"
            assert api_key not in str(run.run_config)


def sync_tick(instance, cursor=None):
    return persona_partitions_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=RESOURCES))


def test_partitions_mirror_the_table_without_runs_and_follow_deletes(env_store, instance):
    ids = env_store.add_personas(persona_rows(3))
    first = sync_tick(instance)
    # Partitions and the traits baseline of every persona, and no run: registering makes no API call.
    assert not first.run_requests
    [add] = first.dynamic_partitions_requests
    assert list(add.partition_keys) == [str(i) for i in ids]
    assert sorted(event.partition for event in first.asset_events) == sorted(str(i) for i in ids)
    apply_partition_requests(instance, first.dynamic_partitions_requests)
    with env_store.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE personas SET temper_level = 0.95 WHERE id = {ids[1]}")
        connection.exec_driver_sql(f"DELETE FROM personas WHERE id = {ids[0]}")

    second = sync_tick(instance, first.cursor)

    assert not second.run_requests
    [delete] = second.dynamic_partitions_requests
    assert isinstance(delete, dg.DeleteDynamicPartitionsRequest) and list(delete.partition_keys) == [str(ids[0])]
    assert own_position(RESOURCES["persona_store"], second.cursor) == str(env_store.latest_change_seq())


def test_schedule_requests_only_missing_agents(env_store, instance, env_sandbox):
    ids = env_store.add_personas(persona_rows(12))
    instance.add_dynamic_partitions(PARTITIONS, [str(i) for i in ids[:6]])  # the rest have no partition yet
    for persona_id in ids[:4]:
        assert execute_run_request(instance, single_partition_request(str(persona_id))).success

    context = dg.build_schedule_context(instance=instance, resources=RESOURCES)
    requests = list(backfill_missing_agents(context))

    assert instance.get_dynamic_partitions(PARTITIONS) == [str(i) for i in ids]
    assert len(requests) == 1
    assert range_of(requests[0]) == (str(ids[4]), str(ids[-1]))
    assert execute_run_request(instance, requests[0]).success
    assert env_store.ids_without_agents() == [] and len(env_sandbox.agents()) == 12
    # Nothing missing: the schedule skips.
    assert isinstance(backfill_missing_agents(dg.build_schedule_context(instance=instance, resources=RESOURCES)), dg.SkipReason)


def test_scattered_backfill_of_200_partitions_runs_as_a_handful_of_runs(env_store, instance, env_sandbox):
    ids = env_store.add_personas(persona_rows(400))
    instance.add_dynamic_partitions(PARTITIONS, [str(i) for i in ids])
    # Half of them already have agents, interleaved: 200 missing personas, scattered.
    have = [str(i) for i in ids[::2]]
    done = execute_run_request(instance, single_partition_request(have[0]))
    assert done.success
    for persona_id in ids[2::2]:
        env_store.try_claim(persona_id, "seed", __import__("datetime").timedelta(minutes=1))
        env_store.record_agent(
            persona_id, "seed", agent_id=f"seed-{persona_id}", voice_id="v", conversation_prompt="p",
            voice_settings={}, config_hash="h", action="created", reason="seed",
        )
    assert len(env_store.ids_without_agents()) == 200

    context = dg.build_schedule_context(instance=instance, resources=RESOURCES)
    requests = list(backfill_missing_agents(context))
    runs = [execute_run_request(instance, request) for request in requests]

    assert len(requests) <= 5, f"200 scattered partitions became {len(requests)} runs"
    assert all(run.success for run in runs)
    assert env_store.ids_without_agents() == []
    assert len(env_sandbox.agents()) == 201


def test_contiguous_backfill_policy_batches_partitions():
    policy = persona_agent.backfill_policy
    assert policy.max_partitions_per_run >= 100
    assert spans(list(range(0, 400, 2)), 100) == [(0, 98), (100, 198), (200, 298), (300, 398)]


def test_rerun_is_a_noop_and_force_recreates(env_store, instance, env_sandbox):
    [persona_id] = env_store.add_personas(persona_rows(1))
    key = str(persona_id)
    instance.add_dynamic_partitions(PARTITIONS, [key])
    assert execute_run_request(instance, single_partition_request(key)).success
    first_agent = env_store.get(persona_id).elevenlabs_agent_id

    version = data_version(instance, key)
    rerun = execute_run_request(instance, single_partition_request(key))
    assert rerun.success
    # The no-op is materialized (the run's partition is done) with the partition's data version unchanged.
    verified, _ = materializations(instance, key)
    assert verified.metadata["outcome"].value == "verified" and "no-op" in verified.metadata["note"].value
    assert data_version(instance, key) == version
    assert instance.get_materialized_partitions(persona_agent.key) == {key}
    assert env_store.get(persona_id).elevenlabs_agent_id == first_agent
    assert [agent["agent_id"] for agent in env_sandbox.agents()] == [first_agent]

    forced = execute_run_request(
        instance, single_partition_request(key), run_config={"ops": {"persona_agent": {"config": {"force": True}}}}
    )
    assert forced.success
    new_agent = env_store.get(persona_id).elevenlabs_agent_id
    assert new_agent != first_agent
    assert latest_metadata(instance, key)["outcome"] == "recreated"
    assert [agent["agent_id"] for agent in env_sandbox.agents()] == [new_agent]


def check_status_by_partition(instance, name: str) -> dict[str, str]:
    """Each partition's latest check status, as the UI reads it."""
    infos = instance.event_log_storage.get_asset_check_partition_info([dg.AssetCheckKey(persona_agent.key, name)])
    return {info.partition_key: info.latest_execution_status.value for info in infos if info.partition_key and info.is_current}


def range_request(ids, **options) -> dg.RunRequest:
    return range_run_request([str(i) for i in ids], run_key=None, reason="test", **options)


def test_checks_hold_a_status_per_persona_until_it_is_repaired(env_store, instance, env_sandbox):
    ids = env_store.add_personas(persona_rows(4))
    instance.add_dynamic_partitions(PARTITIONS, [str(i) for i in ids])
    assert execute_run_request(instance, range_request(ids[:3])).success  # the 4th has no agent yet
    verify = range_request(ids, checks_only=True)
    checks = check_results(execute_run_request(instance, verify))
    assert not checks[EXISTS].passed  # the persona without an agent
    assert check_status_by_partition(instance, EXISTS) == {
        str(ids[0]): "SUCCEEDED", str(ids[1]): "SUCCEEDED", str(ids[2]): "SUCCEEDED", str(ids[3]): "FAILED"
    }

    gone = env_store.get(ids[1]).elevenlabs_agent_id
    assert env_sandbox.delete_agent_directly(gone)
    with env_store.engine.begin() as connection:  # a trait edit: the voice no longer matches
        connection.exec_driver_sql(f"UPDATE personas SET temper_level = 0.95, chattiness = 0.95 WHERE id = {ids[2]}")
    checks = check_results(execute_run_request(instance, verify))
    assert gone in checks[EXISTS].description and f"persona {ids[2]}" in checks[MATCHES].description
    assert check_status_by_partition(instance, EXISTS)[str(ids[1])] == "FAILED"
    assert check_status_by_partition(instance, MATCHES)[str(ids[2])] == "FAILED"

    # Either check runs on its own (the UI's Execute), recording only its own results.
    only_exists = dg.RunRequest(asset_selection=[], asset_check_keys=[dg.AssetCheckKey(persona_agent.key, EXISTS)], tags=verify.tags)
    assert set(check_results(execute_run_request(instance, only_exists))) == {EXISTS}

    # A later automated run (new personas, ensure mode, checks left out) does not wash the failures away.
    watched_from = instance.get_run_records(limit=1)[0].update_timestamp.timestamp()
    assert execute_run_request(instance, range_request(ids[3:], run_config=ENSURE_RUN_CONFIG)).success
    assert check_status_by_partition(instance, EXISTS)[str(ids[1])] == "FAILED"
    assert check_status_by_partition(instance, MATCHES)[str(ids[2])] == "FAILED"

    # One Materialize (mode converge, checks selected as the UI launches it) repairs both. The asset records
    # its partitions itself (O(run)), so the checks selected with it are skipped in that run ...
    repair = dg.RunRequest(asset_selection=[persona_agent.key], tags=range_request(ids[1:3]).tags)
    repaired = execute_run_request(instance, repair)
    assert repaired.success and not check_results(repaired)
    assert {latest_metadata(instance, str(ids[1]))["outcome"], latest_metadata(instance, str(ids[2]))["outcome"]} == {"replaced", "updated"}
    # ... and checks_after_materialize_sensor runs them on the repaired partitions (passing over the automated
    # run, which left them out): they turn green.
    follow_up = checks_after_materialize_sensor(dg.build_sensor_context(instance=instance, cursor=str(watched_from)))
    [checks_request] = follow_up.run_requests
    assert range_of(checks_request) == (str(ids[1]), str(ids[2])) and not checks_request.asset_selection
    assert execute_run_request(instance, checks_request).success
    assert check_status_by_partition(instance, EXISTS)[str(ids[1])] == "SUCCEEDED"
    assert check_status_by_partition(instance, MATCHES)[str(ids[2])] == "SUCCEEDED"
    assert len(env_sandbox.agents()) == 4


def backfill_with_one_run_done(env_store, instance) -> tuple[list[int], dg.RunRequest, dg.DagsterRun, dg.SensorResult]:
    """A backfill's two runs as the UI launches them (asset selected, its checks with it): the first has
    finished, the second still runs; and checks_after_materialize_sensor's tick after the first."""
    ids = env_store.add_personas(persona_rows(4))
    instance.add_dynamic_partitions(PARTITIONS, [str(i) for i in ids])
    backfill = {BACKFILL_TAG: "a-backfill"}
    first = dg.RunRequest(asset_selection=[persona_agent.key], tags=range_request(ids[:2]).tags | backfill)
    second = dg.RunRequest(asset_selection=[persona_agent.key], tags=range_request(ids[2:]).tags | backfill)
    running = dg.DagsterRun(job_name=persona_agent.key.to_user_string(), run_id=uuid.uuid4().hex, tags=second.tags,
                            status=dg.DagsterRunStatus.STARTED, asset_selection=frozenset({persona_agent.key}))
    instance.add_run(running)
    assert execute_run_request(instance, first).success
    return ids, second, running, checks_after_materialize_sensor(dg.build_sensor_context(instance=instance, cursor="0"))


def test_a_backfills_checks_follow_its_last_run(env_store, instance, env_sandbox):
    """Checks are API calls from the backfill's own budget: none while the backfill still creates agents, then
    every run's at once."""
    ids, second, running, tick = backfill_with_one_run_done(env_store, instance)
    assert tick.run_requests == [] and "backfill is still running" in tick.skip_reason.skip_message

    instance.delete_run(running.run_id)  # ... and now it has finished:
    assert execute_run_request(instance, second).success
    tick = checks_after_materialize_sensor(dg.build_sensor_context(instance=instance, cursor=tick.cursor))
    assert sorted(range_of(request) for request in tick.run_requests) == [(str(ids[0]), str(ids[1])), (str(ids[2]), str(ids[3]))]
    assert all(not request.asset_selection and request.asset_check_keys for request in tick.run_requests)


def test_a_canceled_backfills_finished_runs_are_checked(env_store, instance, env_sandbox):
    ids, _, running, tick = backfill_with_one_run_done(env_store, instance)
    assert tick.run_requests == []
    instance.report_run_canceled(running)  # the user cancels the backfill: its last run ends canceled
    tick = checks_after_materialize_sensor(dg.build_sensor_context(instance=instance, cursor=tick.cursor))
    assert [range_of(request) for request in tick.run_requests] == [(str(ids[0]), str(ids[1]))]


def test_invalid_persona_fails_its_partition_without_stopping_the_batch(env_store, instance, env_sandbox):
    ids = env_store.add_personas(persona_rows(5))
    with env_store.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE personas SET chattiness = 7 WHERE id = {ids[2]}")
    instance.add_dynamic_partitions(PARTITIONS, [str(i) for i in ids])
    request = dg.RunRequest(
        asset_selection=[persona_agent.key],
        tags=range_tags(str(ids[0]), str(ids[-1])),
    )

    result = execute_run_request(instance, request)

    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    text = failure.step_failure_data.user_failure_data.description
    assert f"Persona {ids[2]}" in text and "chattiness" in text
    assert failure.step_failure_data.error.cls_name == "Failure"
    # Validation errors are not retried: exactly one attempt.
    assert not [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(env_sandbox.agents()) == 4
    assert instance.get_materialized_partitions(persona_agent.key) == {str(i) for i in ids if i != ids[2]}
    assert failed_partitions(instance, [str(i) for i in ids]) == {str(ids[2])}


def test_status_report_counts_by_status(env_store, instance):
    ids = env_store.add_personas(persona_rows(4))
    env_store.try_claim(ids[0], "seed", __import__("datetime").timedelta(minutes=1))
    env_store.record_agent(ids[0], "seed", agent_id="a-1", voice_id="v", conversation_prompt="p",
                       voice_settings={}, config_hash="h", action="created", reason="seed")
    with env_store.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE personas SET name = '' WHERE id = {ids[1]}")
    result = dg.materialize(
        [defs.get_assets_def("agent_status_report")],
        instance=instance,
        resources={"persona_store": PersonaStoreResource()},
    )
    frame = result.output_for_node("agent_status_report")
    counts = dict(zip(frame["status"], frame["personas"]))
    # The seeded agent was built from another config than its traits give now: drifted, not active.
    assert counts["drifted"] == 1 and counts["invalid"] == 1 and counts["missing"] == 2 and counts["active"] == 0
    metadata = result.asset_materializations_for_node("agent_status_report")[0].metadata
    assert metadata["count_missing"].value == 2
    assert "| missing | 2 |" in metadata["status_table"].value
    attention = metadata["needs_attention"].value
    for persona in env_store.get_many(ids[2:]):
        assert f"| {persona.id} | {persona.name} | missing | no agent yet |" in attention
    assert f"| {ids[1]} |  | invalid | name" in attention


def test_a_batched_run_rides_out_429s_5xx_and_dropped_responses(env_store, instance, env_sandbox):
    """Transient API errors inside a run are retried with backoff (Retry-After honoured) and adopted after
    ambiguous failures: the run succeeds with exactly one agent per persona."""
    ids = env_store.add_personas(persona_rows(40))
    env_sandbox.configure(rate_limit=15, retry_after=True, error_rate=0.15, drop_after_create_rate=0.2, seed=5)

    result, runs = run_sensor_tick(instance)

    assert all(run.success for run in runs)
    stats = env_sandbox.stats()
    assert stats["rate_limited"] > 0 and stats["dropped"] > 0
    assert any(status.startswith("5") for status in stats["requests_by_status"])
    agents = env_sandbox.agents()
    recorded = {p.id: p.elevenlabs_agent_id for p in env_store.with_agents()}
    assert sorted(recorded) == ids
    assert sorted(agent["agent_id"] for agent in agents) == sorted(recorded.values())
    assert instance.get_materialized_partitions(persona_agent.key) == {str(i) for i in ids}


def test_checks_follow_ui_and_launchpad_runs_but_not_automated_ones():
    """What each launch records (seen in tests/test_dagster_e2e.py): the launchpad's whole-job launch no
    selection, a UI Materialize the asset with its checks, automated runs the asset with no checks."""
    from persona_agents_pipeline.defs.checks_after_materialize import skipped_its_checks
    from persona_agents_pipeline.defs.jobs import PROVISION_JOB, REPORT_JOB

    asset_only = frozenset({persona_agent.key})
    assert skipped_its_checks(dg.DagsterRun(job_name=PROVISION_JOB, run_id="launchpad"))
    assert skipped_its_checks(dg.DagsterRun(job_name="__ASSET_JOB", run_id="ui", asset_selection=asset_only, asset_check_selection=None))
    assert not skipped_its_checks(dg.DagsterRun(job_name=PROVISION_JOB, run_id="sensor", asset_selection=asset_only, asset_check_selection=frozenset()))
    assert not skipped_its_checks(dg.DagsterRun(job_name=REPORT_JOB, run_id="report"))


def test_an_upstream_edit_of_any_set_field_fails_the_check_and_materialize_repairs_and_names_it(env_store, instance, env_sandbox):
    ids = env_store.add_personas(persona_rows(1))
    instance.add_dynamic_partitions(PARTITIONS, [str(ids[0])])
    assert execute_run_request(instance, range_request(ids)).success
    agent = env_sandbox.gateway.store.get(env_store.get(ids[0]).elevenlabs_agent_id)
    agent["conversation_config"]["agent"]["first_message"] = "Edited in the dashboard."
    env_sandbox.gateway.store.put(agent)

    checks = check_results(execute_run_request(instance, range_request(ids, checks_only=True)))
    repaired = execute_run_request(instance, dg.RunRequest(asset_selection=[persona_agent.key], tags=range_request(ids).tags))

    assert not checks[MATCHES].passed and "first_message" in checks[MATCHES].description
    metadata = latest_metadata(instance, str(ids[0]))
    assert repaired.success and metadata["outcome"] == "updated"
    assert metadata["differed_on_elevenlabs"] == "conversation_config.agent.first_message"
