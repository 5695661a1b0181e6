"""`checks_after_materialize_sensor`: runs the checks after a materialization that asked for them.

persona_agent records each partition itself and yields no output (materializations.py: a run's
bookkeeping stays O(run) at any number of partitions), so Dagster skips checks selected in the same
run. A Materialize or backfill launched from the UI selects the checks with the asset, and a launch of the
whole `provision_persona_agents` job from the launchpad runs both (its run records no selection); once such a run
has finished, this sensor requests the checks alone over the same partitions, so each repaired persona's
check turns green (or stays red) right after the repair. Automated runs leave the checks out (the
`verify_agents` schedule covers them) and are passed over. A backfill's checks wait for its last run: each
check is an API call from the same budget as the backfill's creates, so checking its first runs while the
others still create agents slowed the backfill by a fifth (README "At 100,000 personas"). Per tick: one query
for the runs finished since the last tick, one more per backfill among them, no API call.
"""


from datetime import datetime, timezone

import dagster as dg

from .assets import persona_agent
from .automation import FINISHED, SENSOR_INTERVAL_SECONDS, runs_finished_after
from .checks import persona_agent_checks
from .dagster_internals import BACKFILL_TAG, PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG
from .jobs import PROVISION_JOB

PARTITION_TAGS = (PARTITION_TAG, RANGE_START_TAG, RANGE_END_TAG)
# A canceled run is not checked, but it may be the last of its backfill to end, which makes the others due.
ENDED = [*FINISHED, dg.DagsterRunStatus.CANCELED]
RUNS_PER_TICK = 50


def skipped_its_checks(run: dg.DagsterRun) -> bool:
    """The run materialized persona_agent with its checks selected (None selects the asset's checks)."""
    if run.asset_selection is None:  # the whole job, as the launchpad launches it: the asset and its checks
        return run.job_name == PROVISION_JOB
    checks = run.asset_check_selection
    selected = checks is None or bool(set(checks) & set(persona_agent_checks.check_keys))
    return persona_agent.key in (run.asset_selection or set()) and selected


def runs_due_for_checks(instance: dg.DagsterInstance, ended: list[dg.DagsterRun]) -> list[dg.DagsterRun]:
    """Of the runs just ended, those whose checks are due: a run outside a backfill at once; a backfill's
    runs all together once none of them is still queued or running (its earlier runs' requests carry the same
    run keys, so a later retry of one of its runs adds only that run's checks). Canceled runs are not checked."""
    due = [run for run in ended if BACKFILL_TAG not in run.tags]
    for backfill_id in dict.fromkeys(run.tags[BACKFILL_TAG] for run in ended if BACKFILL_TAG in run.tags):
        runs = [record.dagster_run for record in instance.get_run_records(dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))]
        if all(run.is_finished for run in runs):
            due += runs
    return [run for run in due if run.status in FINISHED and skipped_its_checks(run)]


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
    "checks in the same run are skipped. A backfill's checks follow its last run, so that they do not slow "
    "its agent creation. Automated runs (checks left out) are passed over.",
)
def checks_after_materialize_sensor(context: dg.SensorEvaluationContext):
    if context.cursor is None:  # runs finished before the sensor existed are not followed up
        return dg.SensorResult(cursor=str(datetime.now(timezone.utc).timestamp()), skip_reason="watching runs from now on")
    # Every job: a Materialize or backfill from the UI runs in Dagster's implicit asset job, not in ours.
    ended = runs_finished_after(context.instance, float(context.cursor), limit=RUNS_PER_TICK, oldest_first=True,
                                statuses=ENDED)
    if not ended:
        return dg.SkipReason("no run finished since the last tick")
    requests = [checks_request(run) for run in runs_due_for_checks(context.instance, [record.dagster_run for record in ended])]
    return dg.SensorResult(
        run_requests=requests,
        cursor=str(max(record.update_timestamp.timestamp() for record in ended)),
        skip_reason=None if requests else "the finished runs left their checks out, or their backfill is still running",
    )
