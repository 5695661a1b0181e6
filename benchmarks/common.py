"""Shared helpers: machine description, fast seeding, agent accounting, child-process timing."""

from __future__ import annotations

import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLI = str(Path(PYTHON).parent / "persona-agents")
CREATE_PATH = "/v1/convai/agents/create"
API_KEY = "sandbox-test-key"
# A section's report rows: add(measurement, value, shown, target, passed), passed None for no target.
AddRow = Callable[[str, Any, str, str, "bool | None"], None]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> dict[str, Any]:
    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception as exc:  # pragma: no cover - informational only
            return f"unavailable ({exc})"

    import dagster
    import sqlalchemy

    return {
        "nproc": run(["nproc"]),
        "free_h": run(["free", "-h"]),
        "cpu_model": next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
            platform.processor(),
        ) if Path("/proc/cpuinfo").exists() else platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dagster": dagster.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
        # The code measured: the commit plus any uncommitted changes in the tree at the time.
        "git_head": run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "git_uncommitted": [path for path in (line.split(maxsplit=1)[-1] for line in
                            run(["git", "-C", str(ROOT), "status", "--porcelain"]).splitlines())
                            if not path.startswith("benchmarks/")],
    }


def persona_row(n: int) -> tuple:
    return (
        f"Bench persona {n}",
        (n % 10) / 10,
        ((n * 3) % 10) / 10,
        ((n * 7) % 10) / 10,
        f"Benchmark persona number {n}.",
    )


def fresh_store(path: Path) -> str:
    """A migrated, empty SQLite persona store; returns its URL."""
    from persona_agents_pipeline.store import PersonaStore

    if path.exists():
        path.unlink()
    url = f"sqlite:///{path}"
    store = PersonaStore(url)
    store.upgrade()
    store.engine.dispose()
    return url


def seed(url: str, count: int, start: int = 0, *, with_agents_every: int = 0) -> None:
    """Bulk insert `count` valid personas with executemany (the change-log triggers still fire).

    with_agents_every=k gives every k-th persona a recorded agent (for status reports).
    """
    path = url.removeprefix("sqlite:///")
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    with sqlite3.connect(path) as db:
        for chunk in range(start, start + count, 10_000):
            rows = [persona_row(n) + (now, now) for n in range(chunk, min(chunk + 10_000, start + count))]
            db.executemany(
                "INSERT INTO personas (name, temper_level, chattiness, emotional_attachment, description, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        if with_agents_every:
            db.execute(
                "UPDATE personas SET elevenlabs_agent_id = 'agent_bench_' || id, voice_id = 'v', agent_created_at = ?"
                " WHERE id % ? != 0",
                (now, with_agents_every),
            )


def agent_accounting(url: str, sandbox_agents: Sequence[dict[str, Any]], expected: int) -> dict[str, Any]:
    """Exactly one agent per persona: in the store and on the (sandbox) API, matched by identity tag."""
    from persona_agents_pipeline.identity import identity_tag, parse_identity_tag

    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, elevenlabs_agent_id FROM personas").fetchall()
        [(installation_id,)] = db.execute("SELECT installation_id FROM persona_agents_installation").fetchall()
    per_persona: Counter[str] = Counter()
    for agent in sandbox_agents:
        for tag in agent.get("tags") or []:
            if parse_identity_tag(tag):
                per_persona[tag] += 1
    remote_ids = {agent["agent_id"] for agent in sandbox_agents}
    recorded = [agent_id for _pid, agent_id in rows if agent_id]
    missing_remote = [pid for pid, _a in rows if per_persona[identity_tag(installation_id, pid)] == 0]
    duplicated = [pid for pid, _a in rows if per_persona[identity_tag(installation_id, pid)] > 1]
    return {
        "personas": len(rows),
        "recorded_agents": len(recorded),
        "remote_agents": len(sandbox_agents),
        "personas_without_remote_agent": len(missing_remote),
        "personas_with_duplicate_agents": len(duplicated),
        "recorded_but_not_remote": sum(1 for a in recorded if a not in remote_ids),
        "exactly_one_each": (
            len(rows) == expected
            and len(recorded) == expected
            and len(sandbox_agents) == expected
            and not missing_remote
            and not duplicated
            and all(a in remote_ids for a in recorded)
        ),
    }


def throughput(times: list[float], launched: float, latency: float, count: int, rate: float) -> dict[str, Any]:
    """Launch-to-last-agent throughput (an agent exists once its create is answered: arrival + latency)."""
    if not times:
        return {"agents": 0, "seconds": None, "agents_per_s": 0.0}
    seconds = times[-1] + latency - launched
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
    return {
        "agents": len(times),
        "expected": count,
        "seconds": seconds,
        "agents_per_s": len(times) / seconds,
        "ratio_to_rate_limit": len(times) / seconds / rate,
        "steady_agents_per_s": steady,
        "steady_ratio_to_rate_limit": steady / rate if steady else None,
        "first_create_after_launch_s": times[0] - launched,
    }


def create_times(request_log) -> list[float]:
    """Arrival times (monotonic) of successful creates in a sandbox request log, sorted."""
    return sorted(r.arrived for r in request_log if r.method == "POST" and r.path == CREATE_PATH and r.status == 200)


def peak_rss_mb_self() -> float:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: after fork+exec that still holds the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


TIME = "/usr/bin/time"


def run_child(cmd: list[str], env: dict[str, str], *, stdout=subprocess.DEVNULL, timeout: float = 1800) -> dict[str, Any]:
    """Run a child process; wall time and its own peak RSS, bounded by `timeout`.

    Peak RSS comes from /usr/bin/time (%M): wait4's ru_maxrss of a direct child would include this
    (large) process's RSS, because Linux carries the forking parent's high-water mark across exec.
    """
    import tempfile

    # stderr goes to a file, not a pipe: Dagster logs a lot, and a full pipe would block the child.
    errfile = tempfile.TemporaryFile()
    rss_file = tempfile.NamedTemporaryFile(prefix="bench-rss-", delete=False)
    rss_file.close()
    measured = os.path.exists(TIME)
    full = [TIME, "-f", "%M", "-o", rss_file.name, *cmd] if measured else cmd
    started = time.monotonic()
    proc = subprocess.Popen(full, env=env, stdout=stdout, stderr=errfile, cwd=ROOT)
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    ended = time.monotonic()
    errfile.seek(0)
    stderr = errfile.read()[-20_000:].decode(errors="replace")
    errfile.close()
    peak = usage.ru_maxrss / 1024
    if measured:
        try:
            peak = int(Path(rss_file.name).read_text().split()[-1]) / 1024
        except (ValueError, IndexError):
            measured = False
    os.unlink(rss_file.name)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "started": started,
        "ended": ended,
        "wall_s": ended - started,
        "peak_rss_mb": peak,
        "peak_rss_source": "/usr/bin/time %M" if measured else "wait4 ru_maxrss (includes the parent's peak)",
        "returncode": proc.returncode,
        "stderr_tail": stderr[-2000:],
    }


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ELEVENLABS_", "PERSONAS_", "PERSONA_AGENTS_", "DAGSTER_"))}
    env.update(extra)
    return env


def sandbox_env(database_url: str, sandbox_url: str, rate: float, concurrent: int, **extra: str) -> dict[str, str]:
    """A child's environment: the personas database, the sandbox with the bench key, the client's limits."""
    return child_env(PERSONAS_DATABASE_URL=database_url, ELEVENLABS_BASE_URL=sandbox_url, ELEVENLABS_API_KEY=API_KEY,
                     ELEVENLABS_RATE_LIMIT=f"{rate:g}", ELEVENLABS_MAX_CONCURRENT=str(concurrent), **extra)


def run_worker(mode: str, out: Path, env: dict[str, str], *args: str, timeout: float = 1800) -> tuple[dict, dict]:
    """A `benchmarks.worker` child: what it wrote to `out`, and its timing (run_child)."""
    child = run_child([PYTHON, "-m", "benchmarks.worker", mode, str(out), *args], env, timeout=timeout)
    if child["returncode"] != 0 or not out.exists():
        raise RuntimeError(f"worker {mode} failed ({child['returncode']}):\n{child['stderr_tail']}")
    return json.loads(out.read_text()), child


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
