"""Running everything locally: the ElevenLabs `sandbox` server and the `demo` of the whole pipeline."""

from __future__ import annotations

from pathlib import Path

import click

from .agents import list_agent_status
from .common import friendly_errors, out


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback by default).")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--api-key", "api_keys", multiple=True, default=["sandbox-test-key"], show_default=True)
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Keep agents in this file across restarts.")
@click.option("--latency", type=float, default=0.0, show_default=True, help="Seconds added to every request.")
@click.option("--rate-limit", type=float, default=None, help="Requests per second before 429.")
@click.option("--max-concurrent", type=int, default=None, help="Concurrent requests before 429.")
@click.option("--retry-after/--no-retry-after", default=True, show_default=True, help="Send Retry-After on 429.")
@click.option("--error-rate", type=float, default=0.0, show_default=True, help="Fraction of requests answered 5xx.")
@click.option("--drop-after-create-rate", type=float, default=0.0, show_default=True, help="Fraction of creates whose response is dropped after the agent exists.")
@click.option("--drop-delete-response-rate", type=float, default=0.0, show_default=True, help="Fraction of DELETEs carried out but never answered.")
@click.option("--search-fault", type=click.Choice(["non_json", "400", "401", "429", "timeout"]), default=None, help="How adoption searches (agent lists with `search`) fail.")
@click.option("--search-fault-rate", type=float, default=1.0, show_default=True, help="Fraction of searches that fail so.")
@click.option("--seed", type=int, default=None)
def sandbox(**options) -> None:
    """Run the local ElevenLabs sandbox (agents and voices API) until interrupted."""
    from ..sandbox.server import run_sandbox

    run_sandbox(on_ready=lambda url: out.print(f"ElevenLabs sandbox listening on {url} (Ctrl-C stops it)"), **options)


@click.command("demo")
@click.option("--personas", "count", type=click.IntRange(min=1), default=25, show_default=True)
@friendly_errors
def demo(count: int) -> None:
    """The main job on the embedded default: local sandbox, SQLite store, demo personas, the Dagster pipeline."""
    from ..demo import dagster_home, run_demo

    counts = run_demo(count, out.print)
    out.print("Status: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
    # The demo's sandbox is gone by now; the report just checked every agent, so the database alone is current.
    click.get_current_context().invoke(list_agent_status, fmt="table", check_remote=False)
    out.print("\nSee it in the Dagster UI: paste these two lines, then open http://127.0.0.1:3000")
    # soft_wrap: a long path must stay one line when copied, whatever the terminal's width.
    out.print(f"export DAGSTER_HOME={dagster_home()}\n.venv/bin/dagster dev", soft_wrap=True, highlight=False)
