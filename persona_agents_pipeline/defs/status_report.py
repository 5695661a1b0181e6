"""`status_report_sensor`: keeps agent_status_report current without a run per persona change.

Per tick: one query for the newest persona change, one for runs finished since the last tick and one for the
report's latest materializations. When
either moved, one report run is requested (its run key makes a repeated request a no-op). Runs that refresh
the report themselves are passed over: every check run records it (checks.py), and a Materialize or backfill
launched with its checks is followed by one (checks_after_materialize.py). So a Materialize click makes two
runs, its own and its checks', and a backfill none beyond its checks.
"""


import json

import dagster as dg

from .automation import SENSOR_INTERVAL_SECONDS, runs_finished_after
from .change_cursor import SEPARATOR, own_position, tied_cursor
from .checks_after_materialize import skipped_its_checks
from .assets import agent_status_report
from .jobs import DETECT_JOB, REPORT_JOB, refresh_agent_status_report
from .resources import PersonaStoreResource


RUNS_PER_TICK = 50


def needs_report_run(run: dg.DagsterRun, reported_by: set[str]) -> bool:
    """Whether a finished run leaves the report behind: not the report's own or a listing's (which refreshes
    it), not one that recorded it (a check run), not one whose checks follow it."""
    return run.job_name not in (REPORT_JOB, DETECT_JOB) and run.run_id not in reported_by and not skipped_its_checks(run)


@dg.sensor(
    name="status_report_sensor",
    job=refresh_agent_status_report,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refreshes agent_status_report after persona changes and after automated provisioning runs "
    "finish (check runs record the report themselves, and a Materialize launched with its checks is followed by "
    "a check run). No API call; at most one report run per tick.",
)
def status_report_sensor(context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource):
    # Another database's seq says nothing about this one's (a report is due), but its runs are this instance's.
    stored = (context.cursor or "").rpartition(SEPARATOR)[2]
    cursor = json.loads(stored) if stored else {"seq": -1, "finished_after": 0.0}
    if own_position(persona_store, context.cursor) is None:
        cursor["seq"] = -1
    seq = persona_store.get_store().latest_change_seq()
    ended = runs_finished_after(context.instance, cursor["finished_after"], limit=RUNS_PER_TICK)
    reports = context.instance.fetch_materializations(agent_status_report.key, limit=RUNS_PER_TICK).records if ended else []
    finished = [record for record in ended if needs_report_run(record.dagster_run, {report.run_id for report in reports})]
    finished_after = max([cursor["finished_after"], *(record.update_timestamp.timestamp() for record in ended)])
    if seq == cursor["seq"] and not finished:
        return dg.SkipReason("no persona change and no finished run since the last report")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"status-report:{seq}:{finished_after}")],
        cursor=tied_cursor(persona_store, json.dumps({"seq": seq, "finished_after": finished_after})),
    )
