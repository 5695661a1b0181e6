"""Reconcile agents with personas the way infrastructure tools do: build a plan, show it, then apply it.

The plan costs one paginated list of the remote agents plus one streamed pass over the store; it never
GETs agents one by one. Drift is decided by the config hash recorded with each agent: a persona whose
current traits produce another hash needs an update. Only agents carrying this installation's identity
tag are considered, so agents made by anyone else, or by another installation sharing the account, are
never touched; nor are agents tagged before installations existed (they may belong to any of them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Callable

from .elevenlabs.errors import ElevenLabsError
from .elevenlabs.listing import SkippedAgent
from .exactly_once import ClaimTimeoutError, oldest_first
from .models import Persona
from .provisioning import ProvisioningService, ProvisionResult
from .store import AgentRecordedElsewhereError
from .identity import identity_of
from .persona_validation import InvalidPersonaError
from .voice_policy import config_hash, voice_settings


class Action(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    ADOPT = "adopt"
    DELETE = "delete"
    INVALID = "invalid"  # listed so it gets fixed, never acted on


@dataclass(frozen=True)
class PlannedChange:
    action: Action
    persona_id: int
    # update: the agent patched; replace: the recorded agent that is gone; adopt: the agent to adopt;
    # delete: the agent to delete. None for create and invalid.
    agent_id: str | None
    reason: str
    # adopt only: the recorded agent that is gone and must be forgotten first.
    lost_agent_id: str | None = None


@dataclass
class Plan:
    changes: list[PlannedChange] = field(default_factory=list)
    in_sync: int = 0
    # Listed agents of a shape the project does not expect: left alone, and named so someone looks at them.
    skipped: list[SkippedAgent] = field(default_factory=list)

    def of(self, action: Action) -> list[PlannedChange]:
        return [change for change in self.changes if change.action is action]

    def counts(self) -> dict[str, int]:
        counted = Counter(change.action.value for change in self.changes)
        return {action.value: counted.get(action.value, 0) for action in Action} | {"in_sync": self.in_sync}

    @property
    def actionable(self) -> list[PlannedChange]:
        return [change for change in self.changes if change.action is not Action.INVALID]

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": self.counts(),
            "changes": [asdict(change) | {"action": change.action.value} for change in self.changes],
            "skipped_remote_agents": [asdict(agent) | {"description": str(agent)} for agent in self.skipped],
        }


@dataclass(frozen=True)
class ChangeResult:
    change: PlannedChange
    ok: bool
    detail: str  # what happened, or why it failed


def _remote_project_agents(
    service: ProvisioningService, skipped: list[SkippedAgent]
) -> tuple[set[str], dict[int, list[dict[str, Any]]]]:
    """Every listed agent id, and the project's agents grouped by the persona identity they carry; agents
    of unexpected shape go to `skipped` (their ids still count as listed: such an agent is not gone).

    An agent a persona records is grouped under that persona whatever tag it carries (edited or copied
    upstream), so it is never planned as another persona's duplicate, adoption or orphan.
    """
    listed: set[str] = set()
    tagged: dict[str, tuple[int, dict[str, Any]]] = {}
    installation_id = service.installation_id
    for agent in service.client.list_agents(on_skipped=skipped.append):
        listed.add(agent["agent_id"])
        persona_id = identity_of(agent, installation_id)
        if persona_id is not None:
            tagged[agent["agent_id"]] = persona_id, agent
    recorded_by = service.store.personas_recording(tagged)
    by_persona: dict[int, list[dict[str, Any]]] = {}
    for agent_id, (persona_id, agent) in tagged.items():
        by_persona.setdefault(recorded_by.get(agent_id, persona_id), []).append(agent)
    return listed, by_persona


def _what_changed(persona: Persona, payload: dict[str, Any], settings: dict[str, Any]) -> str:
    """A readable reason for an update, from the voice, settings and prompt recorded with the agent."""
    tts = payload["conversation_config"]["tts"]
    changes = []
    if persona.voice_id != tts["voice_id"]:
        changes.append(f"voice {persona.voice_id} -> {tts['voice_id']}")
    recorded = persona.voice_settings or {}
    changes += [f"{key} {recorded.get(key)} -> {value}" for key, value in settings.items() if recorded.get(key) != value]
    if persona.conversation_prompt != payload["conversation_config"]["agent"]["prompt"]["prompt"]:
        changes.append("prompt")
    if persona.agent_config_hash is None:  # e.g. agents made by the original system, before hashes were kept
        return "no config hash recorded; " + (", ".join(changes) or "config unknown")
    return "traits changed: " + ", ".join(changes) if changes else "agent configuration changed"


def _plan_persona(
    service: ProvisioningService, persona: Persona, listed: set[str], carrying_identity: list[dict[str, Any]]
) -> tuple[list[PlannedChange], bool]:
    """The changes one persona needs, and whether it is in sync."""
    try:
        spec = persona.spec()
    except InvalidPersonaError as exc:
        return [PlannedChange(Action.INVALID, persona.id, persona.elevenlabs_agent_id, f"{exc.field} {exc.reason}")], False
    recorded = persona.elevenlabs_agent_id
    changes: list[PlannedChange] = []
    if recorded and recorded in listed:
        keep = recorded
        payload = service.payload_for(spec)
        if persona.agent_config_hash != config_hash(payload):
            reason = _what_changed(persona, payload, voice_settings(spec))
            if not any(agent["agent_id"] == recorded for agent in carrying_identity):
                reason = f"identity tag gains installation {service.installation_id}; {reason}"
            changes.append(PlannedChange(Action.UPDATE, persona.id, recorded, reason))
        others = [agent for agent in carrying_identity if agent["agent_id"] != recorded]
    elif carrying_identity:
        # Same choice as the service's adoption: the oldest agent carrying the identity is kept.
        [adopted, *others] = oldest_first(carrying_identity)
        keep = adopted["agent_id"]
        reason = (f"recorded agent {recorded} is gone; " if recorded else "no agent recorded; ") + "this one carries its identity"
        changes.append(PlannedChange(Action.ADOPT, persona.id, keep, reason, lost_agent_id=recorded))
    elif recorded:
        return [PlannedChange(Action.REPLACE, persona.id, recorded, "recorded agent is gone from ElevenLabs")], False
    else:
        return [PlannedChange(Action.CREATE, persona.id, None, "persona has no agent")], False
    changes += [
        PlannedChange(Action.DELETE, persona.id, agent["agent_id"], f"duplicate: persona {persona.id} keeps agent {keep}")
        for agent in others
    ]
    return changes, not changes


def build_plan(service: ProvisioningService) -> Plan:
    plan = Plan()
    listed, by_persona = _remote_project_agents(service, plan.skipped)
    earlier = service.store.agents_of_earlier_personas()
    listed.update(agent.agent_id for agent in plan.skipped if agent.agent_id)
    for persona in service.store.iter_personas():
        carrying = by_persona.pop(persona.id, [])
        # An agent of an earlier persona given the same id is an orphan like any other, never this one's.
        orphans = [PlannedChange(Action.DELETE, persona.id, agent["agent_id"], f"agent of an earlier persona {persona.id}, "
                                 "which no longer exists") for agent in carrying if (persona.id, agent["agent_id"]) in earlier]
        carrying = [agent for agent in carrying if (persona.id, agent["agent_id"]) not in earlier]
        changes, in_sync = _plan_persona(service, persona, listed, carrying)
        plan.changes += orphans + changes
        plan.in_sync += in_sync and not orphans
    # What is left carries the identity of personas that no longer exist.
    for persona_id, agents in sorted(by_persona.items()):
        plan.changes += [
            PlannedChange(Action.DELETE, persona_id, agent["agent_id"], f"persona {persona_id} no longer exists")
            for agent in agents
        ]
    return plan


def _provision(service: ProvisioningService, change: PlannedChange) -> ProvisionResult:
    if change.action is Action.CREATE:
        return service.ensure_agent(change.persona_id)
    if change.action is Action.UPDATE:
        return service.update_agent(change.persona_id, reason=change.reason)
    if change.action is Action.REPLACE:
        return service.replace_lost_agent(change.persona_id, change.agent_id)
    if change.lost_agent_id:  # adopt, after forgetting the recorded agent that is gone
        return service.replace_lost_agent(change.persona_id, change.lost_agent_id, adopt_existing=True)
    return service.ensure_agent(change.persona_id, adopt_existing=True)


def _delete(service: ProvisioningService, change: PlannedChange) -> ChangeResult:
    """Delete a planned agent, unless the store has moved on since the plan was made: decided again
    under the persona's claim, at delete time."""
    try:
        kept = service.delete_duplicate(change.persona_id, change.agent_id, reason=change.reason)
    except AgentRecordedElsewhereError as exc:
        kept = str(exc)
    except (ElevenLabsError, ClaimTimeoutError) as exc:
        return ChangeResult(change, False, f"{type(exc).__name__}: {exc}")
    if kept:
        return ChangeResult(change, True, f"kept {change.agent_id}: {kept}")
    return ChangeResult(change, True, f"deleted {change.agent_id}")


def apply_plan(
    service: ProvisioningService,
    plan: Plan,
    *,
    concurrency: int = 5,
    on_result: Callable[[ChangeResult], None] | None = None,
) -> list[ChangeResult]:
    """Carry out the plan: persona changes first (concurrently, one per persona), then deletes.

    Deletes go last so a duplicate is removed only once its persona records the agent it keeps.
    """
    persona_changes = {change.persona_id: change for change in plan.actionable if change.action is not Action.DELETE}
    results: list[ChangeResult] = []

    def report(result: ChangeResult) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    def provisioned(result: ProvisionResult) -> None:
        change = persona_changes[result.persona_id]
        detail = f"{result.outcome.value} {result.agent_id}" if result.ok else f"{result.outcome.value}: {result.error}"
        report(ChangeResult(change, result.ok, detail))

    service.provision_many(
        list(persona_changes),
        concurrency=concurrency,
        operation=lambda persona_id: _provision(service, persona_changes[persona_id]),
        on_result=provisioned,
    )
    for change in plan.of(Action.DELETE):
        if service.stop.requested:  # interrupted: what is left waits for the next run
            break
        report(_delete(service, change))
    return results
