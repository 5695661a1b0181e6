"""Section `converge`: what a Materialize in mode converge costs for personas that already have agents."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from .common import API_KEY, AddRow, agent_accounting, fresh_store, log, seed


def _client(database_url: str, sandbox_url: str, rate: float, concurrent: int):
    """A client with a limiter of its own, outside the shared budget: the passes measure this process alone."""
    from persona_agents_pipeline.client_factory import build_client
    from persona_agents_pipeline.config import BUDGET_OFF, Settings

    settings = Settings(database_url, base_url=sandbox_url, rate_limit=rate, max_concurrent=concurrent, budget_url=BUDGET_OFF)
    return build_client(settings, api_key=API_KEY)


def measure(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """What a Materialize (mode converge) of personas that already have agents costs, against ensure (which
    trusts the database): one GET each, plus a replace for each agent deleted upstream."""
    from persona_agents_pipeline.provisioning import ProvisioningService
    from persona_agents_pipeline.sandbox import SandboxServer
    from persona_agents_pipeline.store import PersonaStore
    from persona_agents_pipeline.voice_policy import DEFAULT_VOICE_CATALOGUE

    n, rate, conc = cfg["converge_personas"], cfg["rate_limit"], cfg["max_concurrent"]
    log(f"converge: {n} personas with agents, then ensure / converge / converge with 10% deleted upstream")
    url = fresh_store(work / "converge.db")
    seed(url, n)
    store = PersonaStore(url)
    out: dict[str, Any] = {"personas": n}
    with SandboxServer() as sandbox:  # created without limits; the measured passes run under them
        with _client(url, sandbox.url, 1000, 16) as client:
            ProvisioningService(store, client, DEFAULT_VOICE_CATALOGUE).provision_many(store.ids_without_agents(), concurrency=16)
        sandbox.configure(latency=cfg["latency_s"], rate_limit=rate, max_concurrent=conc)
        ids = [persona.id for persona in store.with_agents()]
        with _client(url, sandbox.url, rate, conc) as client:
            service = ProvisioningService(store, client, DEFAULT_VOICE_CATALOGUE, replace_lost_agents=True)

            def timed(name: str, operation=None) -> None:
                seen = len(sandbox.request_log())
                started = time.monotonic()
                results = service.provision_many(ids, concurrency=conc, operation=operation)
                seconds = time.monotonic() - started
                methods = Counter(record.method for record in sandbox.request_log()[seen:])
                out[name] = {"seconds": seconds, "personas_per_s": n / seconds, "requests_by_method": dict(methods),
                             "outcomes": dict(Counter(result.outcome.value for result in results))}

            timed("ensure")
            timed("converge", service.converge_agent)
            for agent_id in [store.get(pid).elevenlabs_agent_id for pid in ids[:: 10]]:
                sandbox.delete_agent_directly(agent_id)
            timed("converge_10pct_gone", service.converge_agent)
        out["accounting"] = agent_accounting(url, sandbox.agents(), n)
    store.engine.dispose()
    out["converge"]["ratio_to_rate_limit"] = out["converge"]["personas_per_s"] / rate
    return out


def target_rows(results: dict[str, Any], cfg: dict[str, Any], add: AddRow) -> None:
    cv = results.get("converge")
    if not cv:
        return
    c, g = cv["converge"], cv["converge_10pct_gone"]
    add(f"converging {cv['personas']} existing personas (Materialize, mode converge)", c["seconds"],
        f"{c['seconds']:.1f} s = {c['personas_per_s']:.2f}/s ({c['ratio_to_rate_limit']:.0%} of the limit; "
        f"{c['requests_by_method'].get('GET', 0) / cv['personas']:.2f} GET each) vs ensure {cv['ensure']['seconds']:.2f} s, no request",
        "(cost reported)", None)
    add("converge with 10% deleted upstream", g["seconds"],
        f"{g['seconds']:.1f} s, outcomes {g['outcomes']}, exactly one each: {cv['accounting']['exactly_one_each']}",
        "replaced, none duplicated", cv["accounting"]["exactly_one_each"])
