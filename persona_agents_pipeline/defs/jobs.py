"""Named jobs, so the Runs page reads "provision_persona_agents" instead of "Jobless asset materializations"."""


import dagster as dg

from .assets import agent_status_report, persona_agent

PROVISION_JOB = "provision_persona_agents"
REPORT_JOB = "refresh_agent_status_report"
DETECT_JOB = "detect_gone_agents"  # defined in detection.py; it refreshes the report itself

provision_persona_agents = dg.define_asset_job(
    PROVISION_JOB,
    # The asset and its checks; each run request names what it runs (automated runs leave the checks out).
    selection=dg.AssetSelection.assets(persona_agent),
    description="Creates, converges, updates or verifies the agents of a range of personas.",
)

refresh_agent_status_report = dg.define_asset_job(
    REPORT_JOB,
    selection=dg.AssetSelection.assets(agent_status_report),
    description="Recomputes the status report (no API call).",
)
