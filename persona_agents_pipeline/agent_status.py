"""The status of each persona's agent: one model and one function behind every place that shows it.

The CLI's `list-agent-status`, the Python API's `agent_status()` and the Dagster `agent_status_report` all
call `persona_status`, so they use the same words for the same persona. Only "gone" needs ElevenLabs: the
caller says how it knows (`RemoteAgents` asks now; the Dagster report reads its last verification).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Callable, Iterable, Iterator

from .drift import desired_config_hash
from .elevenlabs.client import ElevenLabsClient
from .elevenlabs.errors import NotFoundError
from .models import Persona, utcnow
from .voice_policy import AgentTemplate


class AgentStatus(str, Enum):
    """What a persona's agent is, as every report names it (in the report's order)."""

    ACTIVE = "active"  # recorded, built from the persona's current traits, and not known to be gone
    MISSING = "missing"  # no agent yet
    IN_PROGRESS = "in_progress"  # being created now
    INTERRUPTED = "interrupted"  # a create may have been sent; the next run adopts or creates
    INVALID = "invalid"  # the persona's traits cannot make an agent (an agent it has was built from earlier ones)
    DRIFTED = "drifted"  # recorded, built from other traits than the persona has now: `apply` updates it
    GONE = "gone"  # recorded, but not on ElevenLabs: `apply` replaces it


_REASONS = {
    AgentStatus.MISSING: "no agent yet",
    AgentStatus.IN_PROGRESS: "being created",
    AgentStatus.INTERRUPTED: "a create may have been sent; the next run adopts or creates",
}


@dataclass(frozen=True)
class PersonaStatus:
    persona_id: int
    name: str
    status: AgentStatus
    reason: str  # why, in one sentence; empty for an active agent
    agent_id: str | None


def persona_status(
    persona: Persona, template: AgentTemplate, *, gone_found: str | None = None, now: datetime | None = None
) -> PersonaStatus:
    """The persona's status. `gone_found`: how its recorded agent was found missing from ElevenLabs
    (e.g. "at the last verification"), None when it was not."""
    invalid = persona.invalid_reason()
    stored = AgentStatus(persona.agent_status(now or utcnow(), invalid))  # from the database row alone
    agent_id = persona.elevenlabs_agent_id
    if stored is not AgentStatus.ACTIVE:
        status, reason = stored, _REASONS.get(stored, invalid or "")
    elif gone_found:
        status, reason = AgentStatus.GONE, f"agent {agent_id} not found on ElevenLabs {gone_found}"
    elif invalid:
        status, reason = AgentStatus.INVALID, f"{invalid} (its agent was built from earlier, valid traits)"
    elif desired_config_hash(template, persona) != persona.agent_config_hash:
        status, reason = AgentStatus.DRIFTED, "agent built from other traits than the persona has now"
    else:
        status, reason = AgentStatus.ACTIVE, ""
    return PersonaStatus(persona.id, persona.name, status, reason, agent_id)


def persona_statuses(
    personas: Iterable[Persona], template: AgentTemplate, gone_found: Callable[[Persona], str | None] | None = None
) -> Iterator[PersonaStatus]:
    """persona_status for each persona, streamed; `gone_found(persona)` is asked only for a recorded agent."""
    now = utcnow()
    for persona in personas:
        gone = gone_found(persona) if gone_found and persona.elevenlabs_agent_id else None
        yield persona_status(persona, template, gone_found=gone, now=now)


class RemoteAgents:
    """Whether recorded agents are still on ElevenLabs, asked now.

    With `list_first`, the account's agents are listed once, a page of 100 per request; an agent the list
    lacks is then looked up by id before it is called gone (the list hides archived agents and may lag
    behind a create). Without it, each agent costs one GET: cheaper for a few personas."""

    FOUND = "when looked up just now"

    def __init__(self, client: ElevenLabsClient, *, list_first: bool = True):
        self.client = client
        # Listed at once, so a rejected key fails before anything is printed.
        self._listed = {agent.get("agent_id") for agent in client.list_agents()} if list_first else set()

    def gone_found(self, persona: Persona) -> str | None:
        agent_id = persona.elevenlabs_agent_id
        if not agent_id or agent_id in self._listed:
            return None
        try:
            self.client.get_agent(agent_id)
        except NotFoundError:
            return self.FOUND
        return None
