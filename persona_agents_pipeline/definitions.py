"""The project's Dagster `Definitions`: `defs` (loaded by workspace.yaml and [tool.dagster]), built from defs/."""


import dagster as dg

from .defs.assets import agent_status_report, persona_agent, personas
from .defs.checks import persona_agent_checks
from .defs.checks_after_materialize import checks_after_materialize_sensor
from .defs.detection import (
    detect_gone_agents_job, detect_gone_agents_schedule, elevenlabs_agent_listing, replace_gone_agents_sensor,
)
from .defs.jobs import provision_persona_agents, refresh_agent_status_report
from .defs.resources import ElevenLabsResource, PersonaStoreResource
from .defs.schedules import backfill_missing_agents, verify_agents
from .defs.sensors import agent_drift_sensor, new_personas_sensor, persona_partitions_sensor
from .defs.status_report import status_report_sensor


def build_definitions(persona_store: PersonaStoreResource, elevenlabs: ElevenLabsResource) -> dg.Definitions:
    """The project's definitions with these resources (the demo passes its own, instead of editing the environment)."""
    return dg.Definitions(
        assets=[personas, persona_agent, agent_status_report, elevenlabs_agent_listing],
        asset_checks=[persona_agent_checks],
        jobs=[provision_persona_agents, refresh_agent_status_report, detect_gone_agents_job],
        sensors=[
            persona_partitions_sensor, new_personas_sensor, agent_drift_sensor, status_report_sensor,
            checks_after_materialize_sensor, replace_gone_agents_sensor,
        ],
        schedules=[backfill_missing_agents, verify_agents, detect_gone_agents_schedule],
        resources={"persona_store": persona_store, "elevenlabs": elevenlabs},
    )


defs = build_definitions(
    PersonaStoreResource(),
    # Resolved when a run starts; never stored in run config, shown in the UI or logged.
    ElevenLabsResource(api_key=dg.EnvVar("ELEVENLABS_API_KEY")),
)
