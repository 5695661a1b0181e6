"""Exactly one agent per persona when the adoption search itself fails, when duplicates already exist,
when personas vanish mid-create and when DELETE answers are lost, on SQLite and PostgreSQL.

Faults are the sandbox's, over real HTTP: creates that are carried out but never answered, searches
answering non-JSON / 400 / 401 / 429 / too late, DELETEs never answered.
"""

from collections import Counter

import pytest
from sqlalchemy import text

from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.elevenlabs.client import ElevenLabsClient
from persona_agents_pipeline.models import utcnow
from persona_agents_pipeline.provisioning import Outcome, ProvisioningService
from persona_agents_pipeline.sandbox import SandboxServer
from persona_agents_pipeline.identity import parse_identity_tag
from persona_agents_pipeline.voice_policy import DEFAULT_VOICE_CATALOGUE, agent_payload

from test_exactly_once import assert_exactly_one_agent_each

SEARCH_FAULTS = ["non_json", "400", "401", "429", "timeout"]


def service_for(store, sandbox, **options):
    # A short read timeout so the "timeout" search fault costs well under a second per attempt.
    client = ElevenLabsClient(
        "sandbox-test-key", sandbox.url, timeout=(2.0, 0.3), max_attempts=2, backoff_base=0.01, backoff_max=0.02
    )
    return ProvisioningService(store, client, DEFAULT_VOICE_CATALOGUE, **options)


def agents_per_persona(sandbox):
    return Counter(
        identity[1] for agent in sandbox.agents() for tag in agent["tags"] if (identity := parse_identity_tag(tag))
    )


@pytest.mark.parametrize("fault", SEARCH_FAULTS)
def test_a_lost_create_followed_by_a_failing_search_never_leads_to_a_second_agent(store, fault):
    ids = store.add_personas(demo_personas(3))
    with SandboxServer(drop_after_create_rate=1.0, search_fault=fault, search_timeout_seconds=0.8) as sandbox:
        service = service_for(store, sandbox)

        lost = service.provision_many(ids, concurrency=3)
        assert not any(result.ok for result in lost)
        made = agents_per_persona(sandbox)
        assert made and max(made.values()) == 1
        for persona_id in made:  # the search failed, so nothing settled: the marker stays
            assert store.get(persona_id).agent_status(utcnow(), None) == "interrupted"

        # Creates would be answered now, but searches still fail: a persona whose create may exist waits.
        sandbox.configure(drop_after_create_rate=0.0)
        service.provision_many(ids, concurrency=3)
        assert max(agents_per_persona(sandbox).values()) == 1
        assert all(made[persona_id] == agents_per_persona(sandbox)[persona_id] for persona_id in made)

        sandbox.configure(search_fault=None)
        settled = service.provision_many(ids, concurrency=3)
        assert all(result.ok for result in settled), settled
        assert {result.outcome for result in settled if result.persona_id in made} == {Outcome.ADOPTED}
        assert_exactly_one_agent_each(store, sandbox.agents(), ids)
        assert service.provision_many(ids) and len(sandbox.agents()) == len(ids)


def test_a_429_storm_on_creates_and_searches_makes_personas_wait_not_duplicate(store):
    ids = store.add_personas(demo_personas(6))
    storm = dict(drop_after_create_rate=0.5, error_rate=0.3, search_fault="429", search_fault_rate=0.7, seed=5)
    with SandboxServer(**storm) as sandbox:
        service = service_for(store, sandbox)
        for _ in range(4):
            service.provision_many(ids, concurrency=6)
            assert max(agents_per_persona(sandbox).values(), default=0) <= 1
        sandbox.configure(drop_after_create_rate=0.0, error_rate=0.0, search_fault=None)
        assert all(result.ok for result in service.provision_many(ids, concurrency=6))
        assert_exactly_one_agent_each(store, sandbox.agents(), ids)


def test_adoption_keeps_the_oldest_agent_and_deletes_the_proven_duplicates(store):
    ids = store.add_personas(demo_personas(2))
    persona_id = ids[0]
    with SandboxServer() as sandbox:
        service = service_for(store, sandbox)
        ours = agent_payload(store.get(persona_id).spec(), installation_id=store.installation_id())
        copies = [sandbox.create_agent_directly(ours) for _ in range(3)]
        # Another installation's agent for a persona with the same id is not ours to adopt or delete.
        theirs = sandbox.create_agent_directly(agent_payload(store.get(persona_id).spec(), installation_id="0123456789ab"))
        with store.engine.begin() as connection:  # a create was sent before: the next caller searches
            connection.execute(text("UPDATE personas SET agent_create_attempted_at = :now WHERE id = :id"),
                               {"now": utcnow(), "id": persona_id})

        result = service.ensure_agent(persona_id)
        assert result.outcome is Outcome.ADOPTED and result.agent_id in copies
        remaining = {agent["agent_id"] for agent in sandbox.agents()}
        assert remaining == {result.agent_id, theirs}
        deleted = [event.agent_id for event in store.history(persona_id) if event.action == "deleted"]
        assert sorted(deleted) == sorted(set(copies) - {result.agent_id})


@pytest.mark.parametrize("create_answer", ["answered", "lost"])
def test_a_persona_deleted_while_its_create_is_in_flight_leaves_no_agent(store, create_answer):
    ids = store.add_personas(demo_personas(4))
    with SandboxServer(drop_after_create_rate=1.0 if create_answer == "lost" else 0.0) as sandbox:
        service = service_for(store, sandbox)
        real_create = service.client.create_agent

        def create_then_persona_deleted(payload):
            try:
                return real_create(payload)
            finally:  # the application deletes the persona while the create is on the wire
                with store.engine.begin() as connection:
                    persona_id = parse_identity_tag(payload["tags"][1])[1]
                    connection.execute(text("DELETE FROM personas WHERE id = :id"), {"id": persona_id})

        service.client.create_agent = create_then_persona_deleted
        results = service.provision_many(ids, concurrency=4)
        assert {result.outcome for result in results} == {Outcome.NOT_FOUND}
        assert sandbox.agents() == []
        assert all([event.action for event in store.history(pid)] == ["deleted"] for pid in ids)


def test_recreate_whose_delete_answer_is_lost_settles_and_reports_success(store):
    [persona_id] = store.add_personas(demo_personas(1))
    with SandboxServer() as sandbox:
        service = service_for(store, sandbox)
        old = service.ensure_agent(persona_id).agent_id
        sandbox.configure(drop_delete_response_rate=1.0)
        result = service.recreate_agent(persona_id)
        assert result.outcome is Outcome.RECREATED and result.error is None
        assert [agent["agent_id"] for agent in sandbox.agents()] == [result.agent_id]
        assert [(event.action, event.agent_id) for event in store.history(persona_id)][-1] == ("deleted", old)
