"""Reconciling agents with the personas: `plan`, `apply`, and each persona's `history` of agent changes."""

from __future__ import annotations

import json
import sys
from collections import Counter

import click

from ..display import plain
from ..provisioning import Outcome
from ..reconcile import Action, ChangeResult, Plan, apply_plan, build_plan
from ..store import PersonaNotFoundError
from .common import (confirm_or_refuse, friendly_errors, load_settings, open_store, out, progress_bar,
                     provisioning_service, stopping_on_ctrl_c)


def _print_skipped(plan: Plan) -> None:
    if plan.skipped:
        out.print(f"Skipped {len(plan.skipped)} listed agent(s) of unexpected shape (left as they are):")
    for agent in plan.skipped:
        out.print(f"  {plain(str(agent))}", markup=False, soft_wrap=True)


def _print_plan(plan: Plan) -> None:
    _print_skipped(plan)
    if not plan.changes:
        out.print(f"No changes: {plan.in_sync} persona(s) in sync.")
        return
    counts = plan.counts()
    summary = ", ".join(f"{counts[action.value]} {action.value}" for action in Action if counts[action.value])
    out.print(f"Plan: {summary}; {plan.in_sync} in sync.")
    for action in Action:
        changes = plan.of(action)
        if changes:
            out.print(f"\n{action.value} ({len(changes)}):")
        for change in changes:
            # markup=False: reasons quote persona data, which may contain rich markup brackets.
            line = f"  persona {change.persona_id:>8}  {change.agent_id or '-':<34}  {plain(change.reason)}"
            out.print(line, markup=False, soft_wrap=True)


@click.command("plan")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@friendly_errors
def plan_command(fmt: str) -> None:
    """Show what `apply` would do: create, update, replace, adopt and delete agents (changes nothing)."""
    plan = build_plan(provisioning_service(load_settings()))
    if fmt == "json":
        sys.stdout.write(json.dumps(plan.as_json(), indent=2) + "\n")
    else:
        _print_plan(plan)


@click.command("apply")
@click.option("--yes", "-y", is_flag=True, help="Delete orphaned and duplicate agents without asking.")
@friendly_errors
def apply_command(yes: bool) -> None:
    """Carry out the plan. Updates keep the agent id; deletes (only of this project's agents) need confirmation.

    Ctrl-C stops as in create-missing-agents: nothing new starts, no delete follows, exit 130."""
    settings = load_settings()
    service = provisioning_service(settings)
    plan = build_plan(service)
    _print_plan(plan)
    if not plan.actionable:
        return
    deletes = plan.of(Action.DELETE)
    if deletes:
        confirm_or_refuse(f"Apply this plan, deleting {len(deletes)} agent(s)?", yes)
    results: list[ChangeResult] = []

    def arrived(result: ChangeResult) -> None:
        results.append(result)
        progress.advance(task)

    with stopping_on_ctrl_c(service, summary=lambda: _print_applied(results, interrupted=len(plan.actionable))):
        with progress_bar("Applying") as progress:
            task = progress.add_task("apply", total=len(plan.actionable))
            apply_plan(service, plan, concurrency=settings.worker_threads, on_result=arrived)
    _print_applied(results)
    _print_skipped(plan)
    if any(not result.ok for result in results):
        sys.exit(1)


def _print_applied(results: list[ChangeResult], interrupted: int | None = None) -> None:
    """`interrupted`: the run was stopped, out of this many changes; those without a result were not started."""
    stopped = (Outcome.NOT_STARTED.value, Outcome.INTERRUPTED.value)
    done = Counter(result.change.action.value for result in results if result.ok)
    failed = [result for result in results if not result.ok and not result.detail.startswith(stopped)]
    summary = "Applied: " + ", ".join(f"{count} {action}" for action, count in sorted(done.items())) + f"; {len(failed)} failed"
    if interrupted is not None:
        summary += f"; {interrupted - sum(done.values()) - len(failed)} not done (interrupted)"
    out.print(summary + ".")
    for result in results:
        if result.change.action is Action.DELETE or result in failed:
            status = "ok" if result.ok else "failed"
            line = f"  {status} {result.change.action.value} persona {result.change.persona_id}: {plain(result.detail)}"
            out.print(line, markup=False, soft_wrap=True)


@click.command("history")
@click.argument("persona_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@friendly_errors
def history_command(persona_id: int, fmt: str) -> None:
    """Every change to the persona's agent (created, updated, replaced, adopted, deleted), with time and reason."""
    store = open_store(load_settings())
    events = store.history(persona_id)
    # Deleted personas keep their history, so only a persona with neither is unknown.
    if not events and store.get(persona_id) is None:
        raise PersonaNotFoundError(persona_id)
    rows = [
        {"at": event.at.isoformat(timespec="seconds") + "Z", "action": event.action, "agent_id": event.agent_id, "reason": event.reason}
        for event in events
    ]
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif not rows:
        out.print(f"No agent changes recorded for persona {persona_id}.")
    else:
        for row in rows:
            line = f"{row['at']}  {row['action']:<9}  {row['agent_id'] or '-':<34}  {plain(row['reason'])}"
            out.print(line, markup=False, soft_wrap=True)

