"""Detecting agents deleted upstream: `python -m benchmarks.detect [--agents N]` (default 100,000).

N personas with agents recorded, N agents on a sandbox that allows RATE requests per second (and answers
each after LATENCY), 0.1% of the agents deleted upstream and 10 orphans. Measured: one
`detect_gone_agents` pass through the shared budget at batch priority (requests, seconds, what it found,
peak memory), then the scheduled Dagster run (listing, check events and report refresh) on a fresh
instance with the personas' partitions registered. Writes benchmarks/results/detect.json and detect.md.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from .common import API_KEY, fresh_store, log, machine, peak_rss_mb_self, seed, write_json

RESULTS = Path(__file__).resolve().parent / "results"
ORPHANS = 10


def _agents_for(url: str, sandbox, n: int) -> str:
    """An agent on the sandbox for every persona (the payload the project sends), recorded an hour ago."""
    from persona_agents_pipeline.config import Settings
    from persona_agents_pipeline.provisioning import ProvisioningService
    from persona_agents_pipeline.store import PersonaStore

    store = PersonaStore(url)
    service = ProvisioningService.from_settings(Settings(url, base_url=sandbox.url, budget_url="off"), api_key=API_KEY)
    rows = [(sandbox.create_agent_directly(service.payload_for(p.spec())), p.id) for p in store.iter_personas()]
    service.client.close()
    store.engine.dispose()
    an_hour_ago = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 3600))
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.executemany(f"UPDATE personas SET elevenlabs_agent_id = ?, agent_created_at = '{an_hour_ago}', "
                       f"updated_at = '{an_hour_ago}' WHERE id = ?", rows)
    return an_hour_ago


def _upstream_changes(url: str, sandbox, n: int) -> dict[str, int]:
    """Delete 0.1% of the agents upstream; delete ORPHANS persona rows, leaving their agents orphaned."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        recorded = db.execute("SELECT id, elevenlabs_agent_id FROM personas ORDER BY id").fetchall()
        gone = recorded[::1000]
        for _pid, agent_id in gone:
            sandbox.delete_agent_directly(agent_id)
        orphaned = [pid for pid, _ in recorded[500::1000][:ORPHANS]]  # none of them among the gone
        db.executemany("DELETE FROM personas WHERE id = ?", [(pid,) for pid in orphaned])
    return {"deleted_upstream": len(gone), "orphaned": len(orphaned)}


def _listing_pass(url: str, sandbox, rate: float) -> dict[str, Any]:
    from persona_agents_pipeline.config import Settings
    from persona_agents_pipeline.detection import detect_gone_agents
    from persona_agents_pipeline.provisioning import ProvisioningService

    settings = Settings(url, base_url=sandbox.url, rate_limit=rate, max_concurrent=5)  # the shared budget, batch
    service = ProvisioningService.from_settings(settings, api_key=API_KEY)
    seen = len(sandbox.request_log())
    started = time.monotonic()
    # Python allocations during the pass: the listing's own memory (the in-process sandbox's pages are
    # freed once sent), unlike the process's peak, which holds the sandbox's 100,000 agents too.
    tracemalloc.start()
    with service.client:
        found = detect_gone_agents(service)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    seconds = time.monotonic() - started
    requests = sandbox.request_log()[seen:]
    return {
        "seconds": seconds, "requests": len(requests),
        "requests_by_status": dict(Counter(str(r.status) for r in requests)),
        "requests_per_s": len(requests) / seconds, "listed": found.listed, "gone": len(found.gone),
        "orphans": len(found.orphans), "present": len(found.present), "peak_rss_mb": peak_rss_mb_self(),
        "traced_peak_mb": traced_peak / 2**20,
    }


def _scheduled_run(url: str, sandbox, rate: float, keys: list[str]) -> dict[str, Any]:
    """The schedule's run as the daemon launches it, on a fresh instance with every partition registered."""
    import dagster as dg

    os.environ.update({"PERSONAS_DATABASE_URL": url, "ELEVENLABS_BASE_URL": sandbox.url, "ELEVENLABS_API_KEY": API_KEY,
                       "ELEVENLABS_RATE_LIMIT": str(rate), "ELEVENLABS_MAX_CONCURRENT": "5"})
    from persona_agents_pipeline.defs.detection import detect_gone_agents_schedule
    from persona_agents_pipeline.defs.partitions import personas_partitions
    from persona_agents_pipeline.in_process_runs import execute_run_request

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(personas_partitions.name, keys)
        [request] = detect_gone_agents_schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests
        seen = len(sandbox.request_log())
        started = time.monotonic()
        result = execute_run_request(instance, dg.RunRequest(job_name="detect_gone_agents", tags=request.tags))
        seconds = time.monotonic() - started
        [report] = result.asset_materializations_for_node("agent_status_report")
        check_events = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        return {"success": result.success, "seconds": seconds, "requests": len(sandbox.request_log()) - seen,
                "check_events": len(check_events), "report_gone": report.metadata["count_gone"].value,
                "report_orphans": report.metadata["count_orphaned_agents"].value}


def measure(n: int, rate: float, latency: float, work: Path) -> dict[str, Any]:
    from persona_agents_pipeline.sandbox import SandboxServer

    url = fresh_store(work / "detect.db")
    seed(url, n)
    # Other work on the machine skews timings; the load average says whether there was any.
    out: dict[str, Any] = {"agents": n, "rate_limit": rate, "latency_s": latency, "loadavg_before": os.getloadavg()}
    with SandboxServer() as sandbox:
        started = time.monotonic()
        _agents_for(url, sandbox, n)
        out["setup_seconds"] = time.monotonic() - started
        out["upstream"] = _upstream_changes(url, sandbox, n)
        sandbox.configure(latency=latency, rate_limit=rate, max_concurrent=5)
        log(f"detect: listing {n} agents at {rate:g} requests/s")
        out["listing"] = _listing_pass(url, sandbox, rate)
        log(f"detect: {out['listing']}")
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            keys = [str(pid) for (pid,) in db.execute("SELECT id FROM personas ORDER BY id")]
        out["dagster_run"] = _scheduled_run(url, sandbox, rate, keys)
        log(f"detect: {out['dagster_run']}")
    out["loadavg_after"] = os.getloadavg()
    return out


def markdown(out: dict[str, Any], info: dict[str, Any], when: str) -> str:
    listing, run, n = out["listing"], out["dagster_run"], out["agents"]
    return "\n".join([
        f"# Detecting agents deleted upstream ({when})", "",
        f"{n:,} personas with agents; sandbox at {out['rate_limit']:g} requests/s, {out['latency_s'] * 1000:.0f} ms per "
        f"answer; {out['upstream']['deleted_upstream']} agents deleted upstream, {out['upstream']['orphaned']} orphans.", "",
        "| measurement | value |", "|---|---|",
        f"| listing pass (service, shared budget, batch priority) | {listing['seconds']:.1f} s, {listing['requests']} requests "
        f"({listing['requests_per_s']:.2f}/s; by status {listing['requests_by_status']}) |",
        f"| found | {listing['gone']} gone, {listing['orphans']} orphans, {listing['present']} present of {listing['listed']} listed |",
        f"| memory allocated during the pass (peak, tracemalloc) | {listing['traced_peak_mb']:.0f} MB |",
        f"| peak memory of the process (with the in-process sandbox and the setup) | {listing['peak_rss_mb']:.0f} MB |",
        f"| scheduled Dagster run (listing + check events + report) | {run['seconds']:.1f} s, {run['requests']} requests, "
        f"{run['check_events']} check events, report: {run['report_gone']} gone, {run['report_orphans']} orphans, "
        f"success {run['success']} |",
        f"| per hour at the default hourly schedule | {listing['requests']} requests = "
        f"{listing['requests'] / 3600 / out['rate_limit']:.1%} of the limit over the hour |",
        "",
        "Pages are fetched one after another (each needs the previous page's cursor), so a listing takes at least "
        "pages x latency whatever the rate limit; the listing pass is timed with tracemalloc on, the Dagster run "
        "without it.", "",
        f"Load average (1, 5, 15 min) before {out['loadavg_before']}, after {out['loadavg_after']}.", "",
        f"Machine: {info['nproc']} cores ({info['cpu_model']}), Python {info['python']}, Dagster {info['dagster']}; "
        f"commit {info['git_head']}.", "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.detect", description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--rate-limit", type=float, default=10.0)
    parser.add_argument("--latency", type=float, default=0.150)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="persona-bench-detect-") as tmp:
        out = measure(args.agents, args.rate_limit, args.latency, Path(tmp))
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "detect.json", {"when": when, "machine": info, "results": out})
    (args.output / "detect.md").write_text(markdown(out, info, when))
    print(markdown(out, info, when))
    return 0


if __name__ == "__main__":
    sys.exit(main())
