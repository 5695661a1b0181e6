"""Section `status`: `list-agent-status` and the agent_status_report asset at 100,000 personas (time and memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import CLI, AddRow, child_env, fresh_store, log, run_child, run_worker, seed


def measure(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    size = cfg["status_personas"]
    log(f"status: list-agent-status and agent_status_report at {size} personas")
    url = fresh_store(work / "status.db")
    seed(url, size, with_agents_every=10)  # 90% with agents, 10% missing
    env = child_env(PERSONAS_DATABASE_URL=url)
    cli_runs = [run_child([CLI, "list-agent-status", "--format", "table", "--no-check-remote"], env, timeout=120) for _ in range(cfg["status_repeats"])]
    for child in cli_runs:
        if child["returncode"] != 0:
            raise RuntimeError(f"list-agent-status failed: {child['stderr_tail']}")
    home = work / "status_home"
    home.mkdir(exist_ok=True)
    asset, _ = run_worker("status-asset", work / "status_asset.json", env | {"DAGSTER_HOME": str(home)}, "0", timeout=300)
    traced, _ = run_worker("status-asset", work / "status_asset_traced.json", env | {"DAGSTER_HOME": str(home)}, "1", timeout=600)
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


def target_rows(results: dict[str, Any], cfg: dict[str, Any], add: AddRow) -> None:
    st = results.get("status")
    if not st:
        return
    cli = st["cli"]
    add(f"list-agent-status, {st['personas']:,} personas: time", cli["wall_s"], f"{cli['wall_s']:.2f} s", "< 5 s", cli["wall_s"] < 5)
    add(f"list-agent-status, {st['personas']:,} personas: peak RSS", cli["peak_rss_mb"], f"{cli['peak_rss_mb']:.0f} MB", "< 400 MB",
        cli["peak_rss_mb"] < 400)
    a = st["asset"]
    add(f"agent_status_report asset, {st['personas']:,} personas", a["seconds"],
        f"{a['seconds']:.2f} s; process peak RSS {a['process_peak_rss_mb']:.0f} MB (+{a['rss_growth_mb']:.0f} MB), "
        f"tracemalloc peak {a['tracemalloc_peak_mb']:.1f} MB", "", None)
