"""What a "Backfill all" over healthy personas writes to Dagster's storage, per partition.

Every persona already has its agent; the backfill's runs (ranges of RUN_BATCH_SIZE, mode converge, the
checks selected as the UI selects them) verify each one, then checks_after_materialize_sensor's check
runs follow. Rows are counted in every table of the instance's SQLite storage before and after, and
divided by the number of partitions; the 100,000 figure is that rate times 100,000 (each run's writes
depend on its own partitions only, see README "At 100,000 personas").

    .venv/bin/python -m benchmarks.backfill_writes --personas 2000
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path

from .common import fresh_store, log, sandbox_env, seed

EXTRAPOLATED = 100_000


def storage_rows(home: Path) -> tuple[Counter, int]:
    """Rows per table summed over every SQLite file of the instance (index and per-run shards), and bytes."""
    rows: Counter = Counter()
    size = 0
    for path in home.rglob("*.db"):
        size += path.stat().st_size
        with sqlite3.connect(path) as db:
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                rows[table] += db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
    return rows, size


def backfill_all(instance, keys: list[str], backfill_id: str) -> list:
    """The backfill's runs as its daemon launches them: ranges of the batch size, asset and checks selected."""
    import dagster as dg

    from persona_agents_pipeline.defs.assets import persona_agent
    from persona_agents_pipeline.defs.dagster_internals import BACKFILL_TAG
    from persona_agents_pipeline.defs.partitions import RUN_BATCH_SIZE
    from persona_agents_pipeline.defs.run_requests import range_run_request
    from persona_agents_pipeline.in_process_runs import execute_run_request

    results = []
    for start in range(0, len(keys), RUN_BATCH_SIZE):
        ranged = range_run_request(keys[start : start + RUN_BATCH_SIZE], run_key=None, reason="backfill")
        request = dg.RunRequest(asset_selection=[persona_agent.key], tags={**ranged.tags, BACKFILL_TAG: backfill_id})
        results.append(execute_run_request(instance, request))
    return results


def follow_up_checks(instance) -> list:
    import dagster as dg

    from persona_agents_pipeline.defs.checks_after_materialize import checks_after_materialize_sensor
    from persona_agents_pipeline.in_process_runs import execute_run_request

    tick = checks_after_materialize_sensor(dg.build_sensor_context(instance=instance, cursor="0"))
    return [execute_run_request(instance, request) for request in tick.run_requests]


def measure(personas: int, work: Path) -> dict:
    import os

    import dagster as dg

    from persona_agents_pipeline.defs.partitions import personas_partitions, register
    from persona_agents_pipeline.defs.run_requests import ENSURE_RUN_CONFIG, span_run_requests
    from persona_agents_pipeline.in_process_runs import execute_run_request
    from persona_agents_pipeline.sandbox import SandboxServer

    url = fresh_store(work / "personas.db")
    seed(url, personas)
    home = work / "dagster_home"
    home.mkdir()
    with SandboxServer() as sandbox:
        os.environ.update(sandbox_env(url, sandbox.url, 1_000_000, 8))
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            keys = [str(n) for n in range(1, personas + 1)]
            register(instance, keys)
            log(f"creating {personas} agents (ensure runs)")
            for request in span_run_requests(keys, keys, reason="seed", run_config=ENSURE_RUN_CONFIG):
                assert execute_run_request(instance, request).success
            before, size_before = storage_rows(home)
            log("Backfill all over healthy personas")
            started = time.monotonic()
            assert all(run.success for run in backfill_all(instance, keys, "bench"))
            backfill_s = time.monotonic() - started
            after_backfill, size_backfill = storage_rows(home)
            log("the checks that follow it")
            assert all(run.success for run in follow_up_checks(instance))
            after_checks, size_checks = storage_rows(home)
            assert instance.get_dynamic_partitions(personas_partitions.name) == keys

    def per_partition(later: Counter, earlier: Counter) -> dict:
        return {table: round((later[table] - earlier[table]) / personas, 2) for table in sorted(later)
                if later[table] != earlier[table]}

    out = {
        "personas": personas,
        "backfill_seconds": round(backfill_s, 1),
        "rows_per_partition_backfill": per_partition(after_backfill, before),
        "rows_per_partition_checks": per_partition(after_checks, after_backfill),
        "bytes_per_partition_backfill": round((size_backfill - size_before) / personas),
        "bytes_per_partition_checks": round((size_checks - size_backfill) / personas),
    }
    out["extrapolated_100k"] = {
        "event_log_rows_backfill": round(out["rows_per_partition_backfill"].get("event_logs", 0) * EXTRAPOLATED),
        "event_log_rows_checks": round(out["rows_per_partition_checks"].get("event_logs", 0) * EXTRAPOLATED),
        "megabytes": round((out["bytes_per_partition_backfill"] + out["bytes_per_partition_checks"]) * EXTRAPOLATED / 1e6),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "backfill_writes.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        result = measure(args.personas, Path(work))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
