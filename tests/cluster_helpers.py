"""Drives `deploy/local-cluster` for the tests: a fresh Dagster database, state directory, port and broker queue
each time, against this machine's PostgreSQL, RabbitMQ and Redis (the caller skips where one does not answer),
so test runs and a user's cluster share the machine without taking each other's runs. Celery keeps each
task's result in Redis under the task's own id, so clusters may share the Redis database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import kombu
import requests
import yaml
from budget_helpers import REDIS_URL
from sqlalchemy import create_engine, make_url, text

from persona_agents_pipeline.sandbox.local_servers import free_port

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "local-cluster"
BROKER_URL = os.environ.get("PERSONA_AGENTS_TEST_BROKER_URL", "pyamqp://guest:guest@127.0.0.1:5672//")

RUNS_QUERY = ("query { runsOrError(limit: 500) { ... on Runs { results { runId jobName status startTime endTime "
              "tags { key value } } } } }")
STOP_SENSOR = """
query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { ... on Sensor { id } } }
"""


def rabbitmq_unavailable_reason() -> str | None:
    broker = urlsplit(BROKER_URL)
    try:
        socket.create_connection((broker.hostname, broker.port or 5672), timeout=2).close()
        return None
    except OSError as exc:
        return (f"no RabbitMQ broker answers at {broker.hostname}:{broker.port or 5672} ({exc}); "
                "set PERSONA_AGENTS_TEST_BROKER_URL")


def instance_yaml(*, run_launcher: str, pool_limit: int, granularity: str = "op") -> str:
    """deploy/dagster.yaml with the run launcher ('celery' or 'default') and the pool set as asked."""
    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    if run_launcher == "default":
        config.pop("run_launcher")
    config["concurrency"]["pools"].update(default_limit=pool_limit, granularity=granularity)
    return yaml.safe_dump(config)


class LocalCluster:
    def __init__(self, tmp_path: Path, postgres_server: str, instance: str, workspace: Path, env: dict[str, str]):
        self.state = tmp_path / "cluster"
        home = self.state / "dagster_home"
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text(instance)
        self.database = f"dagster_{uuid.uuid4().hex[:10]}"
        self.queue = f"dagster_test_{uuid.uuid4().hex[:10]}"
        self._admin_url = postgres_server
        self.port = free_port()
        self.env = {
            **os.environ, **env,
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": make_url(postgres_server).set(drivername="postgresql+psycopg2", database=self.database)
            .render_as_string(hide_password=False),
            "DAGSTER_CELERY_BROKER_URL": BROKER_URL,
            "DAGSTER_CELERY_QUEUE": self.queue,
            "DAGSTER_CELERY_BACKEND_URL": REDIS_URL,
            "LOCAL_CLUSTER_STATE": str(self.state),
            "LOCAL_CLUSTER_WORKSPACE": str(workspace),
            "LOCAL_CLUSTER_PORT": str(self.port),
        }

    def command(self, action: str) -> str:
        result = subprocess.run([str(SCRIPT), action], env=self.env, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr + self.logs()
        return result.stdout

    def logs(self) -> str:
        return "".join(f"\n--- {log.name}\n{log.read_text()[-3000:]}" for log in (self.state / "logs").glob("*.log"))

    def pid(self, name: str) -> int:
        return int((self.state / f"{name}.pid").read_text())

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(f"http://127.0.0.1:{self.port}/graphql", json={"query": query, "variables": variables},
                                 timeout=30)
        response.raise_for_status()
        return response.json()["data"]

    def runs(self) -> list[dict]:
        return self.graphql(RUNS_QUERY)["runsOrError"]["results"]

    def wait_for_runs(self, run_ids: list[str], timeout: float) -> list[dict]:
        """These runs once each has ended, in the order given."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = {run["runId"]: run for run in self.runs() if run["runId"] in run_ids}
            if len(runs) == len(run_ids) and all(run["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run in runs.values()):
                return [runs[run_id] for run_id in run_ids]
            time.sleep(0.5)
        raise AssertionError(f"runs did not finish in {timeout} s: {self.runs()}{self.logs()}")

    def stop_sensor(self, location: str, name: str) -> None:
        selector = {"repositoryLocationName": location, "repositoryName": "__repository__", "sensorName": name}
        sensor_id = self.graphql(STOP_SENSOR, {"selector": selector})["sensorOrError"]["id"]
        stopped = self.graphql("mutation($id: String) { stopSensor(id: $id) { __typename } }", {"id": sensor_id})
        assert stopped["stopSensor"]["__typename"] == "StopSensorMutationResult", stopped

    def restart_daemon(self, instance: str) -> None:
        """Other instance settings without a new cluster. What differs between them (run launcher, pool
        granularity) is read only where runs are dequeued and launched, by the daemon, and by each run
        (`DagsterInstance.get()` in the worker's task, or the instance the daemon passes on); the webserver
        only queues runs and reads them back, so it and the workers keep running."""
        settings = self.state / "dagster_home" / "dagster.yaml"
        if settings.read_text() == instance:
            return
        daemon = self.pid("daemon")
        os.killpg(daemon, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(daemon):
            assert time.monotonic() < deadline, f"the daemon did not stop within 60 s{self.logs()}"
            time.sleep(0.2)
        settings.write_text(instance)
        self.command("start")

    def __enter__(self) -> LocalCluster:
        self.command("start")
        return self

    def __exit__(self, *exc_info) -> None:
        self.command("stop")
        with kombu.Connection(BROKER_URL) as broker:
            broker.default_channel.queue_delete(self.queue)
        admin = create_engine(self._admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)"))
        admin.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end at the same instant as a start does not overlap)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, change in events:
        open_now += change
        peak = max(peak, open_now)
    return peak
