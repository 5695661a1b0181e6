"""`backfill_missing_agents`: a daily batched backfill of every persona that still lacks an agent."""


import os
from typing import Sequence

import dagster as dg

from .assets import persona_agent
from .partitions import RUN_BATCH_SIZE, persona_key, personas_partitions, register
from .resources import PersonaStoreResource
from .sensors import automation_status, range_run_request

BACKFILL_CRON = os.environ.get("PERSONA_AGENTS_BACKFILL_CRON", "0 3 * * *")


def spans(positions: Sequence[int], max_span: int) -> list[tuple[int, int]]:
    """Group sorted positions into (first, last) spans no wider than max_span partitions.

    Dagster runs a contiguous range of partitions; grouping scattered missing personas into a few
    wide ranges keeps the run count near missing/max_span instead of one run per gap. Personas in a
    span that already have an agent are cheap no-ops (one database read, no API call).
    """
    groups: list[tuple[int, int]] = []
    for position in positions:
        if groups and position - groups[-1][0] < max_span:
            groups[-1] = (groups[-1][0], position)
        else:
            groups.append((position, position))
    return groups


def missing_agent_run_requests(
    instance: dg.DagsterInstance, persona_store: PersonaStoreResource, *, run_key_prefix: str | None, max_span: int = RUN_BATCH_SIZE
) -> list[dg.RunRequest]:
    store = persona_store.get_store()
    wanted = [persona_key(pid) for pid in store.ids_without_agents()]
    if not wanted:
        return []
    name = personas_partitions.name
    known = instance.get_dynamic_partitions(name)
    known_set = set(known)
    absent = [key for key in wanted if key not in known_set]
    if absent:
        register(instance, absent)
        known = list(known) + absent
    position = {key: index for index, key in enumerate(known)}
    wanted_positions = sorted(position[key] for key in wanted)
    return [
        range_run_request(
            known[first : last + 1],
            run_key=f"{run_key_prefix}:{known[first]}-{known[last]}" if run_key_prefix else None,
            reason="missing agents",
        )
        for first, last in spans(wanted_positions, max_span)
    ]


verify_agents = dg.ScheduleDefinition(
    name="verify_agents",
    cron_schedule=os.environ.get("PERSONA_AGENTS_VERIFY_CRON", "0 4 * * 0"),
    target=dg.AssetSelection.checks_for_assets(persona_agent),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Runs the persona_agent checks (the remote agent exists and matches the traits) for every "
    "persona with an agent: one GET per agent, within the API limits. Weekly by default; off until turned on.",
)


@dg.schedule(
    name="backfill_missing_agents",
    cron_schedule=BACKFILL_CRON,
    target=[persona_agent],
    default_status=dg.DefaultScheduleStatus.RUNNING
    if automation_status() is dg.DefaultSensorStatus.RUNNING
    else dg.DefaultScheduleStatus.STOPPED,
    description="Requests every persona that still lacks an agent, as a few wide batched runs.",
)
def backfill_missing_agents(context: dg.ScheduleEvaluationContext, persona_store: PersonaStoreResource):
    requests = missing_agent_run_requests(context.instance, persona_store, run_key_prefix=None)
    if not requests:
        return dg.SkipReason("every persona has an agent")
    return requests
