"""`persona-agents demo`: the main job end to end on the embedded default, nothing leaving the machine.

A local ElevenLabs sandbox, the SQLite persona store with demo personas, and the Dagster pipeline run in
this process against a persistent instance under the data directory, so `dagster dev` afterwards shows
the runs, the materialized partitions and the status report.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .config import Settings, data_dir
from .demo_data import demo_personas
from .store import PersonaStore

SANDBOX_KEY = "sandbox-test-key"
# The run's own event log has every detail; the terminal gets a line per run.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return home


def run_demo(persona_count: int, say) -> dict[str, int]:
    """Seed (once), then provision every persona's agent through the Dagster pipeline; returns status counts."""
    import dagster as dg

    # The demo's audience is not the one to act on Dagster's notes about its own beta APIs.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    from .definitions import build_definitions
    from .defs.assets import agent_status_report
    from .defs.jobs import REPORT_JOB
    from .defs.resources import ElevenLabsResource, PersonaStoreResource
    from .defs.schedules import missing_agent_run_requests
    from .in_process_runs import execute_run_request
    from .sandbox.server import SandboxServer

    settings = Settings.from_env()
    store = PersonaStore(settings.database_url)
    store.upgrade()
    if store.count() == 0:
        store.add_personas(demo_personas(persona_count))
        say(f"Seeded {persona_count} demo personas into {store!r}.")
    home = dagster_home()
    with SandboxServer(state_path=data_dir() / "sandbox-agents.db") as sandbox:
        say(f"ElevenLabs sandbox listening on {sandbox.url}; Dagster instance in {home}")
        persona_store = PersonaStoreResource(database_url=settings.database_url)
        definitions = build_definitions(persona_store, ElevenLabsResource(api_key=SANDBOX_KEY, base_url=sandbox.url))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # What the backfill schedule does: partitions for every persona, batched runs for the missing.
            for request in missing_agent_run_requests(instance, persona_store):
                result = execute_run_request(instance, request, QUIET_RUN, definitions)
                say(f"Dagster run {result.run_id[:8]} ({request.tags.get('persona_agents/batch_size')} personas): "
                    f"{'success' if result.success else 'failed'}")
            report = execute_run_request(
                instance, dg.RunRequest(job_name=REPORT_JOB, asset_selection=[agent_status_report.key]), QUIET_RUN, definitions
            )
            counts = {
                name.removeprefix("count_"): value.value
                for name, value in report.asset_materializations_for_node(agent_status_report.key.path[-1])[0].metadata.items()
                if name.startswith("count_")
            }
        say(f"The sandbox holds {len(sandbox.agents())} agents.")
    return counts
