"""Execute a sensor's or schedule's run request in this process, as the daemon would launch it.

Used by `persona-agents demo` (no daemon needed), the benchmarks and the tests.
"""

from __future__ import annotations

import dagster as dg

from .definitions import defs
from .defs.jobs import PROVISION_JOB


def execute_run_request(
    instance: dg.DagsterInstance,
    request: dg.RunRequest,
    run_config: dict | None = None,
    definitions: dg.Definitions = defs,
) -> dg.ExecuteInProcessResult:
    """Run exactly what the request selects (its assets, and its checks where it names them), in its named
    job of `definitions` (the project's, or ones built with other resources)."""
    job = definitions.resolve_job_def(request.job_name or PROVISION_JOB)
    if request.asset_check_keys is not None:  # the request names its checks (possibly none)
        job = job.get_subset(
            asset_selection=set(request.asset_selection or []), asset_check_selection=set(request.asset_check_keys)
        )
    return job.execute_in_process(
        instance=instance,
        asset_selection=None if request.asset_check_keys is not None else list(request.asset_selection or []) or None,
        tags=dict(request.tags),
        run_config={**(request.run_config or {}), **(run_config or {})},
        raise_on_error=False,
    )
