"""Entry point: `python -m benchmarks.run [--quick] [--only NAME ...]` (`make bench` runs it in full).

Sections (names for --only): provisioning, rate429, sensor, status, bookkeeping, converge, scale
(benchmarks/scale.py).
Writes benchmarks/results/latest.json, latest.md and provisioning.png, and prints pass/short per target.
Traffic goes only to sandboxes on 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .common import (
    API_KEY,
    PYTHON,
    agent_accounting,
    child_env,
    create_times,
    fresh_store,
    machine,
    run_child,
    seed,
    throughput,
    write_json,
)
from .scale import scale, target_rows

RESULTS = Path(__file__).resolve().parent / "results"
CLI = str(Path(PYTHON).parent / "persona-agents")
SECTIONS = ("provisioning", "rate429", "sensor", "status", "bookkeeping", "converge", "scale")
VARIANT_LABELS = {
    "dagster": "Dagster backfill as shipped",
    "dagster_batch100": "Dagster backfill, 100 partitions per run",
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def worker(mode: str, out: Path, env: dict[str, str], *args: str, timeout: float = 1800) -> tuple[dict, dict]:
    child = run_child([PYTHON, "-m", "benchmarks.worker", mode, str(out), *args], env, timeout=timeout)
    if child["returncode"] != 0 or not out.exists():
        raise RuntimeError(f"worker {mode} failed ({child['returncode']}):\n{child['stderr_tail']}")
    return json.loads(out.read_text()), child


# ---- 1. bulk provisioning ---------------------------------------------------------------------------


def provisioning(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    from persona_agents_pipeline.sandbox import SandboxServer

    n, latency, rate, conc = cfg["personas"], cfg["latency_s"], cfg["rate_limit"], cfg["max_concurrent"]
    out: dict[str, Any] = {}
    limits = dict(latency=latency, rate_limit=rate, max_concurrent=conc)

    def base_env(url: str, sandbox_url: str = "") -> dict[str, str]:
        return child_env(
            PERSONAS_DATABASE_URL=url,
            ELEVENLABS_BASE_URL=sandbox_url,
            ELEVENLABS_API_KEY=API_KEY,
            ELEVENLABS_RATE_LIMIT=f"{rate:g}",
            ELEVENLABS_MAX_CONCURRENT=str(conc),
        )

    # (a) baseline, in its own process with its own sandbox. It is sleep-bound (about 1.5 requests/s), so
    # with --parallel-baseline it runs beside (b) and (c) instead of adding ~11 minutes to a full run.
    log(f"provisioning (a) original approach: {n} personas, sequential + 0.5 s sleep (~{n * 0.66:.0f} s)")
    url_a = fresh_store(work / "baseline.db")
    seed(url_a, n)
    baseline_box: dict[str, Any] = {}

    def run_baseline() -> None:
        try:
            baseline_box["data"], _ = worker("baseline", work / "baseline.json", base_env(url_a), str(latency), str(rate),
                                             str(conc), timeout=n * 2 + 120)
        except Exception as exc:  # reported below
            baseline_box["error"] = exc

    baseline_thread = threading.Thread(target=run_baseline, name="baseline")
    baseline_thread.start()
    if not cfg["parallel_baseline"]:
        baseline_thread.join()

    # (b) the real CLI
    log(f"provisioning (b) create-missing-agents: {n} personas")
    url = fresh_store(work / "cli.db")
    seed(url, n)
    with SandboxServer(**limits) as sandbox:
        child = run_child([CLI, "create-missing-agents", "--yes"], base_env(url, sandbox.url), timeout=n * 2 + 120)
        times = create_times(sandbox.request_log())
        stats, agents = sandbox.stats(), sandbox.agents()
    out["cli"] = {
        **throughput(times, child["started"], latency, n, rate),
        "process_wall_s": child["wall_s"],
        "returncode": child["returncode"],
        "peak_rss_mb": child["peak_rss_mb"],
        "rate_limited_429": stats["rate_limited"],
        "requests_total": stats["requests_total"],
        "max_requests_in_1s_window": stats["max_requests_in_1s_window"],
        "peak_concurrency": stats["peak_concurrency"],
        "accounting": agent_accounting(url, agents, n),
        "create_times": [t - child["started"] for t in times],
    }

    # (c) Dagster backfill on a real instance, as shipped and in variants that isolate the costs
    home_root = work / "dagster_homes"
    for name, extra in cfg["dagster_variants"].items():
        log(f"provisioning (c) Dagster backfill [{name}]: {n} partitions {extra}")
        url = fresh_store(work / f"dagster_{name}.db")
        seed(url, n)
        home = home_root / name
        home.mkdir(parents=True, exist_ok=True)
        with SandboxServer(**limits) as sandbox:
            env = base_env(url, sandbox.url) | {"DAGSTER_HOME": str(home)} | extra
            data, child = worker("dagster-backfill", work / f"dagster_{name}.json", env, timeout=n * 3 + 300)
            log_ = sandbox.request_log()
            times = create_times(log_)
            stats, agents = sandbox.stats(), sandbox.agents()
        runs = data["runs"]
        out[name] = {
            **throughput(times, data["launched"], latency, n, rate),
            "variant": extra,
            "from_process_start": throughput(times, child["started"], latency, n, rate)["agents_per_s"],
            "process_wall_s": child["wall_s"],
            "peak_rss_mb": child["peak_rss_mb"],
            "runs": len(runs),
            "runs_succeeded": sum(r["success"] for r in runs),
            "max_partitions_per_run": data["max_partitions_per_run"],
            "materialized_partitions": data["materialized_partitions"],
            "partitions_registered_s": data["partitions_registered_s"],
            "mean_run_s": statistics.mean(r["ended"] - r["started"] for r in runs) if runs else None,
            "api_requests_by_method": dict(Counter(r.method for r in log_)),
            "rate_limited_429": stats["rate_limited"],
            "requests_total": stats["requests_total"],
            "max_requests_in_1s_window": stats["max_requests_in_1s_window"],
            "peak_concurrency": stats["peak_concurrency"],
            "accounting": agent_accounting(url, agents, n),
            "create_times": [t - data["launched"] for t in times],
            "run_boundaries_s": [r["started"] - data["launched"] for r in runs],
        }

    baseline_thread.join()
    if "error" in baseline_box:
        raise baseline_box["error"]
    data = baseline_box["data"]
    out["original"] = {
        **throughput(data["create_times"], data["launched"], latency, n, rate),
        "ran_beside_other_measurements": cfg["parallel_baseline"],
        "rate_limited_429": data["stats"]["rate_limited"],
        "requests_total": data["stats"]["requests_total"],
        "accounting": agent_accounting(url_a, data["agents"], n),
        "create_times": [t - data["launched"] for t in data["create_times"]],
    }
    base = out["original"]["agents_per_s"]
    for name in ("cli", *cfg["dagster_variants"]):
        out[name]["ratio_to_original"] = out[name]["agents_per_s"] / base if base else None
    return out


def rate429(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """Sandbox limit slightly below the client's: 429s are injected; nothing lost or duplicated."""
    from persona_agents_pipeline.sandbox import SandboxServer

    n, latency, rate, conc = cfg["personas_429"], cfg["latency_s"], cfg["rate_limit"], cfg["max_concurrent"]
    server_rate = cfg["server_rate_429"]
    log(f"rate429: CLI at {rate:g}/s against a sandbox limited to {server_rate:g}/s, {n} personas")
    url = fresh_store(work / "r429.db")
    seed(url, n)
    with SandboxServer(latency=latency, rate_limit=server_rate, max_concurrent=conc) as sandbox:
        env = child_env(PERSONAS_DATABASE_URL=url, ELEVENLABS_BASE_URL=sandbox.url, ELEVENLABS_API_KEY=API_KEY,
                        ELEVENLABS_RATE_LIMIT=f"{rate:g}", ELEVENLABS_MAX_CONCURRENT=str(conc))
        child = run_child([CLI, "create-missing-agents", "--yes"], env, timeout=n * 3 + 120)
        log_ = sandbox.request_log()
        times = create_times(log_)
        stats, agents = sandbox.stats(), sandbox.agents()
    t429 = sorted(r.arrived for r in log_ if r.status == 429)
    result = {
        **throughput(times, child["started"], latency, n, server_rate),
        "client_rate_limit": rate,
        "server_rate_limit": server_rate,
        "returncode": child["returncode"],
        "rate_limited_429": stats["rate_limited"],
        "first_429_s": t429[0] - child["started"] if t429 else None,
        "last_429_s": t429[-1] - child["started"] if t429 else None,
        "accounting": agent_accounting(url, agents, n),
        "create_times": [t - child["started"] for t in times],
    }
    # Recovery: the creates after the last 429 (or the second half) run near the server's limit.
    if len(times) > 10:
        half = times[len(times) // 2 :]
        result["second_half_agents_per_s"] = (len(half) - 1) / (half[-1] - half[0])
        result["second_half_ratio_to_server_limit"] = result["second_half_agents_per_s"] / server_rate
    return result


# ---- 2. sensor tick cost ----------------------------------------------------------------------------


def sensor(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    import dagster as dg

    from persona_agents_pipeline.defs.partitions import personas_partitions
    from persona_agents_pipeline.defs.resources import PersonaStoreResource
    from persona_agents_pipeline.defs.sensors import new_personas_sensor
    from persona_agents_pipeline.store import PersonaStore

    repeats = cfg["sensor_repeats"]
    out: dict[str, Any] = {}

    def timed_ticks(instance, cursor: str, resources) -> tuple[list[float], Any]:
        samples, result = [], None
        for _ in range(repeats + 3):  # the first three evaluations warm caches; dropped
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            started = time.perf_counter()
            result = new_personas_sensor(context)
            samples.append(time.perf_counter() - started)
        return samples[3:], result

    for size in cfg["sensor_sizes"]:
        log(f"sensor: {size} personas, no new ones")
        url = fresh_store(work / f"sensor_{size}.db")
        seed(url, size)
        cursor = str(PersonaStore(url).latest_change_seq())
        resources = {"persona_store": PersonaStoreResource(database_url=url)}
        with tempfile.TemporaryDirectory(dir=work) as home:
            with dg.DagsterInstance.local_temp(tempdir=home) as instance:
                keys = [str(i) for i in range(1, size + 1)]
                started = time.perf_counter()
                for start in range(0, size, 10_000):
                    instance.add_dynamic_partitions(personas_partitions.name, keys[start : start + 10_000])
                register_s = time.perf_counter() - started
                samples, result = timed_ticks(instance, cursor, resources)
                entry = {
                    "personas": size,
                    "median_ms": statistics.median(samples) * 1000,
                    "p95_ms": sorted(samples)[int(0.95 * (len(samples) - 1))] * 1000,
                    "samples": len(samples),
                    "result": type(result).__name__,
                    "partitions_register_s": register_s,
                }
                out[f"no_new_{size}"] = entry
                if size == max(cfg["sensor_sizes"]):
                    log(f"sensor: {cfg['sensor_new']} new among {size}")
                    seed(url, cfg["sensor_new"], start=size)
                    samples, result = timed_ticks(instance, cursor, resources)
                    # Where the time goes: one has_dynamic_partition query per new key (what the sensor does)
                    # against one bulk membership query for all of them (a proposed change).
                    new_keys = [str(i) for i in range(size + 1, size + cfg["sensor_new"] + 1)]
                    started = time.perf_counter()
                    for key in new_keys:
                        instance.has_dynamic_partition(personas_partitions.name, key)
                    per_key_s = time.perf_counter() - started
                    started = time.perf_counter()
                    instance.get_existing_dynamic_partitions(personas_partitions.name, new_keys)
                    bulk_s = time.perf_counter() - started
                    out["membership_queries"] = {
                        "keys": len(new_keys),
                        "has_dynamic_partition_each_ms": per_key_s * 1000,
                        "get_existing_dynamic_partitions_once_ms": bulk_s * 1000,
                    }
                    out[f"new_{cfg['sensor_new']}_among_{size}"] = {
                        "personas": size + cfg["sensor_new"],
                        "median_ms": statistics.median(samples) * 1000,
                        "p95_ms": sorted(samples)[int(0.95 * (len(samples) - 1))] * 1000,
                        "samples": len(samples),
                        "run_requests": len(result.run_requests),
                        "new_partitions": sum(len(r.partition_keys) for r in result.dynamic_partitions_requests),
                    }
    small, large = min(cfg["sensor_sizes"]), max(cfg["sensor_sizes"])
    out["ratio_large_to_small"] = out[f"no_new_{large}"]["median_ms"] / out[f"no_new_{small}"]["median_ms"]
    return out


# ---- 3. status report -------------------------------------------------------------------------------


def status(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    size = cfg["status_personas"]
    log(f"status: list-agent-status and agent_status_report at {size} personas")
    url = fresh_store(work / "status.db")
    seed(url, size, with_agents_every=10)  # 90% with agents, 10% missing
    env = child_env(PERSONAS_DATABASE_URL=url)
    cli_runs = [run_child([CLI, "list-agent-status", "--format", "table"], env, timeout=120) for _ in range(cfg["status_repeats"])]
    for child in cli_runs:
        if child["returncode"] != 0:
            raise RuntimeError(f"list-agent-status failed: {child['stderr_tail']}")
    home = work / "status_home"
    home.mkdir(exist_ok=True)
    asset, _ = worker("status-asset", work / "status_asset.json", env | {"DAGSTER_HOME": str(home)}, "0", timeout=300)
    traced, _ = worker("status-asset", work / "status_asset_traced.json", env | {"DAGSTER_HOME": str(home)}, "1", timeout=600)
    return {
        "personas": size,
        "cli": {
            "wall_s": max(c["wall_s"] for c in cli_runs),
            "peak_rss_mb": max(c["peak_rss_mb"] for c in cli_runs),
            "runs": [{"wall_s": c["wall_s"], "peak_rss_mb": c["peak_rss_mb"]} for c in cli_runs],
        },
        "asset": {
            "seconds": asset["seconds"],
            "process_peak_rss_mb": asset["peak_rss_mb"],
            "rss_growth_mb": asset["peak_rss_mb"] - asset["rss_before_mb"],
            "tracemalloc_peak_mb": traced["tracemalloc_peak_mb"],
            "seconds_under_tracemalloc": traced["seconds"],
            "counts": asset["counts"],
            "success": asset["success"],
        },
    }


# ---- 4. Dagster bookkeeping -------------------------------------------------------------------------


def bookkeeping(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    from persona_agents_pipeline.sandbox import SandboxServer

    out: dict[str, Any] = {"sizes": {}}
    for size in cfg["bookkeeping_sizes"]:
        row = {}
        for mode in ("provision-plain", "provision-dagster"):
            log(f"bookkeeping: {mode}, {size} partitions, sandbox latency 0 and no limits")
            url = fresh_store(work / f"bk_{mode}_{size}.db")
            seed(url, size)
            home = work / f"bk_home_{mode}_{size}"
            home.mkdir(exist_ok=True)
            with SandboxServer() as sandbox:
                # Unthrottled: no ELEVENLABS_RATE_LIMIT (see scale.py: a huge stand-in limit costs a huge window).
                env = child_env(PERSONAS_DATABASE_URL=url, ELEVENLABS_BASE_URL=sandbox.url, ELEVENLABS_API_KEY=API_KEY,
                                ELEVENLABS_MAX_CONCURRENT=str(cfg["max_concurrent"]),
                                DAGSTER_HOME=str(home))
                data, _ = worker(mode, work / f"bk_{mode}_{size}.json", env, timeout=900)
                data["agents"] = len(sandbox.agents())
            row[mode] = data
        plain, dagster = row["provision-plain"]["seconds"], row["provision-dagster"]["seconds"]
        row["overhead_s"] = dagster - plain
        row["overhead_ms_per_partition"] = (dagster - plain) / size * 1000
        out["sizes"][str(size)] = row
    sizes = sorted(cfg["bookkeeping_sizes"])
    if len(sizes) > 1:
        lo, hi = out["sizes"][str(sizes[0])], out["sizes"][str(sizes[-1])]
        out["marginal_ms_per_partition"] = (hi["overhead_s"] - lo["overhead_s"]) / (sizes[-1] - sizes[0]) * 1000
        out["fixed_run_overhead_s"] = lo["overhead_s"] - out["marginal_ms_per_partition"] / 1000 * sizes[0]
    return out


# ---- report -----------------------------------------------------------------------------------------


# ---- 5. the cost of converging existing personas ----------------------------------------------------


def converge(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """What a Materialize (mode converge) of personas that already have agents costs, against ensure (which
    trusts the database): one GET each, plus a replace for each agent deleted upstream."""
    from persona_agents_pipeline.elevenlabs.client import ElevenLabsClient
    from persona_agents_pipeline.elevenlabs.rate_limit import RequestLimiter
    from persona_agents_pipeline.provisioning import ProvisioningService
    from persona_agents_pipeline.sandbox import SandboxServer
    from persona_agents_pipeline.store import PersonaStore
    from persona_agents_pipeline.voice_policy import DEFAULT_VOICE_CATALOGUE

    n, rate, conc = cfg["converge_personas"], cfg["rate_limit"], cfg["max_concurrent"]
    log(f"converge: {n} personas with agents, then ensure / converge / converge with 10% deleted upstream")
    url = fresh_store(work / "converge.db")
    seed(url, n)
    store = PersonaStore(url)
    out: dict[str, Any] = {"personas": n}
    with SandboxServer() as sandbox:  # created without limits; the measured passes run under them
        with ElevenLabsClient(API_KEY, sandbox.url, limiter=RequestLimiter(1000, 16)) as client:
            ProvisioningService(store, client, DEFAULT_VOICE_CATALOGUE).provision_many(store.ids_without_agents(), concurrency=16)
        sandbox.configure(latency=cfg["latency_s"], rate_limit=rate, max_concurrent=conc)
        ids = [persona.id for persona in store.with_agents()]
        with ElevenLabsClient(API_KEY, sandbox.url, limiter=RequestLimiter(rate, conc)) as client:
            service = ProvisioningService(store, client, DEFAULT_VOICE_CATALOGUE, replace_lost_agents=True)

            def timed(name: str, operation=None) -> None:
                seen = len(sandbox.request_log())
                started = time.monotonic()
                results = service.provision_many(ids, concurrency=conc, operation=operation)
                seconds = time.monotonic() - started
                methods = Counter(record.method for record in sandbox.request_log()[seen:])
                out[name] = {"seconds": seconds, "personas_per_s": n / seconds, "requests_by_method": dict(methods),
                             "outcomes": dict(Counter(result.outcome.value for result in results))}

            timed("ensure")
            timed("converge", service.converge_agent)
            for agent_id in [store.get(pid).elevenlabs_agent_id for pid in ids[:: 10]]:
                sandbox.delete_agent_directly(agent_id)
            timed("converge_10pct_gone", service.converge_agent)
        out["accounting"] = agent_accounting(url, sandbox.agents(), n)
    store.engine.dispose()
    out["converge"]["ratio_to_rate_limit"] = out["converge"]["personas_per_s"] / rate
    return out


def targets(results: dict[str, Any], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, value: Any, shown: str, target: str, ok: bool | None) -> None:
        rows.append({"measurement": name, "value": value, "shown": shown, "target": target,
                     "verdict": "-" if ok is None else ("pass" if ok else "short")})

    rate = cfg["rate_limit"]
    p = results.get("provisioning")
    if p:
        n = cfg["personas"]
        o, c, d = p["original"], p["cli"], p["dagster"]
        add(f"original approach, {n} personas", o["agents_per_s"],
            f"{o['agents_per_s']:.2f} agents/s ({o['ratio_to_rate_limit']:.0%} of limit), {o['seconds']:.0f} s", "(baseline)", None)
        add("create-missing-agents throughput", c["ratio_to_rate_limit"],
            f"{c['agents_per_s']:.2f} agents/s = {c['ratio_to_rate_limit']:.1%} of {rate:g}/s ({c['seconds']:.1f} s)",
            ">= 90% of rate limit", c["ratio_to_rate_limit"] >= 0.90)
        add(f"{VARIANT_LABELS['dagster']}: throughput", d["ratio_to_rate_limit"],
            f"{d['agents_per_s']:.2f} agents/s = {d['ratio_to_rate_limit']:.1%} of {rate:g}/s ({d['seconds']:.1f} s, {d['runs']} runs)",
            ">= 80% of rate limit", d["ratio_to_rate_limit"] >= 0.80)
        for name in cfg["dagster_variants"]:
            if name == "dagster":
                continue
            v = p[name]
            add(VARIANT_LABELS.get(name, name), v["ratio_to_rate_limit"],
                f"{v['agents_per_s']:.2f} agents/s = {v['ratio_to_rate_limit']:.1%} ({v['seconds']:.1f} s, {v['runs']} runs, "
                f"{v['rate_limited_429']} x 429, exactly once: {v['accounting']['exactly_one_each']})", "(diagnostic)", None)
        add("CLI vs original", c["ratio_to_original"], f"{c['ratio_to_original']:.1f}x", ">= 5x", c["ratio_to_original"] >= 5)
        add("Dagster vs original", d["ratio_to_original"], f"{d['ratio_to_original']:.1f}x", ">= 5x", d["ratio_to_original"] >= 5)
        for key, label in (("original", "original"), ("cli", "CLI"), ("dagster", "Dagster")):
            acc = p[key]["accounting"]
            add(f"{label}: exactly one agent per persona, 429s", acc["exactly_one_each"],
                f"{acc['remote_agents']} agents / {acc['personas']} personas, {p[key]['rate_limited_429']} x 429",
                "exactly one, 0 x 429", acc["exactly_one_each"] and p[key]["rate_limited_429"] == 0)
    r = results.get("rate429")
    if r:
        acc = r["accounting"]
        recovered = (r.get("second_half_ratio_to_server_limit") or 0) >= 0.8
        add(f"injected 429s (server {r['server_rate_limit']:g}/s < client {r['client_rate_limit']:g}/s)", acc["exactly_one_each"],
            f"{r['rate_limited_429']} x 429; {acc['remote_agents']} agents / {acc['personas']} personas, "
            f"{acc['personas_with_duplicate_agents']} duplicated, {acc['personas_without_remote_agent']} lost",
            "none lost or duplicated", acc["exactly_one_each"] and r["returncode"] == 0)
        add("throughput under 429s (second half)", r.get("second_half_ratio_to_server_limit"),
            f"{r.get('second_half_agents_per_s', 0):.2f} agents/s = {r.get('second_half_ratio_to_server_limit', 0):.0%} of server limit; "
            f"overall {r['agents_per_s']:.2f}/s", "recovers (>= 80% of server limit)", recovered)
    s = results.get("sensor")
    if s:
        sizes = cfg["sensor_sizes"]
        for size in sizes:
            e = s[f"no_new_{size}"]
            add(f"sensor tick, no new personas, {size:,} in store", e["median_ms"], f"{e['median_ms']:.1f} ms (p95 {e['p95_ms']:.1f})", "", None)
        key = f"new_{cfg['sensor_new']}_among_{max(sizes)}"
        e = s[key]
        add(f"sensor tick, {cfg['sensor_new']} new among {max(sizes):,}", e["median_ms"],
            f"{e['median_ms']:.1f} ms (p95 {e['p95_ms']:.1f}); {e['new_partitions']} partitions, {e['run_requests']} run(s)", "", None)
        if "membership_queries" in s:
            m = s["membership_queries"]
            add(f"of which: partition membership for {m['keys']} new keys", m["has_dynamic_partition_each_ms"],
                f"{m['has_dynamic_partition_each_ms']:.0f} ms as {m['keys']} has_dynamic_partition calls; "
                f"{m['get_existing_dynamic_partitions_once_ms']:.1f} ms as one get_existing_dynamic_partitions", "(diagnostic)", None)
        add(f"sensor tick cost {max(sizes):,} vs {min(sizes):,}", s["ratio_large_to_small"], f"{s['ratio_large_to_small']:.2f}x", "<= 2x",
            s["ratio_large_to_small"] <= 2)
    st = results.get("status")
    if st:
        cli = st["cli"]
        add(f"list-agent-status, {st['personas']:,} personas: time", cli["wall_s"], f"{cli['wall_s']:.2f} s", "< 5 s", cli["wall_s"] < 5)
        add(f"list-agent-status, {st['personas']:,} personas: peak RSS", cli["peak_rss_mb"], f"{cli['peak_rss_mb']:.0f} MB", "< 400 MB",
            cli["peak_rss_mb"] < 400)
        a = st["asset"]
        add(f"agent_status_report asset, {st['personas']:,} personas", a["seconds"],
            f"{a['seconds']:.2f} s; process peak RSS {a['process_peak_rss_mb']:.0f} MB (+{a['rss_growth_mb']:.0f} MB), "
            f"tracemalloc peak {a['tracemalloc_peak_mb']:.1f} MB", "", None)
    b = results.get("bookkeeping")
    if b:
        for size, row in b["sizes"].items():
            add(f"Dagster bookkeeping, one run of {size} partitions", row["overhead_ms_per_partition"],
                f"{row['provision-dagster']['seconds']:.2f} s vs {row['provision-plain']['seconds']:.2f} s without Dagster: "
                f"{row['overhead_ms_per_partition']:.1f} ms/partition", "", None)
        if "marginal_ms_per_partition" in b:
            add("Dagster bookkeeping, marginal cost", b["marginal_ms_per_partition"],
                f"{b['marginal_ms_per_partition']:.1f} ms/partition + {b['fixed_run_overhead_s']:.2f} s per run", "", None)
    cv = results.get("converge")
    if cv:
        c, g = cv["converge"], cv["converge_10pct_gone"]
        add(f"converging {cv['personas']} existing personas (Materialize, mode converge)", c["seconds"],
            f"{c['seconds']:.1f} s = {c['personas_per_s']:.2f}/s ({c['ratio_to_rate_limit']:.0%} of the limit; "
            f"{c['requests_by_method'].get('GET', 0) / cv['personas']:.2f} GET each) vs ensure {cv['ensure']['seconds']:.2f} s, no request",
            "(cost reported)", None)
        add("converge with 10% deleted upstream", g["seconds"],
            f"{g['seconds']:.1f} s, outcomes {g['outcomes']}, exactly one each: {cv['accounting']['exactly_one_each']}",
            "replaced, none duplicated", cv["accounting"]["exactly_one_each"])
    target_rows(results, add)
    return rows


def markdown(rows: list[dict[str, Any]], cfg: dict[str, Any], info: dict[str, Any], when: str, rerun: dict[str, str]) -> str:
    lines = [
        f"# Benchmark results ({'quick' if cfg['quick'] else 'full'} run, {when})",
        "",
        f"Sandbox: {cfg['latency_s'] * 1000:.0f} ms/request, {cfg['rate_limit']:g} requests/s, {cfg['max_concurrent']} concurrent; "
        f"client configured with the same limits. Provisioning: {cfg['personas']} personas per approach.",
        "",
        "| measurement | value | target | verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['measurement']} | {r['shown']} | {r['target'] or '-'} | {r['verdict']} |" for r in rows]
    lines += [
        "",
        f"Machine: {info['nproc']} cores ({info['cpu_model']}), Python {info['python']}, Dagster {info['dagster']}, "
        f"SQLite {info['sqlite']}, {info['platform']}.",
        "",
        "```",
        info["free_h"],
        "```",
        "",
        "Plot: `benchmarks/results/provisioning.png`.",
        "",
        f"Code at the time of writing this file: commit {info.get('git_head')}"
        + (f" plus uncommitted changes in {', '.join(info['git_uncommitted'])}" if info.get("git_uncommitted") else "") + ".",
        "",
    ]
    if rerun:
        lines += [", ".join(f"`{name}` re-measured {at}" for name, at in rerun.items()) + ".", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], cfg: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = results["provisioning"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    series = [("original", "original (sequential + 0.5 s sleep)", "tab:gray"),
              ("cli", "create-missing-agents", "tab:blue"),
              ("dagster", f"{VARIANT_LABELS['dagster']} ({p['dagster']['runs']} runs)", "tab:orange")]
    extra_colors = iter(["tab:green", "tab:purple", "tab:brown"])
    for name in cfg["dagster_variants"]:
        if name != "dagster":
            series.append((name, f"{VARIANT_LABELS.get(name, name)} ({p[name]['runs']} runs)",
                           next(extra_colors)))
    if "rate429" in results:
        series.append(("rate429", f"CLI vs sandbox at {cfg['server_rate_429']:g}/s (429s)", "tab:red"))
    for ax, zoom in zip(axes, (False, True)):
        horizon = 0.0
        for key, label, color in series:
            data = results["rate429"] if key == "rate429" else p[key]
            times = data["create_times"]
            if not times:
                continue
            ax.step(times, range(1, len(times) + 1), where="post", label=label, color=color)
            if key != "original":
                horizon = max(horizon, times[-1])
        right = horizon * 1.15 if zoom else max(horizon, p["original"]["create_times"][-1]) * 1.02
        ax.plot([0, right], [0, cfg["rate_limit"] * right], "k--", linewidth=1, label=f"rate limit ({cfg['rate_limit']:g}/s)")
        if "rate429" in results:
            ax.plot([0, right], [0, cfg["server_rate_429"] * right], "r:", linewidth=1,
                    label=f"sandbox limit in the 429 run ({cfg['server_rate_429']:g}/s)")
        ax.set_xlim(0, right)
        ax.set_ylim(0, cfg["personas"] * 1.05)
        ax.set_xlabel("seconds since launch")
        ax.set_ylabel("agents created")
        ax.set_title("zoom on the fast approaches" if zoom else "all approaches")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Agents created over time: {cfg['personas']} personas, sandbox {cfg['latency_s'] * 1000:.0f} ms, "
                 f"{cfg['rate_limit']:g} req/s, {cfg['max_concurrent']} concurrent")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 personas per provisioning approach; smaller repeats")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    parser.add_argument("--personas", type=int, default=None, help="override the provisioning size")
    parser.add_argument("--latency", type=float, default=0.150)
    parser.add_argument("--rate-limit", type=float, default=10.0)
    parser.add_argument("--max-concurrent", type=int, default=5)
    parser.add_argument("--parallel-baseline", action="store_true",
                        help="run the sleep-bound original approach beside the other provisioning runs (saves ~11 min)")
    parser.add_argument("--merge", action="store_true",
                        help="with --only: replace just those sections in the existing latest.json")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    cfg = {
        "quick": args.quick,
        "personas": args.personas or (200 if args.quick else 1000),
        "latency_s": args.latency,
        "rate_limit": args.rate_limit,
        "max_concurrent": args.max_concurrent,
        "personas_429": 200 if args.quick else 300,
        "server_rate_429": max(1.0, args.rate_limit - 1),
        "sensor_sizes": [1_000, 10_000, 100_000],
        "sensor_new": 100,
        "sensor_repeats": 10 if args.quick else 30,
        "status_personas": 100_000,
        "status_repeats": 2 if args.quick else 3,
        "bookkeeping_sizes": [100, 500] if args.quick else [100, 1000],
        "converge_personas": 200 if args.quick else 500,
        "scale_sizes": [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000],
        "scale_repeats": 1 if args.quick else 3,
        "scale_tick_new": 2_000 if args.quick else 20_000,
        "scale_backfill": 200 if args.quick else 1000,
        "parallel_baseline": args.parallel_baseline,
        # "dagster" is the layer as shipped (RUN_BATCH_SIZE partitions per run, checks left to the
        # verify_agents schedule); the variant shows what smaller runs cost.
        "dagster_variants": {
            "dagster": {},
            "dagster_batch100": {"PERSONA_AGENTS_RUN_BATCH_SIZE": "100"},
        },
    }
    sections = args.only or list(SECTIONS)
    if "rate429" in sections and "provisioning" not in sections:
        pass
    info = machine()
    results: dict[str, Any] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="persona-bench-") as tmp:
        work = Path(tmp)
        for name in SECTIONS:
            if name in sections:
                section_start = time.monotonic()
                load_before = os.getloadavg()
                results[name] = globals()[name](cfg, work)
                results[name]["section_seconds"] = time.monotonic() - section_start
                # Other work on the machine skews timings; the load average says whether there was any.
                results[name]["loadavg_before_after"] = [load_before, os.getloadavg()]
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rerun: dict[str, str] = {}
    if args.merge and (args.output / "latest.json").exists():
        # Re-measure some sections and keep the others from the previous run (same mode only).
        previous = json.loads((args.output / "latest.json").read_text())
        if previous["config"].get("quick") != cfg["quick"]:
            raise SystemExit("--merge: the previous results were measured in the other mode (--quick or not)")
        rerun = dict(previous.get("sections_rerun") or {})
        for name in results:
            rerun[name] = when
        results = {**previous["results"], **results}
        when = previous["when"]
    rows = targets(results, cfg)
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "latest.json", {"when": when, "sections_rerun": rerun, "config": cfg, "machine": info, "targets": rows,
                                             "results": results, "total_seconds": time.monotonic() - started})
    (args.output / "latest.md").write_text(markdown(rows, cfg, info, when, rerun))
    if "provisioning" in results:
        plot(results, cfg, args.output / "provisioning.png")
    print()
    for row in rows:
        print(f"{row['verdict']:>5}  {row['measurement']}: {row['shown']}" + (f"  [target {row['target']}]" if row["target"] else ""))
    print(f"\nwrote {args.output / 'latest.json'}, latest.md" + (", provisioning.png" if "provisioning" in results else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
