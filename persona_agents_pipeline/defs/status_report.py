"""`status_report_sensor`: keeps agent_status_report current without a run per persona change.

Per tick: one query for the newest persona change and one for runs finished since the last tick. When
either moved, one report run is requested (its run key makes a repeated request a no-op).
"""


import json

import dagster as dg

from .automation import SENSOR_INTERVAL_SECONDS, runs_finished_after
from .jobs import DETECT_JOB, REPORT_JOB, refresh_agent_status_report
from .resources import PersonaStoreResource


@dg.sensor(
    name="status_report_sensor",
    job=refresh_agent_status_report,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refreshes agent_status_report after persona changes and after provisioning or verification "
    "runs finish. No API call; at most one report run per tick.",
)
def status_report_sensor(context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource):
    cursor = json.loads(context.cursor) if context.cursor else {"seq": -1, "finished_after": 0.0}
    seq = persona_store.get_store().latest_change_seq()
    finished = [
        record
        for record in runs_finished_after(context.instance, cursor["finished_after"], limit=50)
        if record.dagster_run.job_name not in (REPORT_JOB, DETECT_JOB)  # both leave the report current
    ]
    finished_after = max([cursor["finished_after"], *(record.update_timestamp.timestamp() for record in finished)])
    if seq == cursor["seq"] and not finished:
        return dg.SkipReason("no persona change and no finished run since the last report")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"status-report:{seq}:{finished_after}")],
        cursor=json.dumps({"seq": seq, "finished_after": finished_after}),
    )
