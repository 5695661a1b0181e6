"""`agent_drift_sensor`: follows trait edits in the persona change log and updates the agents they affect.

Per tick: one range scan of the change log after the cursor, one primary-key query for the edited
personas, no API call. A persona is requested only when its recorded agent was built from other traits
(stored config hash != the hash its traits produce now): edits that change nothing the agent uses, or
that were undone, request nothing. The same tick observes the new hash on the persona's `personas`
partition, which marks its `persona_agent` partition stale in the UI until the update run materializes it.
"""


import dagster as dg

from ..reconcile import drifted_hashes
from .assets import persona_agent
from .jobs import PROVISION_JOB
from .partitions import RUN_BATCH_SIZE, add_requests, persona_key, personas_partitions
from .resources import PersonaStoreResource, agent_template
from .schedules import spans
from .sensors import SENSOR_INTERVAL_SECONDS, automation_status, changes_after_cursor, range_run_request
from .traits import traits_observations

UPDATE_RUN_CONFIG = {"ops": {persona_agent.op.name: {"config": {"mode": "update"}}}}


def update_run_requests(known_keys: list[str], keys: list[str], last_seq: int) -> list[dg.RunRequest]:
    """Update runs over exactly the drifted keys: runs of neighbouring partitions, at most RUN_BATCH_SIZE
    each. A persona that did not drift gets no run and no (no-op) materialization burying its history."""
    position = {key: index for index, key in enumerate(known_keys)}
    wanted = sorted(position[key] for key in keys if key in position)
    return [
        range_run_request(
            known_keys[first : last + 1],
            run_key=f"agent-drift:{known_keys[first]}-{known_keys[last]}:{last_seq}",
            reason="traits changed",
            run_config=UPDATE_RUN_CONFIG,
        )
        for first, last in spans(wanted, RUN_BATCH_SIZE, contiguous=True)
    ]


@dg.sensor(
    name="agent_drift_sensor",
    job_name=PROVISION_JOB,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=automation_status(),
    description="Reads trait edits after its cursor in the persona change log; marks the agents built from "
    "other traits stale and requests their in-place update (mode: update) in batched runs. Unchanged "
    "personas are never touched. `persona-agents plan` shows the same drift from the command line.",
)
def agent_drift_sensor(context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource):
    changes = changes_after_cursor(context, persona_store)
    if not changes:
        return dg.SkipReason(f"no persona changes after seq {context.cursor or 0}")
    last_seq = changes[-1].seq
    edited = sorted({change.persona_id for change in changes if change.change == "update"})

    drifted = drifted_hashes(agent_template(), persona_store.get_store().get_many(edited)) if edited else {}
    keys = [persona_key(persona_id) for persona_id in drifted]
    known = context.instance.get_dynamic_partitions(personas_partitions.name) if keys else []
    # Agents made outside Dagster (e.g. `persona-agents apply`) may have no partition yet: add it, at the end.
    unknown = sorted(set(keys) - set(known), key=int)
    requests = update_run_requests([*known, *unknown], keys, last_seq) if keys else []
    context.log.info(
        "changes %d..%d: %d edited persona(s), %d drifted, %d update run(s)",
        changes[0].seq, last_seq, len(edited), len(drifted), len(requests),
    )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=add_requests(unknown),
        asset_events=traits_observations(drifted),
        cursor=str(last_seq),
        skip_reason=None if requests else f"changes up to seq {last_seq}: no agent drifted",
    )
