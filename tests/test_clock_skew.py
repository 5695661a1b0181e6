"""Hosts whose clocks disagree share claims and the API budget: every lease and pause is on the shared store's
clock, so a host whose own clock runs fast neither steals live claims or slots nor stalls everyone else."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

import pytest
from budget_helpers import TEST_ACCOUNT as ACCOUNT
from budget_helpers import SlotTakers
from budget_helpers import budget_url  # noqa: F401  (fixture)

import persona_agents_pipeline.models
import persona_agents_pipeline.store
from persona_agents_pipeline.client_factory import budget_backend
from persona_agents_pipeline.elevenlabs.budget import SharedBudget
from persona_agents_pipeline.models import utcnow
from test_store import _persona


@contextmanager
def host_running_fast(seconds: float) -> Iterator[None]:
    """Inside the block, this process is a host whose clock runs `seconds` fast (every local clock it reads)."""
    patch = pytest.MonkeyPatch()
    real_time, real_utcnow = time.time, utcnow
    patch.setattr(time, "time", lambda: real_time() + seconds)
    for module in (persona_agents_pipeline.models, persona_agents_pipeline.store):
        patch.setattr(module, "utcnow", lambda: real_utcnow() + timedelta(seconds=seconds), raising=False)
    try:
        yield
    finally:
        patch.undo()


def test_a_host_90_s_fast_cannot_take_a_live_claim(store):
    [persona_id] = store.add_personas([_persona()])
    assert store.try_claim(persona_id, "host-a", timedelta(seconds=60)).acquired
    with host_running_fast(90):
        assert not store.try_claim(persona_id, "host-b", timedelta(seconds=60)).acquired
    assert store.get(persona_id).agent_claim_owner == "host-a"


def test_a_fast_host_writes_its_claim_leases_on_the_database_clock(store):
    [persona_id] = store.add_personas([_persona()])
    with host_running_fast(120):
        assert store.try_claim(persona_id, "fast-host", timedelta(seconds=60)).acquired
        assert store.renew_claims("fast-host", timedelta(seconds=60)) == 1
    expires = store.get(persona_id).agent_claim_expires_at
    real_now = utcnow()  # the module's own function: the real clock
    assert real_now + timedelta(seconds=50) < expires < real_now + timedelta(seconds=70)


def _budget(url: str) -> SharedBudget:
    return SharedBudget(budget_backend(url), ACCOUNT, concurrency_ceiling=1, interactive_reserve=0)


def test_a_host_90_s_fast_cannot_take_a_slot_another_host_holds(budget_url):
    holder = _budget(budget_url)
    with SlotTakers() as takers:
        assert takers.got_within(holder, 20)
        with host_running_fast(90):
            fast = _budget(budget_url)
            assert not takers.got_within(fast, 1.0), "the fast host took the only slot, held by a live request"


def test_a_retry_after_of_one_second_from_a_host_120_s_fast_pauses_everyone_about_a_second(budget_url):
    normal = _budget(budget_url)
    with host_running_fast(120):
        _budget(budget_url).pause(1.0)
    with SlotTakers() as takers:
        assert takers.got_within(normal, 15), "a one-second pause from a fast host stalled the other hosts"
