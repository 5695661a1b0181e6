"""Python API mirroring the original model methods, for application code.

    from persona_agents_pipeline import python_api
    agent_id = python_api.ensure_agent(persona_id)   # before a training session starts

Each function takes an optional `service`; without one it builds a service from the environment once.
"""

from __future__ import annotations

from functools import lru_cache

from .agent_status import PersonaStatus, RemoteAgents, persona_status
from .config import Settings
from .models import Persona
from .provisioning import Priority, ProvisioningService, ProvisionResult


@lru_cache(maxsize=1)
def default_service() -> ProvisioningService:
    # Application code calls these while a trainee waits: its requests go before any backfill's.
    return ProvisioningService.from_settings(Settings.from_env(), priority=Priority.INTERACTIVE)


def has_elevenlabs_agent(persona_id: int, service: ProvisioningService | None = None) -> bool:
    return (service or default_service()).store.require(persona_id).has_elevenlabs_agent


def create_elevenlabs_agent(persona_id: int, service: ProvisioningService | None = None) -> ProvisionResult:
    """Create the persona's agent unless it has one (then nothing is sent)."""
    return (service or default_service()).ensure_agent(persona_id)


def ensure_agent(persona_id: int, service: ProvisioningService | None = None, *, verify_remote: bool = True) -> str:
    """The persona's agent id, creating the agent first if needed; safe to call from many processes at once.

    Before a training session the recorded agent is checked to still exist (one GET); one deleted on
    ElevenLabs is replaced where auto-creation is on, and raises AgentGoneError otherwise.
    """
    result = (service or default_service()).ensure_agent(persona_id, verify_remote=verify_remote)
    assert result.agent_id is not None
    return result.agent_id


def personas_without_agents(service: ProvisioningService | None = None) -> list[Persona]:
    return (service or default_service()).store.without_agents()


def personas_with_agents(service: ProvisioningService | None = None) -> list[Persona]:
    return (service or default_service()).store.with_agents()


def agent_status(persona_id: int, service: ProvisioningService | None = None, *, check_remote: bool = True) -> PersonaStatus:
    """The persona's agent status, in the words of `list-agent-status` and the Dagster report (AgentStatus).

    `check_remote`: one GET tells whether a recorded agent is gone; without it only the database is read.
    """
    service = service or default_service()
    persona = service.store.require(persona_id)
    gone_found = RemoteAgents(service.client, list_first=False).gone_found(persona) if check_remote else None
    return persona_status(persona, service.template, gone_found=gone_found)
