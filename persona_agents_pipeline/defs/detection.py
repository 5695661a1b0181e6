"""`detect_gone_agents`: on a schedule that runs in every environment, list the account's agents (one
request per 100, at batch priority in the shared budget) and turn `remote_agent_exists` red on the
partition of every persona whose agent is gone, and green again where a red one is listed. It only
detects: `replace_gone_agents_sensor`, on where auto-creation is, requests the repairs."""

import dagster as dg

from ..config import Settings
from ..detection import Detection, detect_gone_agents
from ..elevenlabs.errors import ElevenLabsError
from .agent_listing import LISTING_KEY, ORPHAN_COUNT, ORPHANS
from .assets import ELEVENLABS_POOL, GROUP, agent_status_report, gone_agent_keys
from .automation import automation_status
from .checks import EXISTS, MAX_LISTED, check_targets, per_partition
from .jobs import DETECT_JOB, provision_persona_agents
from .partitions import persona_key, personas_partitions
from .resources import ElevenLabsResource, PersonaStoreResource, definition_settings, provisioning_service
from .run_requests import span_run_requests

def check_evaluations(instance: dg.DagsterInstance, detection: Detection) -> list[dg.AssetCheckEvaluation]:
    """Red for each newly gone agent, green for each red partition whose agent is listed; nothing for the
    rest, so a listing of 100,000 healthy agents writes no event."""
    red = gone_agent_keys(instance)
    newly_gone = [(gone.persona_id, str(gone)) for gone in detection.gone if persona_key(gone.persona_id) not in red]
    listed_again = [pid for pid in detection.present if persona_key(pid) in red]
    ids = [pid for pid, _ in newly_gone] + listed_again
    return per_partition(EXISTS, ids, newly_gone, check_targets(instance, ids))


def listing_metadata(detection: Detection) -> dict[str, dg.MetadataValue]:
    return {
        "listed_agents": dg.MetadataValue.int(detection.listed),
        "gone": dg.MetadataValue.int(len(detection.gone)),
        "gone_agents": dg.MetadataValue.md("\n".join(f"- {gone}" for gone in detection.gone[:MAX_LISTED]) or "none"),
        "present": dg.MetadataValue.int(len(detection.present)),
        "too_recent_to_judge": dg.MetadataValue.int(detection.too_recent),
        ORPHAN_COUNT: dg.MetadataValue.int(len(detection.orphans)),
        ORPHANS: dg.MetadataValue.json(
            [{"agent_id": o.agent_id, "name": o.name, "persona_id": o.persona_id} for o in detection.orphans[:MAX_LISTED]]
        ),
        "skipped_items": dg.MetadataValue.json([str(agent) for agent in detection.skipped[:MAX_LISTED]]),
        "seconds": dg.MetadataValue.float(round(detection.seconds, 3)),
    }


@dg.asset(
    key=LISTING_KEY,
    group_name=GROUP,
    kinds={"elevenlabs"},
    pool=ELEVENLABS_POOL,
    description="The account's agents as last listed (one request per 100 agents), compared with the recorded ones: "
    "gone agents turn remote_agent_exists red on their persona's partition; agents carrying this installation's "
    "identity that no persona records are named as orphans. Nothing is created or deleted. A listing that fails "
    "or is not complete marks nothing gone.",
)
def elevenlabs_agent_listing(
    context: dg.AssetExecutionContext, persona_store: PersonaStoreResource, elevenlabs: ElevenLabsResource
) -> dg.MaterializeResult:
    service = provisioning_service(persona_store, elevenlabs)
    try:
        detection = detect_gone_agents(service)
    except ElevenLabsError as exc:
        raise dg.Failure(
            description=f"the agent list could not be read to the end ({type(exc).__name__}: {exc}); nothing is "
            "marked gone. The next scheduled listing tries again.",
            allow_retries=False,
        ) from None
    finally:
        service.client.close()
    if not detection.conclusive:
        raise dg.Failure(description=detection.inconclusive_reason(), metadata=listing_metadata(detection),
                         allow_retries=False)
    for evaluation in check_evaluations(context.instance, detection):
        context.log_event(evaluation)
    context.log.info("listed %d agents: %d gone, %d orphaned", detection.listed, len(detection.gone), len(detection.orphans))
    return dg.MaterializeResult(metadata=listing_metadata(detection))


detect_gone_agents_job = dg.define_asset_job(
    DETECT_JOB,
    # The report is refreshed in the same run, after the listing, so it shows what the listing found.
    selection=dg.AssetSelection.assets(elevenlabs_agent_listing, agent_status_report),
    description="Lists the account's agents, marks gone ones red and names orphans; then refreshes the report.",
)


@dg.schedule(
    name="detect_gone_agents_schedule",
    cron_schedule=definition_settings().detect_cron,
    job=detect_gone_agents_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Lists the account's agents (about one request per 100 agents, at batch priority) to find agents "
    "deleted upstream and orphans; on in every environment, since it only detects. PERSONA_AGENTS_DETECT_CRON "
    "sets the interval (hourly by default).",
)
def detect_gone_agents_schedule(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(tags={"persona_agents/reason": "detect gone agents"})


@dg.run_status_sensor(
    name="replace_gone_agents_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[detect_gone_agents_job],
    request_job=provision_persona_agents,
    default_status=automation_status(),
    description="After a listing, replaces the agents found gone (Materialize in mode converge on exactly their "
    "partitions). Runs by default only where auto-creation is on.",
)
def replace_gone_agents_sensor(context: dg.RunStatusSensorContext):
    if not Settings.from_env().auto_create:
        return dg.SkipReason("auto-creation is off (AUTO_CREATE_ELEVENLABS_AGENTS): gone agents stay red until repaired")
    gone = gone_agent_keys(context.instance)
    known = context.instance.get_dynamic_partitions(personas_partitions.name)
    # Keyed by the listing's run, so a repeated evaluation for the same listing requests nothing new.
    run_key = f"replace-gone:{context.dagster_run.run_id}:{{first}}-{{last}}"
    requests = span_run_requests(known, gone, reason="replace gone agents", run_key=run_key, contiguous=True)
    return requests or dg.SkipReason("no agent is gone")
