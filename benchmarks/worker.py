"""Child-process side of the benchmarks: `python -m benchmarks.worker MODE OUT.json [ARGS...]`.

Each approach runs in its own process, as it would in production (a CLI process, a Dagster run worker),
so it never shares a GIL with the sandbox that serves it. Settings come from the environment exactly as
for the real CLI: PERSONAS_DATABASE_URL, ELEVENLABS_BASE_URL, ELEVENLABS_API_KEY, ELEVENLABS_RATE_LIMIT,
ELEVENLABS_MAX_CONCURRENT, DAGSTER_HOME.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


from .common import peak_rss_mb_self


def _out(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, default=str))


# ---- (a) the original approach: a labelled, faithful reimplementation ----------------------------------


def baseline(out: str, latency: str, rate: str, concurrent: str, sleep_s: str = "0.5") -> None:
    """BASELINE (the original system, reimplemented): for each persona without an agent, one create
    through the same ElevenLabsClient, save the id, then sleep a fixed half second. Sequential; no claims.

    Hosts its own sandbox (same limits) so that it can run beside other measurements without sharing a GIL.
    """
    from dataclasses import replace

    from sqlalchemy import update

    from persona_agents_pipeline.client_factory import build_client
    from persona_agents_pipeline.config import BUDGET_OFF, Settings
    from persona_agents_pipeline.models import Persona, utcnow
    from persona_agents_pipeline.sandbox import SandboxServer
    from persona_agents_pipeline.store import PersonaStore

    from .common import API_KEY, create_times

    settings = Settings.from_env()
    store = PersonaStore(settings.database_url)
    with SandboxServer(latency=float(latency), rate_limit=float(rate), max_concurrent=int(concurrent)) as sandbox:
        # Budget off: this process's own limiter at the sandbox's limits, as before the shared budget existed.
        client_settings = replace(settings, base_url=sandbox.url, rate_limit=float(rate), max_concurrent=int(concurrent),
                                  budget_url=BUDGET_OFF)
        # Tagged with this database's installation, as agent_accounting matches agents to personas by that tag.
        template = replace(settings.agent_template(), installation_id=store.installation_id())
        launched = time.monotonic()
        with build_client(client_settings, api_key=API_KEY) as client:
            for persona in store.without_agents():
                payload = template.payload(persona.spec())
                agent_id = client.create_agent(payload)
                with store.session() as session:
                    session.execute(
                        update(Persona).where(Persona.id == persona.id).values(elevenlabs_agent_id=agent_id, agent_created_at=utcnow())
                    )
                time.sleep(float(sleep_s))  # "slow but reliable"
        finished = time.monotonic()
        _out(out, {
            "launched": launched,
            "finished": finished,
            "create_times": create_times(sandbox.request_log()),
            "stats": sandbox.stats(),
            "agents": [{"agent_id": a["agent_id"], "tags": a["tags"]} for a in sandbox.agents()],
        })


# ---- (c) Dagster backfill of all partitions on a real instance -----------------------------------------


def dagster_backfill(out: str) -> None:
    """Register one partition per persona (what new_personas_sensor does), then backfill every partition
    with the asset's own BackfillPolicy (multi_run, max_partitions_per_run=RUN_BATCH_SIZE): one run per
    contiguous batch, executed one after another (the `elevenlabs_api` pool lets one run talk to the API
    at a time, so runs never share the rate limit)."""
    import dagster as dg

    from persona_agents_pipeline.defs.assets import persona_agent
    from persona_agents_pipeline.defs.partitions import personas_partitions
    from persona_agents_pipeline.defs.run_requests import span_run_requests
    from persona_agents_pipeline.in_process_runs import execute_run_request
    from persona_agents_pipeline.store import PersonaStore

    imported = time.monotonic()
    instance = dg.DagsterInstance.get()
    store = PersonaStore(os.environ["PERSONAS_DATABASE_URL"])
    keys = [str(pid) for pid in store.ids_without_agents()]
    registered_started = time.monotonic()
    instance.add_dynamic_partitions(personas_partitions.name, keys)
    registered = time.monotonic()

    launched = time.monotonic()
    size = persona_agent.backfill_policy.max_partitions_per_run
    runs = []
    registered_keys = instance.get_dynamic_partitions(personas_partitions.name)
    for request in span_run_requests(registered_keys, registered_keys, reason="benchmark backfill", max_span=size):
        started = time.monotonic()
        result = execute_run_request(instance, request)
        runs.append({"partitions": int(request.tags["persona_agents/batch_size"]), "started": started,
                     "ended": time.monotonic(), "success": result.success})
    finished = time.monotonic()
    materialized = len(instance.get_materialized_partitions(persona_agent.key))
    _out(out, {
        "imported": imported,
        "partitions_registered_s": registered - registered_started,
        "launched": launched,
        "finished": finished,
        "max_partitions_per_run": size,
        "runs": runs,
        "materialized_partitions": materialized,
        "peak_rss_mb": peak_rss_mb_self(),
    })


# ---- Dagster bookkeeping: the same provisioning with and without a Dagster run -------------------------


def provision_plain(out: str) -> None:
    """provision_many over every persona, no Dagster: the floor the Dagster run is compared with."""
    from persona_agents_pipeline.defs.resources import ElevenLabsResource, PersonaStoreResource, provisioning_service

    resource_ = ElevenLabsResource(api_key=os.environ["ELEVENLABS_API_KEY"])
    service = provisioning_service(PersonaStoreResource(), resource_)
    ids = service.store.ids_without_agents()
    started = time.monotonic()
    results = service.provision_many(ids, concurrency=resource_.concurrency())
    ended = time.monotonic()
    _out(out, {"partitions": len(ids), "ok": sum(r.ok for r in results), "seconds": ended - started})


def provision_dagster_one_run(out: str) -> None:
    """One batched run over every partition (partitions registered beforehand, outside the timing).

    The asset checks are left out, so the difference to provision-plain is Dagster's own bookkeeping:
    run and step start, one materialization event (with metadata) per partition, run end."""
    import dagster as dg

    from persona_agents_pipeline.definitions import defs
    from persona_agents_pipeline.defs.assets import persona_agent
    from persona_agents_pipeline.defs.partitions import personas_partitions
    from persona_agents_pipeline.defs.run_requests import range_run_request
    from persona_agents_pipeline.store import PersonaStore

    instance = dg.DagsterInstance.get()
    keys = [str(pid) for pid in PersonaStore(os.environ["PERSONAS_DATABASE_URL"]).ids_without_agents()]
    instance.add_dynamic_partitions(personas_partitions.name, keys)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={persona_agent.key}, asset_check_selection=set()
    )
    request = range_run_request(keys, run_key=None, reason="benchmark bookkeeping")
    started = time.monotonic()
    # No asset_selection here: it would re-add the checks that get_subset removed.
    result = job.execute_in_process(instance=instance, tags=dict(request.tags), raise_on_error=False)
    ended = time.monotonic()
    _out(out, {
        "partitions": len(keys),
        "success": result.success,
        "seconds": ended - started,
        "materialized_partitions": len(instance.get_materialized_partitions(persona_agent.key)),
    })


# ---- agent_status_report materialized in-process ------------------------------------------------------


def status_asset(out: str, trace: str = "0") -> None:
    import dagster as dg

    from persona_agents_pipeline.definitions import defs
    from persona_agents_pipeline.defs.resources import PersonaStoreResource

    instance = dg.DagsterInstance.get()
    asset = defs.get_assets_def("agent_status_report")
    rss_before = peak_rss_mb_self()
    if trace == "1":
        import tracemalloc

        tracemalloc.start()
    started = time.monotonic()
    result = dg.materialize([asset], instance=instance, resources={"persona_store": PersonaStoreResource()})
    seconds = time.monotonic() - started
    peak_traced = None
    if trace == "1":
        peak_traced = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    frame = result.output_for_node("agent_status_report")
    _out(out, {
        "success": result.success,
        "seconds": seconds,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb_self(),
        "tracemalloc_peak_mb": peak_traced,
        "counts": dict(zip(frame["status"], (int(n) for n in frame["personas"]))),
    })


MODES = {
    "baseline": baseline,
    "dagster-backfill": dagster_backfill,
    "provision-plain": provision_plain,
    "provision-dagster": provision_dagster_one_run,
    "status-asset": status_asset,
}

if __name__ == "__main__":
    MODES[sys.argv[1]](*sys.argv[2:])
