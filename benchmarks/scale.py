"""Sections `scale` and `backfill`: what a Dagster run and a sensor tick cost as the registered partitions grow,
and a backfill as users launch it at the largest size.

For SQLite and PostgreSQL Dagster storage, and 1,000 / 10,000 / 100,000 registered partitions:
- one run provisioning 500 new personas against an unthrottled sandbox (only our and Dagster's costs
  count), repeated and interleaved across sizes so that load on the machine hits every size alike;
- the partition-status GraphQL query of the UI's partitions page, through a real dagster-webserver;
then at the largest size a tick of persona_partitions_sensor that registers 20,000 new personas, applied the
way the sensor daemon applies it, then new_personas_sensor's tick requesting their runs.
Section `backfill` (`backfill`, `limited_backfill`): new personas at the largest size, backfilled from the
partitions page through a running webserver and daemon, against a 10 requests/s sandbox.

Child side: `python -m benchmarks.scale MODE OUT.json` (each run in its own process, like a run worker).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator

import requests

from persona_agents_pipeline.sandbox.local_servers import free_port, wait_until

from .common import API_KEY, CREATE_PATH, PYTHON, ROOT, child_env, create_times, fresh_store, run_child, seed, throughput

NEW_PER_RUN = 500
SAMPLE = 2_000
POSTGRES_ADMIN = os.environ.get("PERSONAS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
AGENT_COLUMNS = ("elevenlabs_agent_id", "voice_id", "conversation_prompt", "voice_settings", "agent_created_at",
                 "agent_config_hash", "agent_claim_owner", "agent_claim_expires_at", "agent_create_attempted_at")
PARTITION_STATUS_QUERY = """
query PartitionStatus {
  assetNodeOrError(assetKey: {path: ["persona_agent"]}) {
    ... on AssetNode {
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
      }
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
    }
  }
}
"""
# What a Dagster webserver still starting answers with (a refused connection): not ready yet, not a failure.
STARTING = (requests.RequestException,)
DAEMONS_QUERY = "query { instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"
# What the partitions page's Materialize sends for the selected partitions.
LAUNCH_BACKFILL = """mutation($partitionNames: [String!]) { launchPartitionBackfill(backfillParams: {assetSelection:
  [{path: ["persona_agent"]}], partitionNames: $partitionNames}) { __typename
  ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
BACKFILL_STATUS = "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] scale: {message}", flush=True)


# ---- parent side --------------------------------------------------------------------------------------


def postgres_database(name: str) -> str | None:
    """A fresh PostgreSQL database for one Dagster instance; None where no server answers."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN.replace("+psycopg", ""), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # reported as the reason the PostgreSQL half was skipped
        log(f"no PostgreSQL for Dagster storage ({type(exc).__name__}: {exc})")
        return None
    host = POSTGRES_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+psycopg2://{host}/{name}"


def drop_postgres_database(name: str | None) -> None:
    if name:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_home(path: Path, pg_url: str | None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    storage = f"storage:\n  postgres:\n    postgres_url: {pg_url}\n" if pg_url else ""
    (path / "dagster.yaml").write_text(storage + "telemetry:\n  enabled: false\n")
    return path


def child(mode: str, out: Path, env: dict[str, str], timeout: float = 1800) -> dict[str, Any]:
    result = run_child([PYTHON, "-m", "benchmarks.scale", mode, str(out)], env, timeout=timeout)
    if result["returncode"] != 0 or not out.exists():
        raise RuntimeError(f"scale child {mode} failed ({result['returncode']}):\n{result['stderr_tail']}")
    return json.loads(out.read_text()) | {"process_wall_s": result["wall_s"], "peak_rss_mb": result["peak_rss_mb"]}


def next_persona_keys(url: str, n: int) -> list[str]:
    """The partition keys of the next n personas inserted (ids continue the table's)."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        last = db.execute("SELECT coalesce(max(id), 0) FROM personas").fetchone()[0]
    return [str(last + i) for i in range(1, n + 1)]


def reset_new_personas(url: str, first_new_id: int) -> None:
    """Forget the agents of the personas a run created, so the next repetition provisions them again."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute(f"UPDATE personas SET {', '.join(f'{c} = NULL' for c in AGENT_COLUMNS)} WHERE id >= ?", (first_new_id,))


@contextmanager
def dagster_services(env: dict[str, str], *, daemon: bool = False) -> Iterator[str]:
    """A real dagster-webserver (and with `daemon`, `dagster-daemon run`) on this instance; yields its URL.
    Ends them with every process they started (the daemon's code servers and run workers have sessions of their own)."""
    port = free_port()
    bin_dir = Path(PYTHON).parent
    commands = [[str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]]
    if daemon:
        commands.append([str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"])
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True) for command in commands]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/server_info", timeout=2).ok, "the webserver answers", 180,
                   not_yet=STARTING)
        yield url
    finally:
        tree = [pid for process in processes for pid in process_tree(process.pid)]
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        for pid in tree:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in processes:
            process.wait()


def process_tree(pid: int) -> list[int]:
    try:
        children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()]
    except OSError:  # the process, or one of its threads, has ended meanwhile
        children = []
    return [pid] + [descendant for child in children for descendant in process_tree(child)]


def graphql(url: str, query: str, **variables) -> dict[str, Any]:
    body = requests.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=600).json()
    if "errors" in body:
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def partition_status_query_ms(env: dict[str, str], repeats: int = 3) -> dict[str, Any]:
    """The UI partitions page's status query through a real dagster-webserver: first (cold) and later calls."""
    with dagster_services(env) as url:
        samples, stats = [], None
        for _ in range(repeats):
            started = time.perf_counter()
            stats = graphql(url, PARTITION_STATUS_QUERY)["assetNodeOrError"]["partitionStats"]
            samples.append((time.perf_counter() - started) * 1000)
        return {"first_ms": samples[0], "later_ms": statistics.median(samples[1:]), "partition_stats": stats}


def registered_personas(cfg: dict[str, Any], work: Path, name: str, storage: str, size: int, new: int) -> dict[str, Any] | None:
    """A persona store of `size` personas, all but the last `new` with an agent, and a Dagster instance (SQLite,
    or a fresh PostgreSQL database) with their partitions registered; None where no PostgreSQL server answers."""
    pg_url = postgres_database(f"{name}_{uuid.uuid4().hex[:8]}") if storage == "postgresql" else None
    if storage == "postgresql" and pg_url is None:
        return None
    url = fresh_store(work / f"{name}_{storage}.db")
    seed(url, size - new, with_agents_every=10**9)  # every one of these has an agent
    seed(url, new, start=size - new)
    home = make_home(work / f"{name}_home_{storage}", pg_url)
    # No ELEVENLABS_RATE_LIMIT: unthrottled means no rate window at all. A stand-in such as 1,000,000/s
    # makes the shared budget keep a million-entry window in the persona database, scanned per request.
    env = child_env(PERSONAS_DATABASE_URL=url, DAGSTER_HOME=str(home), ELEVENLABS_API_KEY=API_KEY,
                    ELEVENLABS_MAX_CONCURRENT=str(cfg["max_concurrent"]))
    log(f"{storage}: registering {size:,} partitions")
    return {"url": url, "env": env, "pg_database": pg_url and pg_url.rsplit("/", 1)[1],
            "register": child("register", work / f"{name}_reg_{storage}.json", env)}


def scale(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    from persona_agents_pipeline.sandbox import SandboxServer

    sizes, reps = cfg["scale_sizes"], cfg["scale_repeats"]
    out: dict[str, Any] = {"sizes": sizes, "repeats": reps, "new_per_run": NEW_PER_RUN}
    for storage in ("sqlite", "postgresql"):
        configs = {}
        for size in sizes:
            registered = registered_personas(cfg, work, f"scale_{size}", storage, size, new=NEW_PER_RUN)
            if registered is None:
                break
            configs[size] = registered
        if not configs:
            out[storage] = {"skipped": "no PostgreSQL server answers"}
            continue
        runs: dict[int, list[dict]] = {size: [] for size in configs}
        for rep in range(reps):
            for size, c in configs.items():
                reset_new_personas(c["url"], size - NEW_PER_RUN + 1)
                with SandboxServer() as sandbox:
                    log(f"{storage}: run {rep + 1}/{reps} of {NEW_PER_RUN} new personas, {size:,} partitions registered")
                    data = child("run", work / f"run_{storage}_{size}_{rep}.json", c["env"] | {"ELEVENLABS_BASE_URL": sandbox.url})
                    data["agents"] = len(sandbox.agents())
                runs[size].append(data)
        result: dict[str, Any] = {}
        for size, c in configs.items():
            log(f"{storage}: partition-status GraphQL at {size:,} partitions")
            seconds = [r["seconds"] for r in runs[size]]
            cpu = [r["cpu_s"] for r in runs[size]]
            result[str(size)] = {
                "register_s": c["register"]["seconds"],
                "run_seconds": seconds,
                "median_run_s": statistics.median(seconds),
                "agents_per_s": NEW_PER_RUN / statistics.median(seconds),
                # CPU time of the run's process (SQLite work included, a PostgreSQL server's not): what the
                # run itself costs, little disturbed by other load on the machine.
                "run_cpu_seconds": cpu,
                "median_cpu_s": statistics.median(cpu),
                "all_succeeded": all(r["success"] and r["materialized"] == NEW_PER_RUN == r["agents"] for r in runs[size]),
                "graphql": partition_status_query_ms(c["env"]),
            }
        small, large = str(min(configs)), str(max(configs))
        result["ratio_large_to_small"] = result[large]["agents_per_s"] / result[small]["agents_per_s"]
        result["cpu_ratio_large_to_small"] = result[large]["median_cpu_s"] / result[small]["median_cpu_s"]
        largest = configs[max(configs)]
        result["tick_20k"] = child("tick", work / f"tick_{storage}.json", largest["env"] | {"SCALE_TICK_NEW": str(cfg["scale_tick_new"])},
                                   timeout=3600)
        out[storage] = result
        for c in configs.values():
            drop_postgres_database(c["pg_database"])
    return out


def deployed_home(home: Path) -> None:
    """deploy/dagster.yaml's run queue, pool limit and daemon threads on this instance (storage and run launcher kept)."""
    import yaml

    deployed = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config.update({key: deployed[key] for key in ("run_coordinator", "concurrency", "sensors", "schedules")})
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def backfill(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """Section `backfill`: for SQLite and PostgreSQL Dagster storage, the largest scale size of personas with
    agents and their partitions registered, then `limited_backfill` of `scale_backfill` new personas."""
    size = cfg["scale_sizes"][-1]
    out: dict[str, Any] = {"registered": size}
    for storage in ("sqlite", "postgresql"):
        registered = registered_personas(cfg, work, "backfill", storage, size, new=0)
        if registered is None:
            out[storage] = {"skipped": "no PostgreSQL server answers"}
            continue
        try:
            out[storage] = limited_backfill(cfg, work, storage, registered, size)
        finally:
            drop_postgres_database(registered["pg_database"])
    return out


def limited_backfill(cfg: dict[str, Any], work: Path, storage: str, c: dict[str, Any], size: int) -> dict[str, Any]:
    """New personas at the largest size, backfilled as a user does against a 10 requests/s sandbox: webserver and
    daemon up (persona_partitions_sensor registers the new personas), then the partitions page's Materialize over
    them: the backfill daemon creates runs of RUN_BATCH_SIZE (the asset's BackfillPolicy) and queues them, the
    queue starts them, the `elevenlabs_api` pool admits their steps. Throughput from the click to the last agent."""
    import dagster as dg

    from persona_agents_pipeline.sandbox import SandboxServer

    n, latency, rate, conc = cfg["scale_backfill"], cfg["latency_s"], cfg["rate_limit"], cfg["max_concurrent"]
    home = Path(c["env"]["DAGSTER_HOME"])
    deployed_home(home)
    new_keys = next_persona_keys(c["url"], n)
    seed(c["url"], n, start=10**6)  # `start` only varies names and traits
    log(f"{storage}: backfill of {n} new personas at {size:,} partitions through the daemon, sandbox {rate:g}/s")
    with SandboxServer(latency=latency, rate_limit=rate, max_concurrent=conc) as sandbox, \
            dg.DagsterInstance.from_config(str(home)) as instance:
        env = c["env"] | {"ELEVENLABS_BASE_URL": sandbox.url, "ELEVENLABS_RATE_LIMIT": f"{rate:g}"}
        with dagster_services(env, daemon=True) as url:
            wait_until(lambda: all(d["healthy"] for d in graphql(url, DAEMONS_QUERY)["instance"]["daemonHealth"]
                                   ["allDaemonStatuses"] if d["required"]), "the daemons are healthy", 300, interval=2,
                       not_yet=STARTING)
            wait_until(lambda: instance.has_dynamic_partition("personas", new_keys[-1]),
                       "persona_partitions_sensor registers the new personas", 1200, interval=2, not_yet=STARTING)
            load_before = Path("/proc/loadavg").read_text().split()[:3]
            launched, launched_at = time.monotonic(), time.time()
            answer = graphql(url, LAUNCH_BACKFILL, partitionNames=new_keys)["launchPartitionBackfill"]
            if answer["__typename"] != "LaunchBackfillSuccess":
                raise RuntimeError(f"backfill not launched: {answer}")
            status = wait_until(lambda: backfill_finished(url, answer["backfillId"]), "the backfill finishes", n * 3 + 600,
                                interval=2, not_yet=STARTING)
            load_after = Path("/proc/loadavg").read_text().split()[:3]
            runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": answer["backfillId"]}), ascending=True)
            phases = [run_phases(instance, record.dagster_run.run_id, launched_at) for record in runs]
        requests_seen, stats = sandbox.request_log(), sandbox.stats()
    times = create_times(requests_seen)
    return {**throughput(times, launched, latency, n, rate), "backfill_status": status, "runs": len(runs), "run_phases": phases,
            "registered_before": size, "rate_limited_429": stats["rate_limited"], "loadavg_before": load_before,
            "loadavg_after": load_after, "other_requests_before_last_create":
            sum(1 for r in requests_seen if r.path != CREATE_PATH and launched <= r.arrived <= (times or [0])[-1])}


def backfill_finished(url: str, backfill_id: str) -> str | None:
    status = graphql(url, BACKFILL_STATUS, id=backfill_id)["partitionBackfillOrError"]["status"]
    return None if status in ("REQUESTED", "CANCELING", "FAILING") else status


def target_rows(results: dict[str, Any], add) -> None:
    """The section's rows in the report table (`add` is run.targets' row builder)."""
    s = results.get("scale")
    if not s:
        return
    for storage in ("sqlite", "postgresql"):
        r = s.get(storage) or {}
        if "skipped" in r or not r:
            add(f"scale, {storage}", None, f"skipped: {r.get('skipped', 'not run')}", "", None)
            continue
        sizes = [str(size) for size in s["sizes"] if str(size) in r]
        shown = " / ".join(f"{r[size]['agents_per_s']:.1f}" for size in sizes)
        ratio = r["ratio_large_to_small"]
        add(f"500 new personas in one run, {storage} storage, {' / '.join(f'{int(x):,}' for x in sizes)} partitions", ratio,
            f"{shown} agents/s (median of {s['repeats']}); {int(sizes[-1]):,} vs {int(sizes[0]):,}: {ratio:.2f}x", ">= 0.85x",
            ratio >= 0.85 and all(r[size]["all_succeeded"] for size in sizes))
        add(f"  the same runs: CPU time of the run process, {storage}", r["cpu_ratio_large_to_small"],
            " / ".join(f"{r[size]['median_cpu_s']:.1f}" for size in sizes)
            + f" s; {int(sizes[-1]):,} vs {int(sizes[0]):,}: {r['cpu_ratio_large_to_small']:.2f}x", "(diagnostic)", None)
        add(f"partitions page status query, {storage}", r[sizes[-1]]["graphql"]["later_ms"],
            " / ".join(f"{r[size]['graphql']['first_ms']:.0f} ({r[size]['graphql']['later_ms']:.0f})" for size in sizes)
            + " ms first (later)", "", None)
        t = r["tick_20k"]
        add(f"sensor tick registering {t['new']:,} personas, {storage}", t["evaluate_s"],
            f"evaluation {t['evaluate_s']:.1f} s; the daemon then: {t['new']:,} membership checks {t['membership_s']:.0f} s, "
            f"add {t['add_s']:.1f} s, {t['observations']:,} observations {t['observations_s']:.0f} s "
            f"(the first {t['observations_timed']:,} of each timed, the rest at that rate); then new_personas_sensor: "
            f"{t['run_requests']} runs" + (f" in {t['request_runs_s']:.1f} s" if "request_runs_s" in t else ""),
            "evaluation < 60 s", t["evaluate_s"] < 60)


def backfill_target_rows(results: dict[str, Any], add) -> None:
    """The `backfill` section's rows in the report table."""
    s = results.get("backfill")
    if not s:
        return
    for storage in ("sqlite", "postgresql"):
        b = s.get(storage) or {"skipped": "not run"}
        name = f"UI backfill of {b.get('expected', 0):,} new personas at {s['registered']:,} partitions, daemon, {storage}, sandbox 10/s"
        if "skipped" in b:
            add(name, None, f"skipped: {b['skipped']}", "", None)
            continue
        add(name, b["ratio_to_rate_limit"],
            f"{b['agents_per_s']:.2f} agents/s = {b['ratio_to_rate_limit']:.1%} of the limit ({b['seconds']:.0f} s, {b['runs']} runs, "
            f"first agent {b['first_create_after_launch_s']:.0f} s after the click, then {b['steady_ratio_to_rate_limit']:.0%}; "
            f"{b['rate_limited_429']} x 429)",
            ">= 80% of rate limit", b["ratio_to_rate_limit"] >= 0.80 and b["backfill_status"] == "COMPLETED_SUCCESS")


# ---- child side ---------------------------------------------------------------------------------------


def _register(out: str) -> None:
    import dagster as dg

    from persona_agents_pipeline.defs.partitions import register
    from persona_agents_pipeline.store import PersonaStore

    keys = [str(i) for i in range(1, PersonaStore(os.environ["PERSONAS_DATABASE_URL"]).count() + 1)]
    started = time.monotonic()
    with dg.DagsterInstance.get() as instance:
        register(instance, keys)
    Path(out).write_text(json.dumps({"partitions": len(keys), "seconds": time.monotonic() - started}))


def _new_keys() -> list[str]:
    from persona_agents_pipeline.store import PersonaStore

    return [str(pid) for pid in PersonaStore(os.environ["PERSONAS_DATABASE_URL"]).ids_without_agents()]


def run_phases(instance, run_id: str, launched_at: float) -> dict[str, float]:
    """Where a run's time went, from its own event log (seconds after `launched_at`, a wall-clock time):
    the planned events Dagster writes per partition when it creates the run, the run's and the step's
    start, and the first and last per-partition materialization."""
    firsts: dict[str, float] = {}
    lasts: dict[str, float] = {}
    for record in instance.get_records_for_run(run_id, limit=1_000_000).records:
        entry = record.event_log_entry
        kind = entry.dagster_event.event_type_value if entry.dagster_event else "log"
        firsts.setdefault(kind, entry.timestamp - launched_at)
        lasts[kind] = entry.timestamp - launched_at
    return {"planned_start_s": firsts.get("ASSET_MATERIALIZATION_PLANNED", 0.0),
            "planned_done_s": lasts.get("ASSET_MATERIALIZATION_PLANNED", 0.0), "run_start_s": firsts.get("PIPELINE_START", 0.0),
            "step_start_s": firsts.get("STEP_START", 0.0),
            "first_materialization_s": firsts.get("ASSET_MATERIALIZATION", 0.0),
            "last_materialization_s": lasts.get("ASSET_MATERIALIZATION", 0.0), "run_end_s": lasts.get("PIPELINE_SUCCESS", 0.0)}


def _run(out: str) -> None:
    """One run over the new personas, as new_personas_sensor requests it."""
    import dagster as dg

    from persona_agents_pipeline.defs.assets import persona_agent
    from persona_agents_pipeline.defs.run_requests import range_run_request
    from persona_agents_pipeline.in_process_runs import execute_run_request

    keys = _new_keys()
    with dg.DagsterInstance.get() as instance:
        started, cpu_started, wall_started = time.monotonic(), time.process_time(), time.time()
        result = execute_run_request(instance, range_run_request(keys, run_key=None, reason="benchmark scale"))
        seconds, cpu_s = time.monotonic() - started, time.process_time() - cpu_started
        materialized = instance.get_materialized_partitions(persona_agent.key) & set(keys)
        phases = run_phases(instance, result.run_id, wall_started)
    Path(out).write_text(json.dumps({"partitions": len(keys), "success": result.success, "seconds": seconds,
                                     "cpu_s": cpu_s, "materialized": len(materialized), "phases": phases}))


def _tick(out: str) -> None:
    """persona_partitions_sensor (which registers new personas) seeing SCALE_TICK_NEW new personas, then its
    result applied as the sensor daemon applies it (dagster/_daemon/sensor.py): asset events one by one, then
    for each add request one has_dynamic_partition query per key and one add of the new ones; then
    new_personas_sensor's tick requesting their runs."""
    import dagster as dg

    from persona_agents_pipeline.defs.resources import PersonaStoreResource
    from persona_agents_pipeline.defs.sensors import new_personas_sensor, persona_partitions_sensor
    from persona_agents_pipeline.store import PersonaStore

    store = PersonaStore(os.environ["PERSONAS_DATABASE_URL"])
    cursor = str(store.latest_change_seq())
    seed(os.environ["PERSONAS_DATABASE_URL"], int(os.environ["SCALE_TICK_NEW"]), start=2 * 10**6)
    with dg.DagsterInstance.get() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"persona_store": PersonaStoreResource()})
        started = time.monotonic()
        result = persona_partitions_sensor(context)
        evaluate_s = time.monotonic() - started
        # Stored one by one as the daemon does; the first SAMPLE are timed, the rest estimated at their
        # rate (all 20,000 would add many minutes to the benchmark).
        sample = result.asset_events[:SAMPLE]
        started = time.monotonic()
        for event in sample:
            instance.report_runless_asset_event(event)
        observations_s = (time.monotonic() - started) / len(sample) * len(result.asset_events) if sample else 0.0
        # The daemon checks each key with has_dynamic_partition: the first SAMPLE checks are timed, the rest
        # estimated at that rate; then each request's keys are added as the daemon adds the absent ones.
        keys = [key for request in result.dynamic_partitions_requests for key in request.partition_keys]
        started = time.monotonic()
        for key in keys[:SAMPLE]:
            instance.has_dynamic_partition("personas", key)
        membership_s = (time.monotonic() - started) / min(len(keys), SAMPLE) * len(keys) if keys else 0.0
        started = time.monotonic()
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        add_s = time.monotonic() - started
        started = time.monotonic()
        requesting = new_personas_sensor(context)
        request_s = time.monotonic() - started
        Path(out).write_text(json.dumps({
            "new": sum(len(r.partition_keys) for r in result.dynamic_partitions_requests),
            "add_requests": len(result.dynamic_partitions_requests), "run_requests": len(requesting.run_requests),
            "request_runs_s": request_s,
            "observations": len(result.asset_events), "observations_timed": len(sample), "evaluate_s": evaluate_s,
            "observations_s": observations_s,
            "membership_s": membership_s, "add_s": add_s,
            "registered_after": len(instance.get_dynamic_partitions("personas")),
        }))


MODES = {"register": _register, "run": _run, "tick": _tick}

if __name__ == "__main__":
    MODES[sys.argv[1]](*sys.argv[2:])
