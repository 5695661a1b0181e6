"""Exactly one agent per persona, and never someone else's, when records and reality part: a recreate
racing `apply`, tags edited upstream, searches lagging behind creates, a persona deleted while its create
is unsettled, create answers naming another persona's agent. On SQLite and PostgreSQL, over real HTTP to
the sandbox, whose faults stand in for the API's."""

import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import text

from cli_helpers import run
from test_exactly_once import assert_exactly_one_agent_each
from test_failing_searches import agents_per_persona, service_for
from test_reconcile import execute, plan_json, planned, provisioned, recorded_agents

from persona_agents_pipeline.config import ConfigurationError, Settings
from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.elevenlabs.errors import ElevenLabsError
from persona_agents_pipeline.models import utcnow
from persona_agents_pipeline.elevenlabs.client import ElevenLabsClient
from persona_agents_pipeline.provisioning import Outcome, ProvisioningService
from persona_agents_pipeline.reconcile import apply_plan, build_plan
from persona_agents_pipeline.sandbox import SandboxServer
from persona_agents_pipeline.sandbox.local_servers import wait_until
from persona_agents_pipeline.identity import PROJECT_TAG, identity_marker, identity_tag
from persona_agents_pipeline.voice_policy import DEFAULT_VOICE_CATALOGUE


def claimed(store):
    with store.engine.connect() as connection:
        return connection.execute(text("SELECT id FROM personas WHERE agent_claim_owner IS NOT NULL")).scalars().all()


def live_ids(sandbox):
    return {agent["agent_id"] for agent in sandbox.agents()}


def assert_every_recorded_agent_lives(store, sandbox):
    alive = live_ids(sandbox)
    assert all(agent_id in alive for agent_id in recorded_agents(store).values()), "a persona records a deleted agent"


# ---- a recreate racing apply -----------------------------------------------------------------------


def test_apply_never_deletes_the_agent_a_running_recreate_is_about_to_record(cli_env, store, sandbox):
    ids = provisioned(store, 2)
    persona_id, other = ids
    before = recorded_agents(store)
    # The create is carried out at once and answered late: apply plans while the new agent is unrecorded.
    sandbox.configure(create_answer_delay_seconds=6.0)
    recreate = recreate_in_background(cli_env, persona_id)
    wait_until(lambda: len(sandbox.agents()) == 3 or recreate.poll() is not None, "the recreate's agent exists",
               timeout=60, interval=0.02)
    [new] = live_ids(sandbox) - set(before.values())
    assert planned(plan_json(), "delete") == [(persona_id, new)], "the race must plan the new agent as a duplicate"

    applied = run("apply", "--yes")
    output, _ = recreate.communicate(timeout=120)

    assert recreate.returncode == 0, output
    assert applied.exit_code == 0, applied.output
    assert recorded_agents(store) == {persona_id: new, other: before[other]}
    assert live_ids(sandbox) == {new, before[other]}
    assert claimed(store) == []


def test_recreates_and_applies_racing_in_threads_leave_one_live_recorded_agent_each(store):
    ids = store.add_personas(demo_personas(4))
    with SandboxServer(create_answer_delay_seconds=0.3) as sandbox:
        # Two services as two processes would have (each its own claim owner), with the default timeouts.
        recreator, applier = (
            ProvisioningService(store, ElevenLabsClient("sandbox-test-key", sandbox.url), DEFAULT_VOICE_CATALOGUE)
            for _ in range(2)
        )
        assert all(result.ok for result in recreator.provision_many(ids))
        done, failed = threading.Event(), []

        def apply_until_done():
            while not done.is_set():
                failed.extend(result for result in apply_plan(applier, build_plan(applier)) if not result.ok)

        thread = threading.Thread(target=apply_until_done)
        thread.start()
        try:
            recreated = [recreator.recreate_agent(ids[round_ % len(ids)]) for round_ in range(12)]
        finally:
            done.set()
            thread.join()

        assert all(result.outcome is Outcome.RECREATED for result in recreated), recreated
        assert failed == []
        # No recorded agent was ever deleted under its persona (apply would then have replaced it).
        histories = {pid: [(event.action, event.agent_id, event.reason) for event in store.history(pid)] for pid in ids}
        assert not any(action in ("lost", "replaced") for events in histories.values() for action, *_ in events), histories
        assert_every_recorded_agent_lives(store, sandbox)
        assert_exactly_one_agent_each(store, sandbox.agents(), ids)
        assert claimed(store) == []


def recreate_in_background(cli_env, persona_id):
    return subprocess.Popen(
        [sys.executable, "-m", "persona_agents_pipeline.cli", "recreate-agent", str(persona_id), "--yes"],
        env={**os.environ, **cli_env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_a_recreate_whose_claim_is_taken_over_says_so_and_keeps_the_live_agent(cli_env, store, sandbox):
    [persona_id] = provisioned(store, 1)
    [old] = recorded_agents(store).values()
    sandbox.configure(create_answer_delay_seconds=3.0)
    recreate = recreate_in_background(cli_env, persona_id)
    wait_until(lambda: len(sandbox.agents()) == 2 or recreate.poll() is not None, "the recreate's agent exists",
               timeout=60, interval=0.02)
    # Another caller takes the persona over while the create is answered (as after an expired lease).
    execute(store, "UPDATE personas SET agent_claim_owner = 'another-host', agent_claim_expires_at = :at WHERE id = :id",
            at=utcnow() + timedelta(seconds=2), id=persona_id)

    output, _ = recreate.communicate(timeout=120)

    assert recreate.returncode == 1 and "was not recreated" in output, output
    assert recorded_agents(store) == {persona_id: old} and live_ids(sandbox) == {old}


# ---- an agent another persona records ----------------------------------------------------------------


def test_an_agent_carrying_another_personas_tag_is_never_deleted_as_its_duplicate(
    cli_env, store, sandbox, sandbox_client
):
    a, b, c = provisioned(store, 3)
    before = recorded_agents(store)
    # Upstream, A's agent is given B's identity tag (edited, or copied from B's agent).
    sandbox_client.update_agent(before[a], {"tags": [PROJECT_TAG, identity_tag(store.installation_id(), b)]})
    # And C's record is forgotten while C's agent is gone, so C looks for an agent to adopt.
    sandbox.delete_agent_directly(before[c])
    sandbox_client.update_agent(before[b], {"tags": [PROJECT_TAG, identity_tag(store.installation_id(), c)]})

    plan = plan_json()
    assert before[a] not in {agent_id for _, agent_id in planned(plan, "delete")}
    assert before[b] not in {agent_id for _, agent_id in planned(plan, "adopt")}

    applied = run("apply", "--yes")
    assert applied.exit_code == 0, applied.output
    after = recorded_agents(store)
    assert after[a] == before[a] and after[b] == before[b] and after[c] not in (before[b], before[c])
    assert live_ids(sandbox) == set(after.values())
    assert claimed(store) == []


def test_ensure_never_adopts_an_agent_another_persona_records(store):
    a, b = store.add_personas(demo_personas(2))
    with service_context(store) as (service, sandbox):
        agent_of_a = service.ensure_agent(a).agent_id
        # A's agent now carries B's name marker and tag, and B has an unsettled create: B searches.
        service.client.update_agent(agent_of_a, {
            "name": f"copy {identity_marker(b)}", "tags": [PROJECT_TAG, identity_tag(store.installation_id(), b)],
        })
        execute(store, "UPDATE personas SET agent_create_attempted_at = :now WHERE id = :id", now=utcnow(), id=b)

        result = service.ensure_agent(b)

        assert result.outcome is Outcome.CREATED and result.agent_id != agent_of_a
        assert recorded_agents(store) == {a: agent_of_a, b: result.agent_id}
        assert live_ids(sandbox) == {agent_of_a, result.agent_id}
        assert claimed(store) == []


# ---- a create answer naming another persona's agent --------------------------------------------------


def test_a_create_answer_naming_another_personas_agent_fails_that_persona_only(store):
    ids = store.add_personas(demo_personas(6))
    with service_context(store, replay_create_answer_rate=0.5, seed=4) as (service, sandbox):
        # One at a time, so a replayed answer names an agent its persona has recorded already.
        results = service.provision_many(ids, concurrency=1)

        confused = [result for result in results if not result.ok]
        assert confused, "the test must replay a create answer"
        recorded = recorded_agents(store)
        for result in confused:
            assert result.outcome is Outcome.FAILED and "records" in result.error
        assert set(recorded.values()) <= live_ids(sandbox), "another persona's agent was touched"
        assert claimed(store) == []

        sandbox.configure(replay_create_answer_rate=0.0)
        settled = service.provision_many(ids, concurrency=3)
        assert all(result.ok for result in settled), settled
        confused_ids = {result.persona_id for result in confused}
        assert {result.outcome for result in settled if result.persona_id in confused_ids} == {Outcome.ADOPTED}
        assert_exactly_one_agent_each(store, sandbox.agents(), ids)


# ---- searches lagging behind creates -----------------------------------------------------------------


def test_lost_create_answers_amid_a_lagging_search_make_no_duplicates(store):
    ids = store.add_personas(demo_personas(30))
    with service_context(store, drop_after_create_rate=0.5, listing_lag_seconds=1.0, seed=9) as (service, sandbox):
        results = service.provision_many(ids, concurrency=10)
        assert sandbox.stats()["requests_by_status"].get("dropped"), "the test must lose create answers"
        assert all(result.ok for result in results), [result for result in results if not result.ok]
        assert_exactly_one_agent_each(store, sandbox.agents(), ids)


def test_duplicates_from_a_search_lagging_beyond_the_bound_are_removed_by_the_next_apply(store):
    ids = store.add_personas(demo_personas(10))
    lag = dict(drop_after_create_rate=0.5, listing_lag_seconds=1.5, seed=9)
    with service_context(store, listing_lag=timedelta(0), **lag) as (service, sandbox):
        assert all(result.ok for result in service.provision_many(ids, concurrency=10))
        duplicated = [pid for pid, count in agents_per_persona(sandbox).items() if count > 1]
        assert duplicated, "the search must lag beyond the bound"
        wait_until(lambda: len(list(service.client.list_agents())) == len(sandbox.agents()), "the listing caught up",
                   timeout=30, interval=0.1)

        results = apply_plan(service, build_plan(service))

        deleted = [r for r in results if r.ok and r.detail.startswith("deleted")]
        assert sorted({r.change.persona_id for r in deleted}) == sorted(duplicated)
        assert all(r.change.agent_id in r.detail for r in deleted)
        assert_exactly_one_agent_each(store, sandbox.agents(), ids)


def test_the_sandbox_lists_an_agent_only_after_its_listing_lag(sandbox, sandbox_client):
    sandbox.configure(listing_lag_lists=2)
    agent_id = sandbox_client.create_agent({"name": "late [persona:1]", "conversation_config": {}})
    assert [list(sandbox_client.list_agents()) for _ in range(2)] == [[], []]
    assert [agent["agent_id"] for agent in sandbox_client.list_agents(search="[persona:1]")] == [agent_id]


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "inf", "61"])
def test_a_listing_lag_outside_0_to_60_seconds_is_refused_by_name(raw):
    with pytest.raises(ConfigurationError, match=r"ELEVENLABS_LISTING_LAG_SECONDS must be .*" + re.escape(repr(raw))):
        Settings.from_env({"ELEVENLABS_LISTING_LAG_SECONDS": raw})
    assert Settings.from_env({"ELEVENLABS_LISTING_LAG_SECONDS": "0"}).listing_lag_seconds == 0


# ---- deleting a persona whose create is unsettled ----------------------------------------------------


def unsettled(store, sandbox, persona_id):
    """Leave the persona with a create whose answer was lost and whose search failed: an agent nobody records."""
    sandbox.configure(drop_after_create_rate=1.0, search_fault="429")
    with pytest.raises(ElevenLabsError):
        service_for(store, sandbox).ensure_agent(persona_id)
    sandbox.configure(drop_after_create_rate=0.0, search_fault=None)
    assert agents_per_persona(sandbox)[persona_id] == 1 and store.get(persona_id).elevenlabs_agent_id is None


def test_deleting_a_persona_whose_create_is_unsettled_deletes_its_agent_too(cli_env, store, sandbox):
    [keep] = provisioned(store, 1)
    [victim] = store.add_personas(demo_personas(1))
    unsettled(store, sandbox, victim)

    deleted = run("personas", "delete", str(victim), "--yes")

    assert deleted.exit_code == 0, deleted.output
    assert store.get(victim) is None
    assert agents_per_persona(sandbox).get(victim) is None
    assert live_ids(sandbox) == {recorded_agents(store)[keep]}
    assert [event.action for event in store.history(victim)][-1] == "deleted"


def test_deleting_a_persona_whose_create_is_unsettled_refuses_while_the_search_fails(cli_env, store, sandbox):
    [victim] = store.add_personas(demo_personas(1))
    unsettled(store, sandbox, victim)
    sandbox.configure(search_fault="429")

    refused = run("personas", "delete", str(victim), "--yes")

    assert refused.exit_code == 1 and "could not look up" in refused.output, refused.output
    assert store.get(victim) is not None and agents_per_persona(sandbox)[victim] == 1
    assert claimed(store) == []


# ---- helpers ---------------------------------------------------------------------------------------


@contextmanager
def service_context(store, listing_lag=None, **faults):
    """A sandbox with the given faults and a service on it."""
    with SandboxServer(**faults) as sandbox:
        yield service_for(store, sandbox, **({} if listing_lag is None else {"listing_lag": listing_lag})), sandbox
