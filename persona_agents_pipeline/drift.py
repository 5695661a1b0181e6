"""Drift: a persona's recorded agent was built from other traits than the persona has now.

Decided by hashes alone, with no API call: the hash of the agent config the persona's current traits
produce (`AgentTemplate.config_hash`) against the hash recorded with its agent. The plan (reconcile.py),
the CLI's persona commands and the Dagster sensors, observations and status report all ask here.
"""

from __future__ import annotations

from typing import Iterable

from .models import Persona
from .persona_validation import InvalidPersonaError
from .voice_policy import AgentTemplate


def desired_config_hash(template: AgentTemplate, persona: Persona) -> str | None:
    """The hash of the agent config the persona's current traits produce; None for an invalid persona."""
    try:
        return template.config_hash(persona.spec())
    except InvalidPersonaError:
        return None


def desired_hashes(template: AgentTemplate, personas: Iterable[Persona]) -> dict[int, str]:
    """Persona id -> hash of the config its traits produce now; invalid personas are left out."""
    hashes = {persona.id: desired_config_hash(template, persona) for persona in personas}
    return {persona_id: wanted for persona_id, wanted in hashes.items() if wanted is not None}


def drifted_hashes(template: AgentTemplate, personas: Iterable[Persona]) -> dict[int, str]:
    """Like desired_hashes, only for personas whose recorded agent was built from other traits.

    Reads the personas alone (no API call) and keeps only the drifted ones, so a streamed pass over
    the whole table stays flat in memory.
    """
    drifted: dict[int, str] = {}
    for persona in personas:
        if persona.elevenlabs_agent_id:
            wanted = desired_config_hash(template, persona)
            if wanted is not None and wanted != persona.agent_config_hash:
                drifted[persona.id] = wanted
    return drifted
