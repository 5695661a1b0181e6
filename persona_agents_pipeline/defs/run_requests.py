"""Partition keys -> contiguous spans -> run requests: the one way every sensor and schedule asks for runs.

Dagster runs a contiguous range of dynamic partitions (in the order they were registered), named by two
run tags. Wanted keys are grouped into spans of that order, at most RUN_BATCH_SIZE partitions each.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import dagster as dg

from .assets import persona_agent
from .checks import persona_agent_checks
from .dagster_internals import range_tags
from .jobs import PROVISION_JOB
from .partitions import RUN_BATCH_SIZE


def mode_config(mode: str) -> dict:
    """Run config choosing persona_agent's mode (PersonaAgentConfig)."""
    return {"ops": {persona_agent.op.name: {"config": {"mode": mode}}}}


ENSURE_RUN_CONFIG = mode_config("ensure")  # create missing agents, trust recorded ones
UPDATE_RUN_CONFIG = mode_config("update")  # bring drifted agents to their traits in place


def range_run_request(
    keys: Sequence[str], run_key: str | None, reason: str, run_config: dict | None = None, *, checks_only: bool = False
) -> dg.RunRequest:
    """One run of provision_persona_agents over the partition range keys[0]..keys[-1] (keys contiguous in
    the partitions' order): the asset without its checks, or (checks_only) the checks alone."""
    return dg.RunRequest(
        run_key=run_key,
        job_name=PROVISION_JOB,
        run_config=run_config or {},
        asset_selection=[] if checks_only else [persona_agent.key],
        # The checks GET every agent again, halving throughput; automated runs leave them to the
        # `verify_agents` schedule. A materialization launched from the UI selects them; they are skipped in
        # its run (the asset has no output) and run right after it (checks_after_materialize.py).
        asset_check_keys=list(persona_agent_checks.check_keys) if checks_only else [],
        tags={**range_tags(keys[0], keys[-1]), "persona_agents/reason": reason, "persona_agents/batch_size": str(len(keys))},
    )


def spans(positions: Sequence[int], max_span: int, *, contiguous: bool = False) -> list[tuple[int, int]]:
    """Group sorted positions into (first, last) spans no wider than max_span partitions.

    Grouping scattered missing personas into a few wide ranges keeps the run count near missing/max_span
    instead of one run per gap; personas in a span that already have an agent are cheap no-ops in ensure
    mode (one database read, no API call). `contiguous`: only neighbouring positions share a span, so no
    run touches a partition not asked for.
    """
    groups: list[tuple[int, int]] = []
    for position in positions:
        if groups and position - groups[-1][0] < max_span and (not contiguous or position == groups[-1][1] + 1):
            groups[-1] = (groups[-1][0], position)
        else:
            groups.append((position, position))
    return groups


def span_run_requests(
    ordered_keys: Sequence[str],
    wanted: Iterable[str],
    *,
    reason: str,
    run_key: str | None = None,
    contiguous: bool = False,
    max_span: int = RUN_BATCH_SIZE,
    **request_options,
) -> list[dg.RunRequest]:
    """Range runs covering the `wanted` keys, spans of `ordered_keys` (the partitions in registration order).
    `run_key`: a template with {first} and {last}, the span's end keys (None: no run key)."""
    position = {key: index for index, key in enumerate(ordered_keys)}
    positions = sorted(position[key] for key in wanted if key in position)
    return [
        range_run_request(
            ordered_keys[first : last + 1],
            run_key=run_key.format(first=ordered_keys[first], last=ordered_keys[last]) if run_key else None,
            reason=reason,
            **request_options,
        )
        for first, last in spans(positions, max_span, contiguous=contiguous)
    ]
