"""Reconciling persona_agent's partitions with the personas table, for persona_partitions_sensor on a new
cursor or one of another database (change_cursor.py): the change log cannot say which personas another
database's partitions lack or hold too many of, and personas inserted before `db upgrade` made the log are
in none. Page by page in id order, each tick registers the page's personas without a partition (with their
baselines; those with a recorded agent one tick later, materialized, as recorded_agents.py explains) and
removes the partitions in the page's id range whose persona does not exist. No API call. The change log is
then read from the seq the reconciliation began at, so nothing changed meanwhile is missed.
"""

from __future__ import annotations

from itertools import islice

import dagster as dg

from .change_cursor import tied_cursor
from .partitions import add_requests, persona_key, personas_partitions
from .personas_observations import registration
from .recorded_agents import PartitionsCursor, held_baselines, recorded_registrations, with_recorded_agents
from .resources import PersonaStoreResource

# Personas per tick (and at most as many partitions removed): a few seconds of a sensor evaluation.
RECONCILE_PAGE = 5_000


def gone_partitions(instance: dg.DagsterInstance, page_keys: list[str], after: int, page_end: int | None) -> list[str]:
    """Registered keys in (after, page_end] (to the end when page_end is None) that name no persona of the
    page; keys that are no persona id at all go with the last page."""
    present = set(page_keys)
    return [key for key in instance.get_dynamic_partitions(personas_partitions.name) if key not in present and (
        page_end is None if not key.isdigit() else after < int(key) and (page_end is None or int(key) <= page_end))]


def reconciliation_tick(
    context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource, cursor: PartitionsCursor
) -> dg.SensorResult:
    """One page of the reconciliation after `cursor.reconciled_to`, with the cursor to continue from."""
    after = cursor.reconciled_to or 0
    personas = list(islice(persona_store.get_store().iter_personas(RECONCILE_PAGE, after_id=after), RECONCILE_PAGE))
    page_end = personas[-1].id if len(personas) == RECONCILE_PAGE else None
    keys = [persona_key(p.id) for p in personas]
    done = PartitionsCursor(cursor.seq) if page_end is None else PartitionsCursor(cursor.seq, reconciled_to=page_end)
    if cursor.reconcile_held:
        due_keys, recorded = recorded_registrations(context.instance, persona_store, keys)
        context.log.info("reconciling: %d partition(s) of recorded agents added", len(due_keys))
        return dg.SensorResult(dynamic_partitions_requests=add_requests(due_keys), asset_events=recorded,
                               cursor=tied_cursor(persona_store, str(done)))
    gone = gone_partitions(context.instance, keys, after, page_end)
    if len(gone) > RECONCILE_PAGE:  # the rest in the next tick, before this page's registrations
        context.log.info("reconciling: %d partition(s) of personas that do not exist removed", RECONCILE_PAGE)
        return dg.SensorResult(dynamic_partitions_requests=[personas_partitions.build_delete_request(gone[:RECONCILE_PAGE])],
                               cursor=tied_cursor(persona_store, str(cursor)))
    new_keys, baseline = registration(context.instance, persona_store, keys)
    missing = set(new_keys)
    held = with_recorded_agents([p for p in personas if persona_key(p.id) in missing])
    held_keys = {persona_key(p.id) for p in held}
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = add_requests(
        [key for key in new_keys if key not in held_keys])
    if gone:
        requests.append(personas_partitions.build_delete_request(gone))
    context.log.info("reconciling personas %d..%s with the partitions: %d added, %d removed, %d recorded agent(s) "
                     "held to the next tick", after + 1, page_end or "end", len(new_keys) - len(held),
                     len(gone), len(held))
    events = [event for event in baseline if event.partition not in held_keys] + held_baselines(held)
    next_cursor = PartitionsCursor(cursor.seq, reconciled_to=after, reconcile_held=True) if held else done
    return dg.SensorResult(dynamic_partitions_requests=requests, asset_events=events,
                           cursor=tied_cursor(persona_store, str(next_cursor)))
