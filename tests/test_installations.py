"""Several installations (persona databases) on one ElevenLabs account: each plans, applies and adopts
only its own agents; agents tagged before installations existed are retagged, never deleted."""

from sqlalchemy import text

from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.elevenlabs.client import ElevenLabsClient
from persona_agents_pipeline.provisioning import ProvisioningService
from persona_agents_pipeline.reconcile import Action, apply_plan, build_plan
from persona_agents_pipeline.store import PersonaStore
from persona_agents_pipeline.identity import LEGACY_INSTALLATION, identity_tag
from persona_agents_pipeline.voice_policy import DEFAULT_VOICE_CATALOGUE, agent_payload


def installation(url, sandbox):
    store = PersonaStore(url)
    store.upgrade()
    client = ElevenLabsClient("sandbox-test-key", sandbox.url, backoff_base=0.01, backoff_max=0.05)
    return ProvisioningService(store, client, DEFAULT_VOICE_CATALOGUE)


def agents_of(sandbox, service):
    return {agent["agent_id"] for agent in sandbox.agents() if any(service.installation_id in tag for tag in agent["tags"])}


def test_two_installations_on_one_account_never_touch_each_others_agents(store, sandbox, tmp_path):
    staging = ProvisioningService(store, ElevenLabsClient("sandbox-test-key", sandbox.url), DEFAULT_VOICE_CATALOGUE)
    production = installation(f"sqlite:///{tmp_path / 'production.db'}", sandbox)
    assert staging.installation_id != production.installation_id
    for service in (staging, production):  # the same persona ids in both databases
        ids = service.store.add_personas(demo_personas(6))
        assert all(result.ok for result in service.provision_many(ids))
    staging_agents, production_agents = agents_of(sandbox, staging), agents_of(sandbox, production)
    assert len(staging_agents) == len(production_agents) == 6

    with production.store.engine.begin() as connection:
        connection.execute(text("DELETE FROM personas WHERE id > 3"))
    # Staging sees nothing to do: production's agents, orphans or not, are not its own.
    staging_plan = build_plan(staging)
    assert staging_plan.changes == [] and staging_plan.in_sync == 6
    assert all(result.ok for result in apply_plan(staging, staging_plan))

    production_plan = build_plan(production)
    assert [change.action for change in production_plan.changes] == [Action.DELETE] * 3
    apply_plan(production, production_plan)
    assert agents_of(sandbox, staging) == staging_agents
    assert len(agents_of(sandbox, production)) == 3

    # A lost create in production is settled by production's own agent, never by staging's.
    with production.store.engine.begin() as connection:
        connection.execute(text("UPDATE personas SET elevenlabs_agent_id = NULL, agent_create_attempted_at = "
                                "agent_created_at WHERE id = 1"))
    production.ensure_agent(1)
    assert agents_of(sandbox, staging) == staging_agents
    assert staging.store.get(1).elevenlabs_agent_id != production.store.get(1).elevenlabs_agent_id


def test_agents_tagged_before_installations_are_retagged_and_never_deleted(store, sandbox):
    service = ProvisioningService(store, ElevenLabsClient("sandbox-test-key", sandbox.url), DEFAULT_VOICE_CATALOGUE)
    ids = store.add_personas(demo_personas(3))
    legacy_ids = {}
    for persona_id in ids:
        payload = agent_payload(store.get(persona_id).spec(), installation_id=LEGACY_INSTALLATION)
        legacy_ids[persona_id] = sandbox.create_agent_directly(payload)
    # The first two were recorded by the old version; the third's persona never learnt its agent id,
    # and the old tag cannot say which installation it belongs to.
    for persona_id in ids[:2]:
        with store.engine.begin() as connection:
            connection.execute(text("UPDATE personas SET elevenlabs_agent_id = :a, agent_config_hash = 'old' WHERE id = :id"),
                               {"a": legacy_ids[persona_id], "id": persona_id})
    plan = build_plan(service)
    assert sorted((change.action, change.persona_id) for change in plan.changes) == [
        (Action.CREATE, ids[2]), (Action.UPDATE, ids[0]), (Action.UPDATE, ids[1])
    ]
    assert all(f"gains installation {service.installation_id}" in change.reason for change in plan.of(Action.UPDATE))
    assert all(result.ok for result in apply_plan(service, plan))
    remote = {agent["agent_id"]: agent for agent in sandbox.agents()}
    assert set(legacy_ids.values()) <= set(remote), "a legacy agent was deleted"
    for persona_id in ids[:2]:
        assert identity_tag(service.installation_id, persona_id) in remote[legacy_ids[persona_id]]["tags"]
    assert build_plan(service).changes == []
