"""The Python API that application code calls (mirrors the original model methods)."""

import pytest

from persona_agents_pipeline import python_api
from persona_agents_pipeline.config import Settings
from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.provisioning import AgentGoneError, Outcome, ProvisioningService
from persona_agents_pipeline.persona_validation import InvalidPersonaError


def service_for(store, sandbox, *, auto_create):
    settings = Settings(database_url=store.database_url, base_url=sandbox.url, auto_create=auto_create, rate_limit=100)
    return ProvisioningService.from_settings(settings, api_key="sandbox-test-key", store=store)


def test_model_methods(store, sandbox):
    service = service_for(store, sandbox, auto_create=False)
    first, second = store.add_personas(demo_personas(2))
    assert not python_api.has_elevenlabs_agent(first, service)
    assert python_api.create_elevenlabs_agent(first, service).outcome is Outcome.CREATED
    assert python_api.create_elevenlabs_agent(first, service).outcome is Outcome.PRESENT
    assert python_api.has_elevenlabs_agent(first, service)
    assert [p.id for p in python_api.personas_with_agents(service)] == [first]
    assert [p.id for p in python_api.personas_without_agents(service)] == [second]
    agent_id = python_api.ensure_agent(second, service)
    assert python_api.ensure_agent(second, service) == agent_id
    assert len(sandbox.agents()) == 2


def test_ensure_agent_reports_an_agent_gone_upstream_when_auto_creation_is_off(store, sandbox):
    service = service_for(store, sandbox, auto_create=False)
    [persona_id] = store.add_personas(demo_personas(1))
    agent_id = python_api.ensure_agent(persona_id, service)
    sandbox.delete_agent_directly(agent_id)
    with pytest.raises(AgentGoneError, match=f"agent {agent_id} is gone"):
        python_api.ensure_agent(persona_id, service)
    assert store.get(persona_id).elevenlabs_agent_id == agent_id  # reported, not silently changed


def test_ensure_agent_replaces_an_agent_gone_upstream_when_auto_creation_is_on(store, sandbox):
    service = service_for(store, sandbox, auto_create=True)
    [persona_id] = store.add_personas(demo_personas(1))
    old = python_api.ensure_agent(persona_id, service)
    sandbox.delete_agent_directly(old)
    new = python_api.ensure_agent(persona_id, service)
    assert new != old
    assert [agent["agent_id"] for agent in sandbox.agents()] == [new]
    assert store.get(persona_id).elevenlabs_agent_id == new


def test_invalid_persona_is_refused_before_any_api_call(store, sandbox):
    service = service_for(store, sandbox, auto_create=True)
    [persona_id] = store.add_personas(demo_personas(1))
    with store.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE personas SET chattiness = 2 WHERE id = {persona_id}")
    requests_before = sandbox.stats()["requests_total"]
    with pytest.raises(InvalidPersonaError, match=f"persona {persona_id}: chattiness"):
        python_api.ensure_agent(persona_id, service)
    assert sandbox.stats()["requests_total"] == requests_before
