"""Section `bookkeeping`: what Dagster adds to one run of 100 to 1,000 partitions, against the same
provisioning without Dagster (sandbox without latency or limits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import AddRow, fresh_store, log, run_worker, sandbox_env, seed


def measure(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
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
                env = sandbox_env(url, sandbox.url, 1_000_000, cfg["max_concurrent"], DAGSTER_HOME=str(home))
                data, _ = run_worker(mode, work / f"bk_{mode}_{size}.json", env, timeout=900)
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


def target_rows(results: dict[str, Any], cfg: dict[str, Any], add: AddRow) -> None:
    b = results.get("bookkeeping")
    if not b:
        return
    for size, row in b["sizes"].items():
        add(f"Dagster bookkeeping, one run of {size} partitions", row["overhead_ms_per_partition"],
            f"{row['provision-dagster']['seconds']:.2f} s vs {row['provision-plain']['seconds']:.2f} s without Dagster: "
            f"{row['overhead_ms_per_partition']:.1f} ms/partition", "", None)
    if "marginal_ms_per_partition" in b:
        add("Dagster bookkeeping, marginal cost", b["marginal_ms_per_partition"],
            f"{b['marginal_ms_per_partition']:.1f} ms/partition + {b['fixed_run_overhead_s']:.2f} s per run", "", None)
