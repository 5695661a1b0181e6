"""Schedules: `backfill_missing_agents` (daily, every persona still without an agent) and `verify_agents`
(weekly, the checks of every agent)."""


import os
from typing import Sequence

import dagster as dg

from .jobs import provision_persona_agents
from .partitions import RUN_BATCH_SIZE, persona_key, personas_partitions, register
from .resources import PersonaStoreResource
from .sensors import ENSURE_RUN_CONFIG, automation_status, range_run_request, registration

BACKFILL_CRON = os.environ.get("PERSONA_AGENTS_BACKFILL_CRON", "0 3 * * *")


def spans(positions: Sequence[int], max_span: int, *, contiguous: bool = False) -> list[tuple[int, int]]:
    """Group sorted positions into (first, last) spans no wider than max_span partitions.

    Dagster runs a contiguous range of partitions; grouping scattered missing personas into a few
    wide ranges keeps the run count near missing/max_span instead of one run per gap. Personas in a
    span that already have an agent are cheap no-ops in ensure mode (one database read, no API call).
    `contiguous`: only neighbouring positions share a span, so no run touches a partition not asked for.
    """
    groups: list[tuple[int, int]] = []
    for position in positions:
        if groups and position - groups[-1][0] < max_span and (not contiguous or position == groups[-1][1] + 1):
            groups[-1] = (groups[-1][0], position)
        else:
            groups.append((position, position))
    return groups


def partition_run_requests(
    instance: dg.DagsterInstance,
    persona_store: PersonaStoreResource,
    persona_ids: Sequence[int],
    *,
    reason: str,
    run_key_prefix: str | None,
    max_span: int = RUN_BATCH_SIZE,
    **request_options,
) -> list[dg.RunRequest]:
    """Few range runs covering `persona_ids`, registering (with their traits baseline) the partitions missing."""
    wanted = [persona_key(pid) for pid in persona_ids]
    if not wanted:
        return []
    known = instance.get_dynamic_partitions(personas_partitions.name)
    known_set = set(known)
    absent, baseline = registration(instance, persona_store, [key for key in wanted if key not in known_set])
    for observation in baseline:  # before the partitions exist, so no run can precede its baseline
        instance.report_runless_asset_event(observation)
    if absent:
        register(instance, absent)
        known = list(known) + absent
    position = {key: index for index, key in enumerate(known)}
    wanted_positions = sorted(position[key] for key in wanted)
    return [
        range_run_request(
            known[first : last + 1],
            run_key=f"{run_key_prefix}:{known[first]}-{known[last]}" if run_key_prefix else None,
            reason=reason,
            **request_options,
        )
        for first, last in spans(wanted_positions, max_span)
    ]


def missing_agent_run_requests(
    instance: dg.DagsterInstance, persona_store: PersonaStoreResource, *, run_key_prefix: str | None
) -> list[dg.RunRequest]:
    """Ensure runs (no lookup of existing agents) for every persona still without an agent."""
    return partition_run_requests(
        instance, persona_store, persona_store.get_store().ids_without_agents(),
        reason="missing agents", run_key_prefix=run_key_prefix, run_config=ENSURE_RUN_CONFIG,
    )


@dg.schedule(
    name="verify_agents",
    cron_schedule=os.environ.get("PERSONA_AGENTS_VERIFY_CRON", "0 4 * * 0"),
    job=provision_persona_agents,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Runs the persona_agent checks (the remote agent exists and matches the traits) for every "
    "persona with an agent, in batched check-only runs: one GET per agent, within the API limits. A failing "
    "persona stays failing on its partition until repaired. Weekly by default; off until turned on.",
)
def verify_agents(context: dg.ScheduleEvaluationContext, persona_store: PersonaStoreResource):
    ids = [persona.id for persona in persona_store.get_store().with_agents()]
    requests = partition_run_requests(
        context.instance, persona_store, ids, reason="verify agents", run_key_prefix=None, checks_only=True
    )
    return requests or dg.SkipReason("no persona has an agent to verify")


@dg.schedule(
    name="backfill_missing_agents",
    cron_schedule=BACKFILL_CRON,
    job=provision_persona_agents,
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
