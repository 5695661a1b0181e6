"""Observations of the `personas` source: each partition's data version is the hash of the agent config its
persona's traits produce.

Dagster marks a `persona_agent` partition stale when its `personas` partition gets an observation with
another data version than the one it was built from. Observations are written where the traits are at
hand: a new partition's baseline by whoever registers it (the sensors, the backfill schedule, the demo),
edited personas' new versions by the change-log sensors, and every drifted persona by observing
`personas` by hand (a full pass over the table).
"""

from __future__ import annotations

from typing import Sequence

import dagster as dg

from ..drift import desired_hashes
from .dagster_internals import DATA_VERSION_TAG
from .partitions import KEYS_PER_STATEMENT, persona_key, registered
from .resources import PersonaStoreResource, agent_template

PERSONAS_KEY = dg.AssetKey("personas")


def traits_observations(hashes: dict[int, str]) -> list[dg.AssetObservation]:
    """One observation per persona partition of `personas`, carrying the desired hash as its data version."""
    return [
        dg.AssetObservation(asset_key=PERSONAS_KEY, partition=persona_key(persona_id), tags={DATA_VERSION_TAG: wanted})
        for persona_id, wanted in hashes.items()
    ]


def registration(
    instance: dg.DagsterInstance, persona_store: PersonaStoreResource, keys: Sequence[str]
) -> tuple[list[str], list[dg.AssetObservation]]:
    """The keys among `keys` that have no partition yet, and the baseline data version of each of those
    (the hash its traits give): whoever registers a partition records its baseline before its first
    materialization, so a later trait edit marks it stale however it was created. Keys another sensor has
    registered already have theirs: the daemon stores every event before it submits a tick's runs, so a
    second copy of 1,000 baselines would hold back the tick's runs. A query per 500 keys, not one per key."""
    if not keys:
        return [], []
    existing = registered(instance, keys)
    new_keys = [key for key in keys if key not in existing]
    if not new_keys:
        return [], []
    personas = persona_store.get_store().get_many([int(key) for key in new_keys])
    return new_keys, traits_observations(desired_hashes(agent_template(), personas))


def baselines_recorded(instance: dg.DagsterInstance, keys: Sequence[str]) -> bool:
    """Whether any of the first keys (a statement's worth) has a traits baseline. For keys not registered
    yet, that means someone's registration of them is being stored: the daemon stores a tick's baselines
    before its partitions (1,000 baselines take a minute or more on a loaded machine)."""
    partitions = list(keys[:KEYS_PER_STATEMENT])
    return bool(partitions) and bool(instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=PERSONAS_KEY, asset_partitions=partitions), limit=1).records)
