"""Sections `provisioning` (1,000 personas by the original approach, the CLI and Dagster backfills) and
`rate429` (the CLI against a sandbox whose limit is below the client's), with their rows and the plot."""

from __future__ import annotations

import statistics
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    CLI,
    AddRow,
    agent_accounting,
    create_times,
    fresh_store,
    log,
    run_child,
    run_worker,
    sandbox_env,
    seed,
    throughput,
)

VARIANT_LABELS = {
    "dagster": "Dagster backfill as shipped",
    "dagster_batch100": "Dagster backfill, 100 partitions per run",
}


def _limits(cfg: dict[str, Any]) -> tuple[int, float, float, int]:
    return cfg["personas"], cfg["latency_s"], cfg["rate_limit"], cfg["max_concurrent"]


def _sandbox_figures(stats: dict[str, Any], database_url: str, agents: list[dict[str, Any]], n: int) -> dict[str, Any]:
    return {
        "rate_limited_429": stats["rate_limited"],
        "requests_total": stats["requests_total"],
        "max_requests_in_1s_window": stats["max_requests_in_1s_window"],
        "peak_concurrency": stats["peak_concurrency"],
        "accounting": agent_accounting(database_url, agents, n),
    }


def measure(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """(a) the original approach, (b) the CLI, (c) Dagster backfills; each against its own sandbox."""
    n = cfg["personas"]
    # (a) is sleep-bound (about 1.5 requests/s), so with --parallel-baseline it runs beside (b) and (c)
    # instead of adding ~11 minutes to a full run.
    original = _OriginalApproach(cfg, work)
    original.start()
    if not cfg["parallel_baseline"]:
        original.join()
    out: dict[str, Any] = {"cli": _cli(cfg, work)}
    for name, extra in cfg["dagster_variants"].items():
        out[name] = _dagster_backfill(cfg, work, name, extra)
    out["original"] = original.result()
    base = out["original"]["agents_per_s"]
    for name in ("cli", *cfg["dagster_variants"]):
        out[name]["ratio_to_original"] = out[name]["agents_per_s"] / base if base else None
    return out


class _OriginalApproach(threading.Thread):
    """(a) in its own process with its own sandbox, so that it can run beside the other measurements."""

    def __init__(self, cfg: dict[str, Any], work: Path) -> None:
        super().__init__(name="baseline")
        self.cfg, self.work = cfg, work
        n, latency, rate, conc = _limits(cfg)
        log(f"provisioning (a) original approach: {n} personas, sequential + 0.5 s sleep (~{n * 0.66:.0f} s)")
        self.database_url = fresh_store(work / "baseline.db")
        seed(self.database_url, n)
        self._data: dict[str, Any] | None = None
        self._error: Exception | None = None

    def run(self) -> None:
        n, latency, rate, conc = _limits(self.cfg)
        try:
            self._data, _ = run_worker("baseline", self.work / "baseline.json", sandbox_env(self.database_url, "", rate, conc),
                                       str(latency), str(rate), str(conc), timeout=n * 2 + 120)
        except Exception as exc:  # raised in result(), on the measuring thread
            self._error = exc

    def result(self) -> dict[str, Any]:
        self.join()
        if self._error is not None:
            raise self._error
        data, (n, latency, rate, _) = self._data, _limits(self.cfg)
        return {
            **throughput(data["create_times"], data["launched"], latency, n, rate),
            "ran_beside_other_measurements": self.cfg["parallel_baseline"],
            "rate_limited_429": data["stats"]["rate_limited"],
            "requests_total": data["stats"]["requests_total"],
            "accounting": agent_accounting(self.database_url, data["agents"], n),
            "create_times": [t - data["launched"] for t in data["create_times"]],
        }


@dataclass
class _CliRun:
    database_url: str
    child: dict[str, Any]  # run_child's figures
    request_log: list[Any]
    stats: dict[str, Any]
    agents: list[dict[str, Any]]


def _run_cli(work: Path, name: str, n: int, client_rate: float, conc: int, timeout: float, **sandbox_limits: Any) -> _CliRun:
    """`create-missing-agents --yes` for n new personas, against a sandbox of its own with these limits."""
    from persona_agents_pipeline.sandbox import SandboxServer

    url = fresh_store(work / f"{name}.db")
    seed(url, n)
    with SandboxServer(**sandbox_limits) as sandbox:
        child = run_child([CLI, "create-missing-agents", "--yes"], sandbox_env(url, sandbox.url, client_rate, conc),
                          timeout=timeout)
        return _CliRun(url, child, sandbox.request_log(), sandbox.stats(), sandbox.agents())


def _cli(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """(b) the real CLI."""
    n, latency, rate, conc = _limits(cfg)
    log(f"provisioning (b) create-missing-agents: {n} personas")
    run = _run_cli(work, "cli", n, rate, conc, n * 2 + 120, latency=latency, rate_limit=rate, max_concurrent=conc)
    times, started = create_times(run.request_log), run.child["started"]
    return {
        **throughput(times, started, latency, n, rate),
        "process_wall_s": run.child["wall_s"],
        "returncode": run.child["returncode"],
        "peak_rss_mb": run.child["peak_rss_mb"],
        **_sandbox_figures(run.stats, run.database_url, run.agents, n),
        "create_times": [t - started for t in times],
    }


def _dagster_backfill(cfg: dict[str, Any], work: Path, name: str, extra: dict[str, str]) -> dict[str, Any]:
    """(c) a Dagster backfill on a real instance, as shipped or in a variant that isolates a cost."""
    from persona_agents_pipeline.sandbox import SandboxServer

    n, latency, rate, conc = _limits(cfg)
    log(f"provisioning (c) Dagster backfill [{name}]: {n} partitions {extra}")
    url = fresh_store(work / f"dagster_{name}.db")
    seed(url, n)
    home = work / "dagster_homes" / name
    home.mkdir(parents=True, exist_ok=True)
    with SandboxServer(latency=latency, rate_limit=rate, max_concurrent=conc) as sandbox:
        env = sandbox_env(url, sandbox.url, rate, conc, DAGSTER_HOME=str(home)) | extra
        data, child = run_worker("dagster-backfill", work / f"dagster_{name}.json", env, timeout=n * 3 + 300)
        request_log = sandbox.request_log()
        times = create_times(request_log)
        stats, agents = sandbox.stats(), sandbox.agents()
    runs = data["runs"]
    return {
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
        "api_requests_by_method": dict(Counter(r.method for r in request_log)),
        **_sandbox_figures(stats, url, agents, n),
        "create_times": [t - data["launched"] for t in times],
        "run_boundaries_s": [r["started"] - data["launched"] for r in runs],
    }


def measure_under_429s(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """Sandbox limit slightly below the client's: 429s are injected; nothing lost or duplicated."""
    n, latency, rate, conc = cfg["personas_429"], cfg["latency_s"], cfg["rate_limit"], cfg["max_concurrent"]
    server_rate = cfg["server_rate_429"]
    log(f"rate429: CLI at {rate:g}/s against a sandbox limited to {server_rate:g}/s, {n} personas")
    run = _run_cli(work, "r429", n, rate, conc, n * 3 + 120, latency=latency, rate_limit=server_rate, max_concurrent=conc)
    times, started = create_times(run.request_log), run.child["started"]
    t429 = sorted(r.arrived for r in run.request_log if r.status == 429)
    result = {
        **throughput(times, started, latency, n, server_rate),
        "client_rate_limit": rate,
        "server_rate_limit": server_rate,
        "returncode": run.child["returncode"],
        "rate_limited_429": run.stats["rate_limited"],
        "first_429_s": t429[0] - started if t429 else None,
        "last_429_s": t429[-1] - started if t429 else None,
        "accounting": agent_accounting(run.database_url, run.agents, n),
        "create_times": [t - started for t in times],
    }
    # Recovery: the creates after the last 429 (or the second half) run near the server's limit.
    if len(times) > 10:
        half = times[len(times) // 2 :]
        result["second_half_agents_per_s"] = (len(half) - 1) / (half[-1] - half[0])
        result["second_half_ratio_to_server_limit"] = result["second_half_agents_per_s"] / server_rate
    return result


def target_rows(results: dict[str, Any], cfg: dict[str, Any], add: AddRow) -> None:
    p = results.get("provisioning")
    if p:
        _provisioning_rows(p, cfg, add)
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


def _provisioning_rows(p: dict[str, Any], cfg: dict[str, Any], add: AddRow) -> None:
    rate, n = cfg["rate_limit"], cfg["personas"]
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
