"""Sensors on the persona change log, each reading only the entries after its cursor:
`persona_partitions_sensor` keeps the partitions in step (always on), `new_personas_sensor` requests agents
for new personas once registered and `agent_drift_sensor` updates agents whose traits changed (both on where
auto-creation is)."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from ..drift import drifted_hashes
from .automation import SENSOR_INTERVAL_SECONDS, automation_status, changes_after, changes_after_cursor
from .assets import persona_agent
from .change_cursor import own_position, tied_cursor
from .checks import MATCHES, invalid_agent_evaluations
from .dagster_internals import current_failed_check_partitions
from .jobs import PROVISION_JOB
from .partitions import add_requests, key_chunks, persona_key, personas_partitions, registered
from .personas_observations import baselines_recorded, registration, traits_observations
from .reconciliation import reconciliation_tick
from .recorded_agents import PartitionsCursor, due_registrations, held_baselines, with_recorded_agents
from .resources import PersonaStoreResource, agent_template
from .run_requests import ENSURE_RUN_CONFIG, UPDATE_RUN_CONFIG, span_run_requests


def drifted(persona_store: PersonaStoreResource, persona_ids: list[int]) -> dict[int, str]:
    """Persona id -> wanted config hash, for the given personas whose agent was built from other traits."""
    return drifted_hashes(agent_template(), persona_store.get_store().get_many(persona_ids)) if persona_ids else {}


@dg.sensor(
    name="persona_partitions_sensor",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the partitions of persona_agent equal to the personas table, with or without "
    "auto-creation: a persona without an agent shows as a missing partition, one whose agent is recorded in "
    "the database as materialized (a tick after its baseline). Adds and removes partitions and records each "
    "new persona's traits baseline and the new traits of edited ones (a drifted agent shows stale); requests "
    "no runs and makes no API call.",
)
def persona_partitions_sensor(context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource):
    position = own_position(persona_store, context.cursor)
    # A new cursor, or another database's: reconcile the partitions with the table, then read the log onwards.
    cursor = (PartitionsCursor.parse(position) if position is not None
              else PartitionsCursor(persona_store.get_store().latest_change_seq(), reconciled_to=0))
    if cursor.reconciled_to is not None:
        return reconciliation_tick(context, persona_store, cursor)
    # Personas with a recorded agent whose baselines the last tick stored: registered now, materialized.
    due_keys, recorded = due_registrations(context.instance, persona_store, cursor)
    changes = changes_after(persona_store, cursor.seq)
    if isinstance(changes, dg.SkipReason):
        if cursor.held_after is None:
            return changes
        context.log.info("%d partition(s) of recorded agents added", len(due_keys))
        return dg.SensorResult(dynamic_partitions_requests=add_requests(due_keys), asset_events=recorded,
                               cursor=tied_cursor(persona_store, str(PartitionsCursor(cursor.seq))))
    inserted, deleted = changes.net_keys()
    new_keys, baseline = registration(context.instance, persona_store, inserted)
    held = with_recorded_agents(persona_store.get_store().get_many([int(key) for key in new_keys]))
    held_keys = {persona_key(p.id) for p in held}
    new_keys = [key for key in new_keys if key not in held_keys]
    baseline = [event for event in baseline if event.partition not in held_keys] + held_baselines(held)
    # Trait edits that change an agent's config show it stale at once, with or without auto-update (a held
    # persona's drift shows once its partition is materialized, in the next tick).
    edited_ids = [pid for pid in changes.edited() if persona_key(pid) not in held_keys]
    edited = drifted(persona_store, edited_ids)
    invalid = invalid_agent_evaluations(context.instance, persona_store.get_store().get_many(edited_ids)) if edited_ids else []
    gone_keys = sorted(registered(context.instance, deleted), key=int)
    partition_requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = add_requests(due_keys + new_keys)
    if gone_keys:
        partition_requests.append(personas_partitions.build_delete_request(gone_keys))
    context.log.info("%s: %d partition(s) added (%d with a recorded agent), %d removed, %d recorded agent(s) held to "
                     "the next tick", changes.describe(), len(due_keys) + len(new_keys), len(due_keys), len(gone_keys), len(held))
    return dg.SensorResult(
        dynamic_partitions_requests=partition_requests,
        asset_events=[*recorded, *baseline, *traits_observations(edited), *invalid],
        cursor=tied_cursor(persona_store, str(PartitionsCursor(changes.last_seq, cursor.seq if held else None))),
        skip_reason=None if partition_requests or baseline or edited or recorded or invalid
        else f"changes up to seq {changes.last_seq} need no partition change",
    )


# Who registers a new persona (its partition and traits baseline): persona_partitions_sensor, always on by
# default, registers every new persona. The daemon evaluates sensors in parallel threads, so when
# new_personas_sensor also registered the personas it requests, both saw them unregistered in coinciding ticks
# and every baseline was stored twice (2,000 for a burst of 1,000, minutes of the daemon's time before the
# runs start). So new_personas_sensor requests runs only for registered personas (a run over an unregistered
# partition fails) and holds its cursor before the first one still unregistered, leaving it to
# persona_partitions_sensor. It registers them itself (partitions and baselines: never a partition without
# its baseline) only once it has left them for two of its own ticks (the other sensor ticks as often) and no
# baseline of theirs is stored: that sensor has not begun (stopped). While their baselines are being stored it keeps waiting, however long
# the daemon takes (were that tick never to finish, the daily backfill schedule registers them). The price is
# one tick (PERSONA_AGENTS_SENSOR_INTERVAL) before a new persona's run. Asking Dagster whether the other
# sensor is running would need its instigator origins (private API), and would not say whether it has begun.
TICKS_LEFT_TO_PARTITIONS_SENSOR = 2
MATCHES_KEY = dg.AssetCheckKey(persona_agent.key, MATCHES)


@dataclass(frozen=True)
class NewPersonasCursor:
    """new_personas_sensor's place in the change log: `seq`, and for how many ticks the first unregistered
    new persona after it has been left to persona_partitions_sensor ("seq/ticks"; a plain seq when none)."""

    seq: int
    ticks_waited: int = 0

    @classmethod
    def parse(cls, cursor: str | None) -> NewPersonasCursor:
        seq, _, ticks = (cursor or "0").partition("/")
        return cls(int(seq), int(ticks or 0))

    def __str__(self) -> str:
        return f"{self.seq}/{self.ticks_waited}" if self.ticks_waited else str(self.seq)


@dg.sensor(
    name="new_personas_sensor",
    job_name=PROVISION_JOB,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=automation_status(),
    description="Requests agents for new personas in batched runs (mode ensure), once persona_partitions_sensor "
    "has registered them; registers them itself when that sensor has not within two ticks (stopped). Reads only "
    "the change log entries after its cursor.",
)
def new_personas_sensor(context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource):
    cursor = NewPersonasCursor.parse(own_position(persona_store, context.cursor))
    changes = changes_after(persona_store, cursor.seq)
    if isinstance(changes, dg.SkipReason):
        return changes
    inserted, _ = changes.net_keys()
    # Only personas still without an agent (one primary-key query): nothing else is requested.
    wanted = {persona.id for persona in persona_store.get_store().get_many([int(key) for key in inserted]) if not persona.elevenlabs_agent_id}
    keys = [key for key in inserted if int(key) in wanted]
    known = registered(context.instance, keys)
    pending = [key for key in keys if key not in known]
    left_to_partitions_sensor = bool(pending) and (
        cursor.ticks_waited < TICKS_LEFT_TO_PARTITIONS_SENSOR or baselines_recorded(context.instance, pending))
    if left_to_partitions_sensor:
        keys = keys[: keys.index(pending[0])]
        held = changes.insert_seq(pending[0]) - 1
        next_cursor = NewPersonasCursor(held, cursor.ticks_waited + 1 if held == cursor.seq else 1)
        new_keys, baseline = [], []
    else:
        next_cursor = NewPersonasCursor(changes.last_seq)
        new_keys, baseline = registration(context.instance, persona_store, pending)
    # Keys are registered in change-log order (by either sensor), so in their own order they are neighbours.
    run_requests = span_run_requests(
        keys, keys, reason="new personas", run_key=f"new-personas:{{first}}-{{last}}:{changes.last_seq}",
        run_config=ENSURE_RUN_CONFIG,
    )
    context.log.info("%s: %d new persona(s) without agent in %d run(s), %d left to persona_partitions_sensor",
                     changes.describe(), len(keys), len(run_requests), len(pending) if left_to_partitions_sensor else 0)
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=add_requests(new_keys),
        asset_events=baseline,
        cursor=tied_cursor(persona_store, str(next_cursor)),
        skip_reason=None if run_requests else f"changes up to seq {changes.last_seq}: no registered new persona without an agent",
    )


def failed_and_now_valid(instance: dg.DagsterInstance, persona_store: PersonaStoreResource, persona_ids: list[int]) -> list[str]:
    """Of the edited personas, the valid ones whose partition failed or whose agent_matches_traits is red: the
    edit may have fixed what failed them. One query for the personas, one for the partitions' status and one
    for their checks."""
    if not persona_ids:
        return []
    valid = [persona_key(p.id) for p in persona_store.get_store().get_many(persona_ids) if p.invalid_reason() is None]
    known = registered(instance, valid)
    keys = [key for key in valid if key in known]
    if not keys:
        return []
    statuses = instance.get_status_by_partition(persona_agent.key, keys, personas_partitions) or {}
    red = {key for chunk in key_chunks(keys) for key in current_failed_check_partitions(instance, MATCHES_KEY, chunk)}
    return [key for key in keys if statuses.get(key) == dg.AssetPartitionStatus.FAILED or key in red]


@dg.sensor(
    name="agent_drift_sensor",
    job_name=PROVISION_JOB,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=automation_status(),
    description="Reads trait edits after its cursor in the persona change log; marks the agents built from "
    "other traits stale and requests their in-place update (mode: update) in batched runs, and retries (mode "
    "converge) edited personas whose partition failed or whose traits check is red. Unchanged "
    "personas are never touched. `persona-agents plan` shows the same drift from the command line.",
)
def agent_drift_sensor(context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource):
    """Per tick: one range scan of the change log, one primary-key query for the edited personas, no API call.
    A persona is requested only when its recorded agent was built from other traits: edits that change
    nothing the agent uses, or that were undone, request nothing. The new hash is observed on its `personas`
    partition, so its `persona_agent` partition shows stale until the update run materializes it."""
    changes = changes_after_cursor(context, persona_store)
    if isinstance(changes, dg.SkipReason):
        return changes
    edited = changes.edited()
    wanted = drifted(persona_store, edited)
    keys = [persona_key(persona_id) for persona_id in wanted]
    retry = failed_and_now_valid(context.instance, persona_store, [pid for pid in edited if pid not in wanted])
    known = context.instance.get_dynamic_partitions(personas_partitions.name) if keys or retry else []
    # Agents made outside Dagster (e.g. `persona-agents apply`) may have no partition yet: add it, at the end.
    unknown = sorted(set(keys) - set(known), key=int)
    # Only neighbouring drifted partitions share a run: a persona that did not drift gets no run and no
    # (no-op) materialization burying its history.
    requests = span_run_requests(
        [*known, *unknown], keys, reason="traits changed", run_key=f"agent-drift:{{first}}-{{last}}:{changes.last_seq}",
        contiguous=True, run_config=UPDATE_RUN_CONFIG,
    )
    # Converged (the default mode: creates a missing agent, verifies a present one) in runs of their own.
    requests += span_run_requests(
        known, retry, reason="edited after a failure", run_key=f"agent-retry:{{first}}-{{last}}:{changes.last_seq}",
        contiguous=True,
    )
    context.log.info("%s: %d edited persona(s), %d drifted, %d retried after a failure, %d run(s)",
                     changes.describe(), len(edited), len(wanted), len(retry), len(requests))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=add_requests(unknown),
        asset_events=traits_observations(wanted),
        cursor=tied_cursor(persona_store, str(changes.last_seq)),
        skip_reason=None if requests else f"changes up to seq {changes.last_seq}: no agent drifted, no failed persona edited",
    )
