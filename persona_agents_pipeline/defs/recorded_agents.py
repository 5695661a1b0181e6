"""Personas whose agent is already recorded in the database are materialized partitions from the moment they
are registered (a new Dagster instance over an existing database, agents made by the CLI or the
application), without an API call; personas without one are registered as missing.

Such a materialization needs the provenance of a run's (materializations.py): the `personas` event it was
built from, by storage id, at or after the persona's traits baseline, or Dagster cannot tell a later
trait edit (stale). A baseline's storage id is known only once the daemon has stored it, after the
sensor's evaluation. So persona_partitions_sensor stores these personas' baselines in one tick and
registers and materializes their partitions in its next (`PartitionsCursor.held_after`): one tick later
than a new persona without an agent, never shown missing in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import dagster as dg

from ..drift import desired_config_hash
from ..models import Persona
from .materializations import provenance
from .partitions import persona_key, registered
from .personas_observations import PERSONAS_KEY, traits_observations
from .resources import PersonaStoreResource, agent_template, dashboard_url

PERSONA_AGENT_KEY = dg.AssetKey("persona_agent")
# The asset defines no code version; this one names how these materializations were made.
RECORDED_CODE_VERSION = "recorded-in-database"
RECORDED_NOTE = ("recorded in the database when the partition was registered (not looked up on ElevenLabs); "
                 "Materialize with mode converge to verify it")


@dataclass(frozen=True)
class PartitionsCursor:
    """persona_partitions_sensor's place in the change log: `seq`, and `held_after` when the personas with a
    recorded agent inserted in (held_after, seq] had their baselines stored by the last tick and are
    registered now ("seq/held_after"; a plain seq when none). While the partitions are being reconciled with
    the table (reconciliation.py), `reconciled_to` is the persona id up to which they match it, and
    `reconcile_held` says the next page's personas with a recorded agent had their baselines stored
    ("seq~reconciled_to", with a trailing "h" when held)."""

    seq: int
    held_after: int | None = None
    reconciled_to: int | None = None
    reconcile_held: bool = False

    @classmethod
    def parse(cls, position: str) -> PartitionsCursor:
        log, _, reconciling = position.partition("~")
        seq, _, held_after = log.partition("/")
        return cls(int(seq), int(held_after) if held_after else None,
                   int(reconciling.rstrip("h")) if reconciling else None, reconciling.endswith("h"))

    def __str__(self) -> str:
        log = str(self.seq) if self.held_after is None else f"{self.seq}/{self.held_after}"
        return log if self.reconciled_to is None else f"{log}~{self.reconciled_to}{'h' if self.reconcile_held else ''}"


def with_recorded_agents(personas: Sequence[Persona]) -> list[Persona]:
    """The valid personas that have a recorded agent (an invalid one is left missing, not shown green)."""
    template = agent_template()
    return [p for p in personas if p.elevenlabs_agent_id and desired_config_hash(template, p) is not None]


def held_baselines(personas: Sequence[Persona]) -> list[dg.AssetObservation]:
    """The baseline of a persona with a recorded agent is the traits its agent was built from, so one
    whose agent drifted shows stale once its partition is materialized (due_registrations)."""
    template = agent_template()
    return traits_observations({p.id: p.agent_config_hash or desired_config_hash(template, p) for p in personas})


def recorded_metadata(persona: Persona, voice_names: dict[str, str]) -> dict[str, dg.MetadataValue]:
    agent_id = persona.elevenlabs_agent_id or ""
    return {
        "persona": dg.MetadataValue.text(persona.name),
        "outcome": dg.MetadataValue.text("recorded"),
        "note": dg.MetadataValue.text(RECORDED_NOTE),
        "agent_id": dg.MetadataValue.text(agent_id),
        "voice_name": dg.MetadataValue.text(voice_names.get(persona.voice_id or "", "")),
        "voice_id": dg.MetadataValue.text(persona.voice_id or ""),
        "voice_settings": dg.MetadataValue.json(persona.voice_settings or {}),
        "dashboard": dg.MetadataValue.url(dashboard_url(agent_id)),
    }


def due_registrations(
    instance: dg.DagsterInstance, persona_store: PersonaStoreResource, cursor: PartitionsCursor
) -> tuple[list[str], list[dg.AssetMaterialization | dg.AssetObservation]]:
    """The held personas' keys to register now and their materializations (followed by the current traits
    of those whose agent drifted). One read of the held slice of the change log, one query per 500 keys."""
    if cursor.held_after is None:
        return [], []
    store = persona_store.get_store()
    changes = [change for change in store.changes_since(cursor.held_after, limit=cursor.seq - cursor.held_after)
               if change.seq <= cursor.seq]
    inserted = list(dict.fromkeys(persona_key(c.persona_id) for c in changes if c.change == "insert"))
    return recorded_registrations(instance, persona_store, inserted)


def recorded_registrations(
    instance: dg.DagsterInstance, persona_store: PersonaStoreResource, keys: Sequence[str]
) -> tuple[list[str], list[dg.AssetMaterialization | dg.AssetObservation]]:
    """Of `keys`, the unregistered personas with a recorded agent (their baselines stored by the last tick):
    their keys to register now and their materializations, followed by the current traits of those whose
    agent drifted. One query per 500 keys."""
    known = registered(instance, keys)
    personas = with_recorded_agents(persona_store.get_store().get_many([int(key) for key in keys if key not in known]))
    template = agent_template()
    voice_names = {voice_id: name for name, voice_id in template.voice_catalogue.items()}
    tags = provenance(instance, [PERSONAS_KEY], RECORDED_CODE_VERSION)
    events: list[dg.AssetMaterialization | dg.AssetObservation] = [
        dg.AssetMaterialization(asset_key=PERSONA_AGENT_KEY, partition=persona_key(p.id),
                                metadata=recorded_metadata(p, voice_names), tags=tags)
        for p in personas
    ]
    drifted = {p.id: wanted for p in personas if (wanted := desired_config_hash(template, p)) != p.agent_config_hash}
    events += traits_observations(drifted)
    return sorted((persona_key(p.id) for p in personas), key=int), events
