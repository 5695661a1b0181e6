"""End to end: dagster-daemon and dagster-webserver as real processes, the sandbox, a temp DAGSTER_HOME.

The sensor (on, since auto-creation is on) picks up new personas; we watch its runs through the
webserver's GraphQL API, then load the asset page in headless Chromium and look for the partitions.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from persona_agents_pipeline.sandbox import SandboxServer
from persona_agents_pipeline.store import PersonaStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
PERSONAS = 20

INSTANCE_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str) -> dict:
    response = requests.post(f"{url}/graphql", json={"query": query}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def wait_for(what: str, probe, timeout: float, processes=()):
    """Poll `probe` until it returns a truthy value; fail with the last value after `timeout` seconds."""
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


@pytest.fixture
def deployment(tmp_path, request):
    auto_create = getattr(request, "param", "true")
    api_key = f"sk-e2e-{uuid.uuid4().hex}"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
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
            "AUTO_CREATE_ELEVENLABS_AGENTS": auto_create,
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


def test_sensor_runs_create_agents_and_the_ui_shows_the_partitions(deployment, tmp_path):
    url, store, sandbox = deployment["url"], deployment["store"], deployment["sandbox"]
    ids = store.add_personas(
        [{"name": f"E2E {n}", "temper_level": n / PERSONAS, "chattiness": 0.5, "emotional_attachment": 0.3} for n in range(PERSONAS)]
    )

    def sensor_runs_done():
        stats = graphql(url, PARTITIONS_QUERY)["assetNodeOrError"]["partitionStats"]
        runs = graphql(url, RUNS_QUERY)["runsOrError"]["results"]
        mine = [run for run in runs if {"key": "dagster/sensor_name", "value": "new_personas_sensor"} in run["tags"]]
        if [run for run in mine if run["status"] in {"FAILURE", "CANCELED"}]:
            pytest.fail(f"a sensor run failed: {mine}")
        finished = mine and all(run["status"] == "SUCCESS" for run in mine)
        return (stats, mine) if finished and stats and stats["numMaterialized"] == PERSONAS else None

    stats, sensor_runs = wait_for("the sensor's runs to succeed", sensor_runs_done, 75, deployment["processes"])
    assert stats["numPartitions"] == PERSONAS and stats["numFailed"] == 0
    assert len(sensor_runs) < PERSONAS, "the sensor must batch personas into few runs"
    assert len(sandbox.agents()) == PERSONAS
    assert store.ids_without_agents() == []
    assert deployment["api_key"] not in "".join(path.read_text() for path in deployment["logs"].iterdir())

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
    assert f"Materialized ({PERSONAS})" in dom, f"partition counts not shown; DOM saved to {tmp_path / 'asset_page.html'}"
    assert "Failed (0)" in dom and "Missing (0)" in dom
    shown = [persona_id for persona_id in ids if f'title="{persona_id}"' in dom]
    assert len(shown) >= min(10, PERSONAS), f"persona keys shown on the page: {shown}"


BACKFILL_MUTATION = """
mutation {
  launchPartitionBackfill(backfillParams: {assetSelection: [{path: ["persona_agent"]}], allPartitions: true}) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""

BACKFILL = 200


@pytest.mark.parametrize("deployment", ["false"], indirect=True)
def test_backfill_of_200_partitions_runs_as_a_handful_of_runs(deployment, monkeypatch):
    """The real asset-backfill machinery (daemon) with the asset's BackfillPolicy, sensor off."""
    import dagster as dg

    url, store, sandbox = deployment["url"], deployment["store"], deployment["sandbox"]
    ids = store.add_personas(
        [{"name": f"B {n}", "temper_level": 0.2, "chattiness": 0.8, "emotional_attachment": 0.5} for n in range(BACKFILL)]
    )
    monkeypatch.setenv("DAGSTER_HOME", str(deployment["home"]))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("personas", [str(i) for i in ids])

    launched = graphql(url, BACKFILL_MUTATION)["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def backfill_done():
        stats = graphql(url, PARTITIONS_QUERY)["assetNodeOrError"]["partitionStats"]
        runs = graphql(url, RUNS_QUERY)["runsOrError"]["results"]
        mine = [run for run in runs if {"key": "dagster/backfill", "value": backfill_id} in run["tags"]]
        if [run for run in mine if run["status"] in {"FAILURE", "CANCELED"}]:
            pytest.fail(f"a backfill run failed: {mine}")
        finished = mine and all(run["status"] == "SUCCESS" for run in mine)
        return mine if finished and stats["numMaterialized"] == BACKFILL else None

    runs = wait_for("the backfill to finish", backfill_done, 80, deployment["processes"])
    print(f"backfill of {BACKFILL} partitions ran as {len(runs)} run(s)")
    assert len(runs) <= 5, f"{BACKFILL} partitions became {len(runs)} runs"
    assert len(sandbox.agents()) == BACKFILL and store.ids_without_agents() == []
