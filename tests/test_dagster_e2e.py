"""End to end: dagster-daemon and dagster-webserver as real processes, the sandbox, a temp DAGSTER_HOME.

One deployment (automation off, the development default) serves every test of this module: starting a
webserver and a daemon costs tens of seconds, so each test works on personas of its own and asserts on
those. The daemon polls every second (sensors, run queue); only the backfill daemon keeps Dagster's fixed
30 s loop. We watch runs through the webserver's GraphQL API (what the pages use) and load the pages in
headless Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from persona_agents_pipeline.sandbox import SandboxServer
from persona_agents_pipeline.sandbox.local_servers import free_port
from persona_agents_pipeline.store import PersonaStore

# A user's day walks many UI steps through a real daemon: above pytest's default 300 s on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
PERSONAS = 20

INSTANCE_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    default_limit: 1
    granularity: op
sensors:
  use_threads: true
  num_workers: 2
telemetry:
  enabled: false
nux:
  enabled: false
"""

RUNS_QUERY = """
query {
  runsOrError(limit: 100) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""

PARTITIONS_QUERY = """
query {
  assetNodeOrError(assetKey: {path: ["persona_agent"]}) {
    ... on AssetNode {
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
    }
  }
}
"""


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


# Timeouts are ceilings for a loaded machine (each run is a new Python process): polling returns as soon as the
# condition holds, so a larger ceiling costs nothing when things are fast.
TIMEOUT_SCALE = float(os.environ.get("PERSONA_AGENTS_E2E_TIMEOUT_SCALE", "4"))


def wait_for(what: str, probe, timeout: float, processes=()):
    """Poll `probe` until it returns a truthy value; fail with the last value after `timeout` (scaled) seconds."""
    timeout *= TIMEOUT_SCALE
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for process in processes:
            assert process.poll() is None, f"{process.args[0]} exited with {process.returncode} while waiting for {what}"
        try:
            last = probe()
        except (requests.RequestException, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("deployment")
    api_key = f"sk-e2e-{uuid.uuid4().hex}"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    import dagster as dg

    # Create the instance's SQLite storage once: webserver and daemon starting on an empty home race to create
    # the same tables ("table jobs already exists") and one of them exits.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
    database_url = f"sqlite:///{tmp_path / 'personas.db'}"
    store = PersonaStore(database_url)
    store.upgrade()
    port = free_port()
    with SandboxServer(api_keys=[api_key], latency=0.005) as sandbox:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "PERSONAS_DATABASE_URL": database_url,
            "ELEVENLABS_BASE_URL": sandbox.url,
            "ELEVENLABS_API_KEY": api_key,
            "ELEVENLABS_RATE_LIMIT": "500",
            "ELEVENLABS_MAX_CONCURRENT": "8",
            "AUTO_CREATE_ELEVENLABS_AGENTS": "false",
            "PERSONA_AGENTS_SENSOR_INTERVAL": "1",
        }
        logs = tmp_path / "logs"
        logs.mkdir()
        processes = []
        try:
            for name, args in (
                ("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]),
                ("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]),
            ):
                out = open(logs / f"{name}.log", "w")
                processes.append(
                    subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                )
            url = f"http://127.0.0.1:{port}"
            wait_for("the webserver", lambda: requests.get(f"{url}/server_info", timeout=2).ok, 60, processes)
            yield {"url": url, "home": home, "store": store, "sandbox": sandbox, "processes": processes, "logs": logs, "api_key": api_key}
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
                    process.wait()
            store.engine.dispose()


REPOSITORY_QUERY = "query { repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename ... on Sensor { id } ... on PythonError { message } }
}
"""
RESET_SENSOR = """
mutation($selector: SensorSelector!) {
  resetSensor(sensorSelector: $selector) { __typename ... on Sensor { sensorState { status } } ... on PythonError { message } }
}
"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
CHECKS = [{"name": name, "assetKey": {"path": ["persona_agent"]}} for name in ("remote_agent_exists", "agent_matches_traits")]


def repository(url: str) -> dict:
    [node] = graphql(url, REPOSITORY_QUERY)["repositoriesOrError"]["nodes"]
    return {"repositoryLocationName": node["location"]["name"], "repositoryName": node["name"]}


def launch_run(url: str, job: str, key: str, *, selection: bool) -> str:
    """A run of one partition as the UI launches it: the asset page's Materialize of one partition ("Launch 1
    run": the asset and its checks selected), or the launchpad's whole job (no selection)."""
    selector = {**repository(url), "pipelineName": job}
    if selection:
        selector.update(assetSelection=[{"path": ["persona_agent"]}], assetCheckSelection=CHECKS)
    params = {"mode": "default", "selector": selector, "runConfigData": "{}",
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": key}]}}
    launched = graphql(url, LAUNCH_RUN, {"params": params})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def test_sensor_runs_create_agents_and_the_ui_shows_the_partitions(deployment, tmp_path):
    url, store, sandbox = deployment["url"], deployment["store"], deployment["sandbox"]
    agents_before = len(sandbox.agents())
    # Automation is off in this deployment: turn the creation sensor on as the Automation page's toggle does.
    sensor = {"selector": {**repository(url), "sensorName": "new_personas_sensor"}}
    started = graphql(url, START_SENSOR, sensor)["startSensor"]
    assert started["__typename"] == "Sensor", started
    try:
        ids = store.add_personas(
            [{"name": f"E2E {n}", "temper_level": n / PERSONAS, "chattiness": 0.5, "emotional_attachment": 0.3} for n in range(PERSONAS)]
        )
        keys = [str(i) for i in ids]

        def sensor_runs_done():
            state = ui_state(url, keys)
            runs = graphql(url, RUNS_QUERY)["runsOrError"]["results"]
            mine = [run for run in runs if {"key": "dagster/sensor_name", "value": "new_personas_sensor"} in run["tags"]]
            if [run for run in mine if run["status"] in {"FAILURE", "CANCELED"}]:
                pytest.fail(f"a sensor run failed: {mine}")
            finished = mine and all(run["status"] == "SUCCESS" for run in mine)
            return (state, mine) if finished and state["materialized"] == set(keys) else None

        state, sensor_runs = wait_for("the sensor's runs to succeed", sensor_runs_done, 75, deployment["processes"])
    finally:
        # Back to its default (stopped, automation off) for the other tests.
        reset = graphql(url, RESET_SENSOR, sensor)["resetSensor"]
        assert reset.get("sensorState", {}).get("status") == "STOPPED", reset
    assert not state["failed"] and not state["missing"]
    assert len(sensor_runs) < PERSONAS, "the sensor must batch personas into few runs"
    assert len(sandbox.agents()) == agents_before + PERSONAS
    assert not set(store.ids_without_agents()) & set(ids)
    assert deployment["api_key"] not in "".join(path.read_text() for path in deployment["logs"].iterdir())
    stats = graphql(url, PARTITIONS_QUERY)["assetNodeOrError"]["partitionStats"]

    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium); the browser check did not run")
    profile = tmp_path / "chromium-profile"
    page = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom",
            f"{url}/assets/persona_agent?view=partitions",
        ],
        capture_output=True, text=True, timeout=90,
    )
    dom = page.stdout
    (tmp_path / "asset_page.html").write_text(dom)
    assert "persona_agent" in dom, f"asset page did not render (stderr: {page.stderr[-500:]})"
    # The partitions tab renders the status filters with counts and a (virtualised) list of partition keys,
    # each as <div title="KEY">.
    missing = stats["numPartitions"] - stats["numMaterialized"] - stats["numFailed"] - stats["numMaterializing"]
    assert f"Materialized ({stats['numMaterialized']})" in dom, f"partition counts not shown; DOM saved to {tmp_path / 'asset_page.html'}"
    assert f"Failed ({stats['numFailed']})" in dom and f"Missing ({missing})" in dom
    shown = [persona_id for persona_id in ids if f'title="{persona_id}"' in dom]
    assert len(shown) >= min(10, PERSONAS), f"persona keys shown on the page: {shown}"


BACKFILL = 200


def test_backfill_of_200_partitions_runs_as_a_handful_of_runs(deployment, monkeypatch):
    """The real asset-backfill machinery (daemon) with the asset's BackfillPolicy, automation off."""
    import dagster as dg

    url, store, sandbox = deployment["url"], deployment["store"], deployment["sandbox"]
    agents_before = len(sandbox.agents())
    ids = store.add_personas(
        [{"name": f"B {n}", "temper_level": 0.2, "chattiness": 0.8, "emotional_attachment": 0.5} for n in range(BACKFILL)]
    )
    keys = [str(i) for i in ids]
    monkeypatch.setenv("DAGSTER_HOME", str(deployment["home"]))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("personas", keys)

    # The partitions page with these 200 selected, Materialize: a backfill.
    launched = graphql(url, MATERIALIZE_PARTITIONS % json.dumps(keys))["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def backfill_done():
        materialized = ui_state(url, keys)["materialized"]
        runs = graphql(url, RUNS_QUERY)["runsOrError"]["results"]
        mine = [run for run in runs if {"key": "dagster/backfill", "value": backfill_id} in run["tags"]]
        if [run for run in mine if run["status"] in {"FAILURE", "CANCELED"}]:
            pytest.fail(f"a backfill run failed: {mine}")
        finished = mine and all(run["status"] == "SUCCESS" for run in mine)
        return mine if finished and materialized == set(keys) else None

    # A backfill launched from the UI selects the (partitioned) checks too: skipped in its runs (the asset records
    # its partitions itself), they follow in runs of their own (checks_after_materialize_sensor).
    runs = wait_for("the backfill to finish", backfill_done, 180, deployment["processes"])
    print(f"backfill of {BACKFILL} partitions ran as {len(runs)} run(s)")
    assert len(runs) <= 5, f"{BACKFILL} partitions became {len(runs)} runs"
    assert len(sandbox.agents()) == agents_before + BACKFILL and not set(store.ids_without_agents()) & set(ids)


# ---- a user's day in the UI, automation off (the development default) ------------------------------

DAY_QUERY = """
query {
  assetNodeOrError(assetKey: {path: ["persona_agent"]}) {
    ... on AssetNode {
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions }
      }
      staleStatusByPartition(partitions: %s)
      assetChecksOrError {
        ... on AssetChecks { checks { name canExecuteIndividually partitionStatuses {
          ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions }
        } } }
      }
    }
  }
}
"""

REPORT_QUERY = """
query {
  assetNodeOrError(assetKey: {path: ["agent_status_report"]}) {
    ... on AssetNode { assetMaterializations(limit: 1) { runId metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } } }
  }
}
"""

MATERIALIZE_PARTITIONS = """
mutation {
  launchPartitionBackfill(backfillParams: {assetSelection: [{path: ["persona_agent"]}], partitionNames: %s}) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""

SCREENSHOT_DIR = os.environ.get("PERSONA_AGENTS_SCREENSHOT_DIR")


def ui_state(url: str, keys: list[str]) -> dict:
    node = graphql(url, DAY_QUERY % json.dumps(keys))["assetNodeOrError"]
    assert "assetPartitionStatuses" in node, f"asset not loaded yet: {node}"  # wait_for retries until it is
    statuses = node["assetPartitionStatuses"]
    checks = {check["name"]: check["partitionStatuses"] or {} for check in node["assetChecksOrError"]["checks"]}
    assert all(check["canExecuteIndividually"] == "CAN_EXECUTE" for check in node["assetChecksOrError"]["checks"])
    mine = set(keys)  # the deployment is shared: each test looks at its own personas
    return {
        "materialized": mine & set(statuses["materializedPartitions"]),
        "failed": mine & set(statuses["failedPartitions"]),
        "missing": mine & set(statuses["unmaterializedPartitions"]),
        "running": mine & set(statuses["materializingPartitions"]),
        "stale": {key for key, status in zip(keys, node["staleStatusByPartition"]) if status == "STALE"},
        "check_failed": mine & {key for status in checks.values() for key in status.get("failedPartitions", [])},
        "check_passed": mine & set(checks.get("remote_agent_exists", {}).get("succeededPartitions", [])),
    }


def report_attention(url: str) -> str:
    [materialization] = graphql(url, REPORT_QUERY)["assetNodeOrError"]["assetMaterializations"] or [None]
    if materialization is None:
        return ""
    return next((entry["mdStr"] for entry in materialization["metadataEntries"] if entry["label"] == "needs_attention"), "")


def click_materialize(url: str, keys: list[str]) -> None:
    """What the partitions page's Materialize button sends for the selected partitions."""
    launched = graphql(url, MATERIALIZE_PARTITIONS % json.dumps(keys))["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched


def screenshot(url: str, path: Path, profile: Path, height: int = 900) -> None:
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
         f"--window-size=1400,{height}", "--virtual-time-budget=20000", f"--screenshot={path}", url],
        capture_output=True, timeout=90, check=True,
    )
    assert path.stat().st_size > 10_000, f"{path} looks blank"


def test_a_users_day_in_the_ui_is_truthful(deployment, tmp_path, monkeypatch):
    import dagster as dg

    from persona_agents_pipeline.defs.resources import PersonaStoreResource
    from persona_agents_pipeline.defs.run_requests import range_run_request
    from persona_agents_pipeline.defs.schedules import missing_agent_run_requests
    from persona_agents_pipeline.in_process_runs import execute_run_request

    url, store, sandbox, processes = deployment["url"], deployment["store"], deployment["sandbox"], deployment["processes"]
    for name in ("DAGSTER_HOME", "PERSONAS_DATABASE_URL", "ELEVENLABS_BASE_URL", "ELEVENLABS_API_KEY"):
        monkeypatch.setenv(name, {"DAGSTER_HOME": str(deployment["home"]), "PERSONAS_DATABASE_URL": store.database_url,
                                  "ELEVENLABS_BASE_URL": sandbox.url, "ELEVENLABS_API_KEY": deployment["api_key"]}[name])
    agents_before = len(sandbox.agents())
    names = ["Ada", "Grace", "Linus", "Barbara", "Edsger"]
    ids = store.add_personas(
        [{"name": name, "temper_level": 0.2 + n / 10, "chattiness": 0.7, "emotional_attachment": 0.4} for n, name in enumerate(names)]
    )
    keys = [str(i) for i in ids]
    name_of = dict(zip(keys, names))

    # Morning: five new personas, automation off. They appear as missing partitions, and no run starts.
    state = wait_for("the partitions to mirror the table", lambda: (s := ui_state(url, keys))["missing"] == set(keys) and s, 60, processes)
    assert not state["materialized"] and len(sandbox.agents()) == agents_before
    wait_for("the report to list them as missing", lambda: all(f"| {name} | missing |" in report_attention(url) for name in names), 60, processes)

    # Materialize one selected partition ("Launch 1 run", the asset with its checks): its agent is created,
    # and its checks follow in a run of their own (checks_after_materialize_sensor).
    launch_run(url, "__ASSET_JOB", keys[0], selection=True)
    wait_for("one agent", lambda: ui_state(url, keys)["materialized"] == {keys[0]}, 90, processes)
    assert store.get(ids[0]).elevenlabs_agent_id and len(sandbox.agents()) == agents_before + 1
    wait_for("its checks", lambda: ui_state(url, keys)["check_passed"] == {keys[0]}, 60, processes)
    # The launchpad's launch of the whole provision_persona_agents job for one partition: followed up too.
    launch_run(url, "provision_persona_agents", keys[1], selection=False)
    wait_for("the launchpad run's checks", lambda: ui_state(url, keys)["check_passed"] == set(keys[:2]), 90, processes)
    assert ui_state(url, keys)["materialized"] == set(keys[:2])

    # The rest, as the backfill schedule would request them (ensure runs, the demo's path too).
    with dg.DagsterInstance.get() as instance:
        for request in missing_agent_run_requests(instance, PersonaStoreResource()):
            assert execute_run_request(instance, request).success
    assert ui_state(url, keys)["materialized"] == set(keys) and len(sandbox.agents()) == agents_before + 5

    # An agent is deleted on ElevenLabs; the verification turns its check red ...
    gone_key = keys[1]
    sandbox.delete_agent_directly(store.get(ids[1]).elevenlabs_agent_id)
    with dg.DagsterInstance.get() as instance:
        verify = range_run_request(keys, run_key=None, reason="verify agents", checks_only=True)
        execute_run_request(instance, verify)
    wait_for("the gone agent's check to show red", lambda: ui_state(url, keys)["check_failed"] == {gone_key}, 30, processes)
    assert gone_key not in ui_state(url, keys)["check_passed"]
    # ... the report names it with the reason ...
    wait_for("the report to name the gone agent", lambda: f"| {name_of[gone_key]} | gone | agent" in report_attention(url), 60, processes)

    # ... and it stays red across later automated runs (a new persona's creation; a persona with bad traits fails).
    [late] = store.add_personas([{"name": "Margaret", "temper_level": 0.5, "chattiness": 0.5, "emotional_attachment": 0.5}])
    with store.engine.begin() as connection:  # the application writes a bad value
        connection.exec_driver_sql(f"UPDATE personas SET chattiness = 7 WHERE id = {late}")
    wait_for("the new partition", lambda: str(late) in ui_state(url, [*keys, str(late)])["missing"], 60, processes)
    with dg.DagsterInstance.get() as instance:
        for request in missing_agent_run_requests(instance, PersonaStoreResource()):
            execute_run_request(instance, request)
    state = ui_state(url, keys)
    assert state["check_failed"] == {gone_key}
    assert str(late) in ui_state(url, [str(late)])["failed"]
    wait_for("the report to give the failed persona's reason",
             lambda: "| Margaret | invalid | chattiness" in report_attention(url), 60, processes)

    # A trait edit on a persona the schedule's path made shows stale (automation off: no update runs).
    edited_key = keys[2]
    with store.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE personas SET temper_level = 0.95, chattiness = 0.1 WHERE id = {ids[2]}")
    wait_for("the edited persona to show stale", lambda: ui_state(url, keys)["stale"] == {edited_key}, 60, processes)

    # One more persona arrives: a missing partition beside the failed and the stale ones, for the screenshots.
    [newcomer] = store.add_personas([{"name": "Alan", "temper_level": 0.5, "chattiness": 0.5, "emotional_attachment": 0.5}])
    wait_for("the newcomer's partition", lambda: str(newcomer) in ui_state(url, [str(newcomer)])["missing"], 60, processes)
    if CHROMIUM:  # into docs/ with PERSONA_AGENTS_SCREENSHOT_DIR=docs (the README shows them)
        shots, profile = Path(SCREENSHOT_DIR or tmp_path / "shots"), tmp_path / "shots-profile"
        shots.mkdir(parents=True, exist_ok=True)
        screenshot(f"{url}/asset-groups/persona_agents", shots / "lineage.png", profile)
        screenshot(f"{url}/assets/persona_agent?view=partitions", shots / "partitions.png", profile)
        # The partitions list has no stale filter; the edited persona's partition shows "Unsynced" when selected.
        screenshot(f"{url}/assets/persona_agent?view=partitions&partition={edited_key}", shots / "stale_partition.png", profile)
        screenshot(f"{url}/assets/agent_status_report", shots / "status_report.png", profile, height=2000)

    # One click on the red partitions repairs them (converge: the gone agent replaced, the drifted one updated).
    click_materialize(url, [gone_key, edited_key])

    def repaired():
        state = ui_state(url, keys)
        return not state["running"] and not state["stale"] and store.get(ids[1]).elevenlabs_agent_id and state

    wait_for("the repair", repaired, 90, processes)
    # The checks selected with the repair run right after it, in a run of their own that
    # checks_after_materialize_sensor requests: no verification by hand.
    state = wait_for("the repaired personas' checks to turn green",
                     lambda: (s := ui_state(url, keys))["check_passed"] == set(keys) and s, 90, processes)
    assert not state["check_failed"] and state["check_passed"] == set(keys)
    assert len(sandbox.agents()) == agents_before + 5 and not state["stale"]
    wait_for("the report to clear the gone agent", lambda: "gone" not in report_attention(url).split("| Margaret |")[0], 60, processes)
    assert deployment["api_key"] not in "".join(path.read_text() for path in deployment["logs"].iterdir())
