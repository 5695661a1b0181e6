"""Find agents deleted upstream, and orphans of this installation, from one paginated list of the account.

Cheap at any scale: one request per page of 100 agents and one streamed pass over the store; no agent is
fetched one by one and nothing is created, updated or deleted. Absence is only concluded from a listing
that is complete: a page that fails raises (nothing is judged), and a listed item without a usable
agent_id (it could be anyone's agent) makes the listing inconclusive. The list may lag behind creates,
so an agent recorded, or created, within `listing_lag_seconds` before the listing began is not judged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .elevenlabs.listing import SkippedAgent
from .models import Persona, utc_from_unix, utcnow
from .provisioning import ProvisioningService
from .reconcile import _remote_project_agents


@dataclass(frozen=True)
class GoneAgent:
    persona_id: int
    name: str
    agent_id: str

    def __str__(self) -> str:
        return f"persona {self.persona_id} {self.name!r}: agent {self.agent_id} is not in the account's agent list"


@dataclass(frozen=True)
class OrphanAgent:
    agent_id: str
    name: str
    persona_id: int  # the persona whose identity it carries

    def __str__(self) -> str:
        return f"agent {self.agent_id} {self.name!r} carries persona {self.persona_id}'s identity; no persona records it"


@dataclass
class Detection:
    started_at: datetime
    listed: int = 0
    # Listed agents of unexpected shape; one without an agent_id makes the listing inconclusive.
    skipped: list[SkippedAgent] = field(default_factory=list)
    gone: list[GoneAgent] = field(default_factory=list)
    # Personas whose recorded agent is listed: their agent exists.
    present: list[int] = field(default_factory=list)
    orphans: list[OrphanAgent] = field(default_factory=list)
    too_recent: int = 0  # recorded or created within the listing lag: not judged this time
    seconds: float = 0.0

    @property
    def conclusive(self) -> bool:
        return not any(agent.agent_id is None for agent in self.skipped)

    def inconclusive_reason(self) -> str:
        unnamed = [str(agent) for agent in self.skipped if agent.agent_id is None]
        return (f"{len(unnamed)} listed item(s) without a usable agent_id ({'; '.join(unnamed[:5])}): any recorded "
                "agent could be one of them, so nothing is marked gone")


def _recorded_lately(persona: Persona, since: datetime) -> bool:
    stamps = [stamp for stamp in (persona.updated_at, persona.agent_created_at) if stamp is not None]
    return bool(stamps) and max(stamps) >= since


def _created_lately(agent: dict[str, Any], since: datetime) -> bool:
    created = utc_from_unix(agent.get("created_at_unix_secs"))
    return created is not None and created >= since


def _claimed(persona: Persona | None, now: datetime) -> bool:
    return bool(persona and persona.agent_claim_owner and persona.agent_claim_expires_at
                and persona.agent_claim_expires_at > now)


def _judge_personas(service: ProvisioningService, detection: Detection, listed: set[str], since: datetime) -> set[str]:
    """Sort every persona with an agent into present, gone or too recent; returns every recorded agent id."""
    recorded: set[str] = set()
    for persona in service.store.iter_personas():
        agent_id = persona.elevenlabs_agent_id
        if not agent_id:
            continue
        recorded.add(agent_id)
        if agent_id in listed:
            detection.present.append(persona.id)
        elif _recorded_lately(persona, since):
            detection.too_recent += 1
        elif detection.conclusive:
            detection.gone.append(GoneAgent(persona.id, persona.name or "", agent_id))
    return recorded


def _orphans(
    service: ProvisioningService, by_persona: dict[int, list[dict[str, Any]]], recorded: set[str], since: datetime
) -> list[OrphanAgent]:
    """Agents carrying this installation's identity that no persona records, except fresh ones whose create
    may still be on its way into the store."""
    candidates = [(pid, agent) for pid, agents in by_persona.items() for agent in agents if agent["agent_id"] not in recorded]
    claimants = {persona.id: persona for persona in service.store.get_many(sorted({pid for pid, _ in candidates}))}
    now = utcnow()
    return [
        OrphanAgent(agent["agent_id"], agent.get("name") or "", pid)
        for pid, agent in sorted(candidates, key=lambda pair: (pair[0], pair[1]["agent_id"]))
        if not _created_lately(agent, since) and not _claimed(claimants.get(pid), now)
    ]


def detect_gone_agents(service: ProvisioningService, *, listing_lag_seconds: float | None = None) -> Detection:
    """List the account's agents once and compare them with the store (read after the listing, so an agent
    recorded meanwhile is judged by its timestamp, not taken for gone). A failing page raises. The lag is the
    service's (ELEVENLABS_LISTING_LAG_SECONDS) unless given."""
    if listing_lag_seconds is None:
        listing_lag_seconds = service.listing_lag.total_seconds()
    clock = time.monotonic()
    detection = Detection(started_at=utcnow())
    listed, by_persona = _remote_project_agents(service, detection.skipped)
    detection.listed = len(listed) + len(detection.skipped)
    listed.update(agent.agent_id for agent in detection.skipped if agent.agent_id)
    since = detection.started_at - timedelta(seconds=listing_lag_seconds)
    recorded = _judge_personas(service, detection, listed, since)
    detection.orphans = _orphans(service, by_persona, recorded, since)
    detection.seconds = time.monotonic() - clock
    return detection
