"""`checks_after_materialize_sensor`: runs the checks after a materialization that asked for them.

persona_agent records each partition itself and yields no output (materializations.py: a run's
bookkeeping stays O(run) at any number of partitions), so Dagster skips checks selected in the same
run. A Materialize or backfill launched from the UI selects the checks with the asset, and a launch of the
whole `provision_persona_agents` job from the launchpad runs both (its run records no selection); once such a run
has finished, this sensor requests the checks alone over the same partitions, so each repaired persona's
check turns green (or stays red) right after the repair. Automated runs leave the checks out (the
`verify_agents` schedule covers them) and are passed over. Per tick: one query for the runs finished since
the last tick, no API call.
"""


from datetime import datetime, timezone

import dagster as dg

from .assets import persona_agent
from .automation import SENSOR_INTERVAL_SECONDS, runs_finished_after
from .checks import persona_agent_checks
from .dagster_tags import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG
from .jobs import PROVISION_JOB

PARTITION_TAGS = (PARTITION_TAG, RANGE_START_TAG, RANGE_END_TAG)
RUNS_PER_TICK = 50


def skipped_its_checks(run: dg.DagsterRun) -> bool:
    """The run materialized persona_agent with its checks selected (None selects the asset's checks)."""
    if run.asset_selection is None:  # the whole job, as the launchpad launches it: the asset and its checks
        return run.job_name == PROVISION_JOB
    checks = run.asset_check_selection
    selected = checks is None or bool(set(checks) & set(persona_agent_checks.check_keys))
    return persona_agent.key in (run.asset_selection or set()) and selected


def checks_request(run: dg.DagsterRun) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"checks-after:{run.run_id}",
        asset_selection=[],
        asset_check_keys=list(persona_agent_checks.check_keys),
        tags={**{tag: run.tags[tag] for tag in PARTITION_TAGS if tag in run.tags},
              "persona_agents/reason": f"checks of run {run.run_id[:8]}"},
    )


@dg.sensor(
    name="checks_after_materialize_sensor",
    job_name=PROVISION_JOB,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a Materialize or backfill of persona_agent launched with its checks (the UI's default) "
    "finishes, runs the checks alone on the same partitions: the asset records its partitions itself, so "
    "checks in the same run are skipped. Automated runs (checks left out) are passed over.",
)
def checks_after_materialize_sensor(context: dg.SensorEvaluationContext):
    if context.cursor is None:  # runs finished before the sensor existed are not followed up
        return dg.SensorResult(cursor=str(datetime.now(timezone.utc).timestamp()), skip_reason="watching runs from now on")
    # Every job: a Materialize or backfill from the UI runs in Dagster's implicit asset job, not in ours.
    finished = runs_finished_after(context.instance, float(context.cursor), limit=RUNS_PER_TICK, oldest_first=True)
    if not finished:
        return dg.SkipReason("no run finished since the last tick")
    requests = [checks_request(record.dagster_run) for record in finished if skipped_its_checks(record.dagster_run)]
    return dg.SensorResult(
        run_requests=requests,
        cursor=str(max(record.update_timestamp.timestamp() for record in finished)),
        skip_reason=None if requests else "the finished runs left their checks out",
    )
