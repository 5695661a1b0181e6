"""Section `sensor`: what one tick of new_personas_sensor costs with 1,000 to 100,000 personas, with none
new and with 100 new among the largest (registered, as persona_partitions_sensor registers them first)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import AddRow, fresh_store, log, seed

WARM_UP = 3  # the first evaluations warm caches; dropped


def _timed_ticks(cfg: dict[str, Any], instance, cursor: str, resources) -> tuple[list[float], Any]:
    import dagster as dg

    from persona_agents_pipeline.defs.sensors import new_personas_sensor

    samples, result = [], None
    for _ in range(cfg["sensor_repeats"] + WARM_UP):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        started = time.perf_counter()
        result = new_personas_sensor(context)
        samples.append(time.perf_counter() - started)
    return samples[WARM_UP:], result


def _timing(samples: list[float]) -> dict[str, Any]:
    return {
        "median_ms": statistics.median(samples) * 1000,
        "p95_ms": sorted(samples)[int(0.95 * (len(samples) - 1))] * 1000,
        "samples": len(samples),
    }


def measure(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    import dagster as dg

    from persona_agents_pipeline.defs.partitions import personas_partitions
    from persona_agents_pipeline.defs.resources import PersonaStoreResource
    from persona_agents_pipeline.store import PersonaStore

    out: dict[str, Any] = {}
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
                samples, result = _timed_ticks(cfg, instance, cursor, resources)
                out[f"no_new_{size}"] = {
                    "personas": size,
                    **_timing(samples),
                    "result": type(result).__name__,
                    "partitions_register_s": register_s,
                }
                if size == max(cfg["sensor_sizes"]):
                    out |= _new_among(cfg, size, url, instance, cursor, resources)
    small, large = min(cfg["sensor_sizes"]), max(cfg["sensor_sizes"])
    out["ratio_large_to_small"] = out[f"no_new_{large}"]["median_ms"] / out[f"no_new_{small}"]["median_ms"]
    return out


def _new_among(cfg: dict[str, Any], size: int, url: str, instance, cursor: str, resources) -> dict[str, Any]:
    from persona_agents_pipeline.defs.partitions import personas_partitions

    log(f"sensor: {cfg['sensor_new']} new among {size}")
    seed(url, cfg["sensor_new"], start=size)
    new_keys = [str(i) for i in range(size + 1, size + cfg["sensor_new"] + 1)]
    # What persona_partitions_sensor's tick leaves: new_personas_sensor requests runs only for registered keys.
    instance.add_dynamic_partitions(personas_partitions.name, new_keys)
    samples, result = _timed_ticks(cfg, instance, cursor, resources)
    # Where the time goes: one has_dynamic_partition query per new key (what the daemon does with an add
    # request) against one bulk membership query for all of them.
    started = time.perf_counter()
    for key in new_keys:
        instance.has_dynamic_partition(personas_partitions.name, key)
    per_key_s = time.perf_counter() - started
    started = time.perf_counter()
    instance.get_existing_dynamic_partitions(personas_partitions.name, new_keys)
    bulk_s = time.perf_counter() - started
    return {
        "membership_queries": {
            "keys": len(new_keys),
            "has_dynamic_partition_each_ms": per_key_s * 1000,
            "get_existing_dynamic_partitions_once_ms": bulk_s * 1000,
        },
        f"new_{cfg['sensor_new']}_among_{size}": {
            "personas": size + cfg["sensor_new"],
            **_timing(samples),
            "run_requests": len(result.run_requests),
            "new_partitions": sum(len(r.partition_keys) for r in result.dynamic_partitions_requests),
        },
    }


def target_rows(results: dict[str, Any], cfg: dict[str, Any], add: AddRow) -> None:
    s = results.get("sensor")
    if not s:
        return
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
        add(f"the daemon registering them: partition membership for {m['keys']} new keys", m["has_dynamic_partition_each_ms"],
            f"{m['has_dynamic_partition_each_ms']:.0f} ms as {m['keys']} has_dynamic_partition calls; "
            f"{m['get_existing_dynamic_partitions_once_ms']:.1f} ms as one get_existing_dynamic_partitions", "(diagnostic)", None)
    add(f"sensor tick cost {max(sizes):,} vs {min(sizes):,}", s["ratio_large_to_small"], f"{s['ratio_large_to_small']:.2f}x", "<= 2x",
        s["ratio_large_to_small"] <= 2)
