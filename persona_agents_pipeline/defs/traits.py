"""Data versions of the `personas` partitions: the hash of the agent config a persona's traits produce.

Dagster marks a `persona_agent` partition stale when its `personas` partition gets an observation with
another data version than the one it was built from. Observations are written where the traits are at
hand: for new personas by `new_personas_sensor` (the baseline), for edited ones by `agent_drift_sensor`,
and by observing `personas` by hand (a full pass over the table).
"""


from typing import Iterable, Sequence

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from sqlalchemy import select

from ..models import Persona
from ..provisioning import ProvisioningService
from ..reconcile import desired_config_hash
from ..store import PersonaStore
from .partitions import persona_key

PERSONAS_KEY = dg.AssetKey("personas")
_ID_CHUNK = 1000  # ids per IN (...) query


def personas_by_id(store: PersonaStore, persona_ids: Sequence[int]) -> list[Persona]:
    """The personas with these ids that still exist, in id order: one primary-key query per 1000 ids."""
    found: list[Persona] = []
    for start in range(0, len(persona_ids), _ID_CHUNK):
        chunk = list(persona_ids[start : start + _ID_CHUNK])
        with store.session() as session:
            found += session.scalars(select(Persona).where(Persona.id.in_(chunk)))
    return sorted(found, key=lambda persona: persona.id)


def desired_hashes(service: ProvisioningService, personas: Iterable[Persona]) -> dict[int, str]:
    """Persona id -> hash of the config its traits produce now; invalid personas are left out."""
    hashes = {persona.id: desired_config_hash(service, persona) for persona in personas}
    return {persona_id: wanted for persona_id, wanted in hashes.items() if wanted is not None}


def drifted_hashes(service: ProvisioningService, personas: Iterable[Persona]) -> dict[int, str]:
    """Like desired_hashes, for the personas whose recorded agent was built from other traits."""
    with_agent = {persona.id: persona for persona in personas if persona.elevenlabs_agent_id}
    return {
        persona_id: wanted
        for persona_id, wanted in desired_hashes(service, with_agent.values()).items()
        if wanted != with_agent[persona_id].agent_config_hash
    }


def traits_observations(hashes: dict[int, str]) -> list[dg.AssetObservation]:
    """One observation per persona partition of `personas`, carrying the desired hash as its data version."""
    return [
        dg.AssetObservation(asset_key=PERSONAS_KEY, partition=persona_key(persona_id), tags={DATA_VERSION_TAG: wanted})
        for persona_id, wanted in hashes.items()
    ]
