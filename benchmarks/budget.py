"""The shared API budget: `python -m benchmarks.budget [--quick]` (part of `make bench`).

Against a sandbox that allows N requests in flight (taking LATENCY each, so the account's limit is N / LATENCY
requests per second) and announces N in its headers (or only in GET /v1/user):

* out of the box (no limits configured): create-missing-agents' share of the limit;
* aggregate throughput of 1 and 2 provisioning processes sharing the budget, and their 429s;
* two processes each configured with the whole limit and the budget switched off: their 429s;
* ensure_agent latency (p95) on an idle account and during a backfill at the account's limit.

Writes benchmarks/results/budget.json and budget.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import API_KEY, PYTHON, machine, write_json

RESULTS = Path(__file__).resolve().parent / "results"
CREATE = "/v1/convai/agents/create"
BATCH = """
import sys
from persona_agents_pipeline.config import Settings
from persona_agents_pipeline.provisioning import ProvisioningService
service = ProvisioningService.from_settings(Settings.from_env())
service.provision_many([int(arg) for arg in sys.argv[1:]], concurrency=Settings.from_env().worker_threads)
"""


def _env(database_url: str, sandbox_url: str, **extra: Any) -> dict[str, str]:
    return {**os.environ, "PERSONAS_DATABASE_URL": database_url, "ELEVENLABS_BASE_URL": sandbox_url,
            "ELEVENLABS_API_KEY": API_KEY, "PERSONA_AGENTS_CREDENTIALS_FILE": "/nonexistent",
            **{key: str(value) for key, value in extra.items()}}


def _store(work: Path, name: str, personas: int):
    from persona_agents_pipeline.demo_data import demo_personas
    from persona_agents_pipeline.store import PersonaStore

    store = PersonaStore(f"sqlite:///{work / name}.db")
    store.upgrade()
    return store, store.add_personas(demo_personas(personas, seed=5))


def _load(sandbox, cfg: dict) -> dict[str, Any]:
    """Creates per second between the first and the last create, as a share of N / latency; and 429s."""
    log = sandbox.request_log()
    creates = sorted(record.arrived for record in log if record.path == CREATE and record.status == 200)
    limit = cfg["in_flight"] / cfg["latency"]
    per_second = (len(creates) - 1) / (creates[-1] - creates[0]) if len(creates) > 1 else 0.0
    stats = sandbox.stats()
    return {"creates": len(creates), "creates_per_s": per_second, "ratio_to_limit": per_second / limit,
            "requests": stats["requests_total"], "429": stats["rate_limited"],
            "share_429": stats["rate_limited"] / max(1, stats["requests_total"]),
            "peak_attempted_in_flight": stats["peak_attempted_concurrency"]}


def _sandbox(cfg: dict, announce: str):
    from persona_agents_pipeline.sandbox import SandboxServer

    return SandboxServer(max_concurrent=cfg["in_flight"], latency=cfg["latency"], announce_limit=announce)


def out_of_the_box(cfg: dict, work: Path, announce: str) -> dict[str, Any]:
    store, _ = _store(work, f"oob-{announce}", cfg["personas"])
    with _sandbox(cfg, announce) as sandbox:
        subprocess.run([PYTHON, "-m", "persona_agents_pipeline.cli", "create-missing-agents", "--yes"],
                       env=_env(store.database_url, sandbox.url), check=True, capture_output=True, timeout=1800)
        return _load(sandbox, cfg)


def processes(cfg: dict, work: Path, count: int, **env: Any) -> dict[str, Any]:
    store, ids = _store(work, f"processes-{count}-{'off' if env else 'shared'}", cfg["personas"])
    with _sandbox(cfg, "header") as sandbox:
        halves = [ids[start::count] for start in range(count)]
        children = [subprocess.Popen([PYTHON, "-c", BATCH, *map(str, half)], env=_env(store.database_url, sandbox.url, **env))
                    for half in halves]
        for child in children:
            child.wait(timeout=1800)
        return _load(sandbox, cfg)


def _ensure_latencies(store_url: str, sandbox_url: str, ids: list[int]) -> list[float]:
    code = ("import sys, time, json\nfrom persona_agents_pipeline import python_api\nout = []\n"
            "for persona_id in sys.argv[1:]:\n    started = time.perf_counter()\n    python_api.ensure_agent(int(persona_id))\n"
            "    out.append(time.perf_counter() - started)\n    time.sleep(0.2)\nprint(json.dumps(out))")
    result = subprocess.run([PYTHON, "-c", code, *map(str, ids)], env=_env(store_url, sandbox_url),
                            capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(result.stdout)[1:]  # the first call also discovers the limits


def interactive_latency(cfg: dict, work: Path) -> dict[str, Any]:
    store, ids = _store(work, "interactive", cfg["personas"] + 2 * cfg["samples"])
    backfill, idle_ids, busy_ids = ids[:cfg["personas"]], ids[cfg["personas"]:-cfg["samples"]], ids[-cfg["samples"]:]
    with _sandbox(cfg, "header") as sandbox:
        idle = _ensure_latencies(store.database_url, sandbox.url, idle_ids)
        cli = subprocess.Popen([PYTHON, "-c", BATCH, *map(str, backfill)], env=_env(store.database_url, sandbox.url))
        # Measure once the backfill is in its stride: two full waves of the account's slots done.
        while sandbox.stats()["agents"] < len(idle_ids) + 2 * cfg["in_flight"]:
            assert cli.poll() is None, "the backfill ended before it reached the account's limit"
            time.sleep(0.1)
        started = time.monotonic()
        busy = _ensure_latencies(store.database_url, sandbox.url, busy_ids)
        ended = time.monotonic()
        load = os.getloadavg()[0]
        still_running = cli.poll() is None
        cli.wait(timeout=1800)
        creates = [r.arrived for r in sandbox.request_log() if r.path == CREATE and r.status == 200 and started <= r.arrived <= ended]
    p95 = lambda values: statistics.quantiles(values, n=20)[-1]
    return {"idle_p95_s": p95(idle), "busy_p95_s": p95(busy), "ratio": p95(busy) / p95(idle),
            "idle_median_s": statistics.median(idle), "busy_median_s": statistics.median(busy),
            "backfill_personas": len(backfill), "loadavg_1min_while_measured": load, "backfill_still_running_at_the_end": still_running,
            # The backfill's own creates while ensure_agent was measured (the interactive ones left out).
            "backfill_share_of_limit_while_measured": (len(creates) - len(busy_ids)) / ((ended - started) * cfg["in_flight"] / cfg["latency"])}


def markdown(results: dict[str, Any], cfg: dict, info: dict) -> str:
    limit = cfg["in_flight"] / cfg["latency"]
    rows = [
        ("out of the box, limit announced in the header", results["oob_header"], ">= 90%"),
        ("out of the box, limit only in GET /v1/user", results["oob_user"], ">= 90%"),
        ("1 process, shared budget", results["one"], ">= 85%"),
        ("2 processes, shared budget (aggregate)", results["two"], ">= 85%, 429s < 1%"),
        ("2 processes, budget off, each with the whole limit", results["two_off"], "(comparison)"),
    ]
    lines = [f"# Shared API budget ({'quick' if cfg['quick'] else 'full'} run, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
             "", f"Sandbox: {cfg['in_flight']} requests in flight, {cfg['latency'] * 1000:.0f} ms each, so the account's limit "
             f"is {limit:g} requests/s; {cfg['personas']} personas per measurement. Nothing configured on the clients "
             "(limits discovered) unless said.", "",
             "| measurement | creates/s | share of limit | 429s | peak in flight | target |", "|---|---|---|---|---|---|"]
    for name, row, target in rows:
        lines.append(f"| {name} | {row['creates_per_s']:.1f} | {row['ratio_to_limit']:.1%} | "
                     f"{row['429']} of {row['requests']} ({row['share_429']:.1%}) | {row['peak_attempted_in_flight']} | {target} |")
    latency = results["interactive"]
    lines += ["", f"ensure_agent for a persona without an agent: p95 {latency['idle_p95_s'] * 1000:.0f} ms idle, "
              f"{latency['busy_p95_s'] * 1000:.0f} ms during a {latency['backfill_personas']:,}-persona backfill at the limit "
              f"(the backfill ran at {latency['backfill_share_of_limit_while_measured']:.0%} of the limit meanwhile): "
              f"**{latency['ratio']:.2f}x** (target <= 2x).",
              "", f"Machine: {info['nproc']} cores, Python {info['python']}, commit {info['git_head']}"
              f"{', load average ' + info['loadavg'] if info.get('loadavg') else ''}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    cfg = {"quick": args.quick, "in_flight": 10, "latency": 0.5, "personas": 200 if args.quick else 1000,
           "samples": 10 if args.quick else 20}
    with tempfile.TemporaryDirectory(prefix="persona-budget-") as tmp:
        work = Path(tmp)
        results = {
            "oob_header": out_of_the_box(cfg, work, "header"),
            "oob_user": out_of_the_box(cfg, work, "user"),
            "one": processes(cfg, work, 1),
            "two": processes(cfg, work, 2),
            "two_off": processes(cfg, work, 2, PERSONA_AGENTS_BUDGET_URL="off", ELEVENLABS_MAX_CONCURRENT=cfg["in_flight"]),
            "interactive": interactive_latency(cfg, work),
        }
    # The machine may be shared: the load while measuring says how much to trust the latencies.
    info = {**machine(), "loadavg": " / ".join(f"{load:.1f}" for load in os.getloadavg())}
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "budget.json", {"config": cfg, "machine": info, "results": results})
    (RESULTS / "budget.md").write_text(markdown(results, cfg, info))
    print((RESULTS / "budget.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
