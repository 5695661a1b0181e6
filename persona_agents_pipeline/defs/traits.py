"""Data versions of the `personas` partitions: the hash of the agent config a persona's traits produce.

Dagster marks a `persona_agent` partition stale when its `personas` partition gets an observation with
another data version than the one it was built from. Observations are written where the traits are at
hand: for new personas by `new_personas_sensor` (the baseline), for edited ones by `agent_drift_sensor`,
and by observing `personas` by hand (a full pass over the table).
"""


import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from .partitions import persona_key

PERSONAS_KEY = dg.AssetKey("personas")


def traits_observations(hashes: dict[int, str]) -> list[dg.AssetObservation]:
    """One observation per persona partition of `personas`, carrying the desired hash as its data version."""
    return [
        dg.AssetObservation(asset_key=PERSONAS_KEY, partition=persona_key(persona_id), tags={DATA_VERSION_TAG: wanted})
        for persona_id, wanted in hashes.items()
    ]
