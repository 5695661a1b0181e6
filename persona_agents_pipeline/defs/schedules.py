"""Schedules: `backfill_missing_agents` (daily, every persona still without an agent) and `verify_agents`
(weekly, the checks of every agent)."""

from __future__ import annotations

from typing import Sequence

import dagster as dg

from .automation import automation_status
from .jobs import provision_persona_agents
from .partitions import persona_key, personas_partitions, register
from .personas_observations import registration
from .resources import PersonaStoreResource, definition_settings
from .run_requests import ENSURE_RUN_CONFIG, span_run_requests


def partition_run_requests(
    instance: dg.DagsterInstance, persona_store: PersonaStoreResource, persona_ids: Sequence[int], *, reason: str, **request_options
) -> list[dg.RunRequest]:
    """Few wide range runs covering `persona_ids`, registering (with their traits baseline) the partitions missing."""
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
    return span_run_requests([*known, *absent], wanted, reason=reason, **request_options)


def missing_agent_run_requests(instance: dg.DagsterInstance, persona_store: PersonaStoreResource) -> list[dg.RunRequest]:
    """Ensure runs (no lookup of existing agents) for every persona still without an agent."""
    return partition_run_requests(
        instance, persona_store, persona_store.get_store().ids_without_agents(), reason="missing agents",
        run_config=ENSURE_RUN_CONFIG,
    )


@dg.schedule(
    name="verify_agents",
    cron_schedule=definition_settings().verify_cron,
    job=provision_persona_agents,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Runs the persona_agent checks (the remote agent exists and matches the traits) for every "
    "persona with an agent, in batched check-only runs: one GET per agent, within the API limits. A failing "
    "persona stays failing on its partition until repaired. Weekly by default; off until turned on.",
)
def verify_agents(context: dg.ScheduleEvaluationContext, persona_store: PersonaStoreResource):
    ids = [persona.id for persona in persona_store.get_store().with_agents()]
    requests = partition_run_requests(context.instance, persona_store, ids, reason="verify agents", checks_only=True)
    return requests or dg.SkipReason("no persona has an agent to verify")


@dg.schedule(
    name="backfill_missing_agents",
    cron_schedule=definition_settings().backfill_cron,
    job=provision_persona_agents,
    default_status=dg.DefaultScheduleStatus.RUNNING
    if automation_status() is dg.DefaultSensorStatus.RUNNING
    else dg.DefaultScheduleStatus.STOPPED,
    description="Requests every persona that still lacks an agent, as a few wide batched runs.",
)
def backfill_missing_agents(context: dg.ScheduleEvaluationContext, persona_store: PersonaStoreResource):
    requests = missing_agent_run_requests(context.instance, persona_store)
    return requests or dg.SkipReason("every persona has an agent")
