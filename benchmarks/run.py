"""Entry point: `python -m benchmarks.run [--quick] [--only NAME ...]` (`make bench` runs it in full).

Sections (names for --only): provisioning, rate429, sensor, status, bookkeeping, converge, scale,
backfill (each in its own module: benchmarks/provisioning.py holds the first two, scale.py the last two).
Writes benchmarks/results/latest.json, latest.md and provisioning.png, and prints pass/short per target.
Traffic goes only to sandboxes on 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from . import bookkeeping, converge, provisioning, scale, sensor, status
from .common import AddRow, machine, write_json

RESULTS = Path(__file__).resolve().parent / "results"
Section = Callable[[dict[str, Any], Path], dict[str, Any]]
# In the order they run and their rows appear.
SECTIONS: dict[str, Section] = {
    "provisioning": provisioning.measure,
    "rate429": provisioning.measure_under_429s,
    "sensor": sensor.measure,
    "status": status.measure,
    "bookkeeping": bookkeeping.measure,
    "converge": converge.measure,
    "scale": scale.scale,
    "backfill": scale.backfill,
}
TARGET_ROWS: tuple[Callable[[dict[str, Any], dict[str, Any], AddRow], None], ...] = (
    provisioning.target_rows,
    sensor.target_rows,
    status.target_rows,
    bookkeeping.target_rows,
    converge.target_rows,
    lambda results, cfg, add: scale.target_rows(results, add),
    lambda results, cfg, add: scale.backfill_target_rows(results, add),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 personas per provisioning approach; smaller repeats")
    parser.add_argument("--only", action="append", choices=list(SECTIONS), help="run only this section (repeatable)")
    parser.add_argument("--personas", type=int, default=None, help="override the provisioning size")
    parser.add_argument("--latency", type=float, default=0.150)
    parser.add_argument("--rate-limit", type=float, default=10.0)
    parser.add_argument("--max-concurrent", type=int, default=5)
    parser.add_argument("--parallel-baseline", action="store_true",
                        help="run the sleep-bound original approach beside the other provisioning runs (saves ~11 min)")
    parser.add_argument("--merge", action="store_true",
                        help="with --only: replace just those sections in the existing latest.json")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def config(args: argparse.Namespace) -> dict[str, Any]:
    return {
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
        "scale_backfill": 200 if args.quick else 5000,
        "parallel_baseline": args.parallel_baseline,
        # "dagster" is the layer as shipped (RUN_BATCH_SIZE partitions per run, checks left to the
        # verify_agents schedule); the variant shows what smaller runs cost.
        "dagster_variants": {
            "dagster": {},
            "dagster_batch100": {"PERSONA_AGENTS_RUN_BATCH_SIZE": "100"},
        },
    }


def run_sections(names: list[str], cfg: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="persona-bench-") as tmp:
        work = Path(tmp)
        for name, measure in SECTIONS.items():
            if name in names:
                section_start = time.monotonic()
                load_before = os.getloadavg()
                results[name] = measure(cfg, work)
                results[name]["section_seconds"] = time.monotonic() - section_start
                # Other work on the machine skews timings; the load average says whether there was any.
                results[name]["loadavg_before_after"] = [load_before, os.getloadavg()]
    return results


def merge_with_previous(results: dict[str, Any], cfg: dict[str, Any], output: Path, when: str
                        ) -> tuple[dict[str, Any], str, dict[str, str]]:
    """Re-measured sections over the previous run's others (same mode only): results, its time, what was re-run."""
    previous = json.loads((output / "latest.json").read_text())
    if previous["config"].get("quick") != cfg["quick"]:
        raise SystemExit("--merge: the previous results were measured in the other mode (--quick or not)")
    rerun = dict(previous.get("sections_rerun") or {})
    for name in results:
        rerun[name] = when
    return {**previous["results"], **results}, previous["when"], rerun


def targets(results: dict[str, Any], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, value: Any, shown: str, target: str, ok: bool | None) -> None:
        rows.append({"measurement": name, "value": value, "shown": shown, "target": target,
                     "verdict": "-" if ok is None else ("pass" if ok else "short")})

    for section_rows in TARGET_ROWS:
        section_rows(results, cfg, add)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config(args)
    info = machine()
    started = time.monotonic()
    results = run_sections(args.only or list(SECTIONS), cfg)
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rerun: dict[str, str] = {}
    if args.merge and (args.output / "latest.json").exists():
        results, when, rerun = merge_with_previous(results, cfg, args.output, when)
    rows = targets(results, cfg)
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "latest.json", {"when": when, "sections_rerun": rerun, "config": cfg, "machine": info, "targets": rows,
                                             "results": results, "total_seconds": time.monotonic() - started})
    (args.output / "latest.md").write_text(markdown(rows, cfg, info, when, rerun))
    if "provisioning" in results:
        provisioning.plot(results, cfg, args.output / "provisioning.png")
    print()
    for row in rows:
        print(f"{row['verdict']:>5}  {row['measurement']}: {row['shown']}" + (f"  [target {row['target']}]" if row["target"] else ""))
    print(f"\nwrote {args.output / 'latest.json'}, latest.md" + (", provisioning.png" if "provisioning" in results else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
