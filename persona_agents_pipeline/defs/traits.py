"""Data versions of the `personas` partitions: the hash of the agent config a persona's traits produce.

Dagster marks a `persona_agent` partition stale when its `personas` partition gets an observation with
another data version than the one it was built from. Observations are written where the traits are at
hand: for new personas by `new_personas_sensor` (the baseline), for edited ones by `agent_drift_sensor`,
and by observing `personas` by hand (a full pass over the table).
"""


from typing import Iterable

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from ..models import Persona
from ..reconcile import desired_config_hash
from ..voice_policy import AgentTemplate
from .partitions import persona_key

PERSONAS_KEY = dg.AssetKey("personas")


def desired_hashes(template: AgentTemplate, personas: Iterable[Persona]) -> dict[int, str]:
    """Persona id -> hash of the config its traits produce now; invalid personas are left out."""
    hashes = {persona.id: desired_config_hash(template, persona) for persona in personas}
    return {persona_id: wanted for persona_id, wanted in hashes.items() if wanted is not None}


def drifted_hashes(template: AgentTemplate, personas: Iterable[Persona]) -> dict[int, str]:
    """Like desired_hashes, for the personas whose recorded agent was built from other traits."""
    with_agent = {persona.id: persona for persona in personas if persona.elevenlabs_agent_id}
    return {
        persona_id: wanted
        for persona_id, wanted in desired_hashes(template, with_agent.values()).items()
        if wanted != with_agent[persona_id].agent_config_hash
    }


def traits_observations(hashes: dict[int, str]) -> list[dg.AssetObservation]:
    """One observation per persona partition of `personas`, carrying the desired hash as its data version."""
    return [
        dg.AssetObservation(asset_key=PERSONAS_KEY, partition=persona_key(persona_id), tags={DATA_VERSION_TAG: wanted})
        for persona_id, wanted in hashes.items()
    ]
