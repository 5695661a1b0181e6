"""The shared API budget on each backend: the in-flight cap across processes, interactive priority, leases
that a killed process cannot keep, and the adaptive concurrency."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from concurrent.futures import ThreadPoolExecutor

import pytest
from budget_helpers import TEST_ACCOUNT as ACCOUNT
from budget_helpers import budget_url  # noqa: F401  (fixture)
from budget_helpers import forget_rate_fields, wipe_shared_state

from persona_agents_pipeline.client_factory import budget_backend
from persona_agents_pipeline.config import ConfigurationError
from persona_agents_pipeline.elevenlabs.budget import Priority, SharedBudget
from persona_agents_pipeline.elevenlabs.client import ElevenLabsClient
from persona_agents_pipeline.elevenlabs.store_clock import StoreClock
from persona_agents_pipeline.sandbox import SandboxServer

def make_budget(url: str, priority: Priority = Priority.BATCH, **options) -> SharedBudget:
    return SharedBudget(budget_backend(url), ACCOUNT, priority=priority, **options)


class Holders:
    """Threads that each take a slot and keep it until released; counts how many hold one at once."""

    def __init__(self, budget: SharedBudget, count: int) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.holding = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._hold, args=(budget,), daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _hold(self, budget: SharedBudget) -> None:
        with budget.slot():
            with self._lock:
                self.holding += 1
            self.entered.release()
            self.release.wait(30)
            with self._lock:
                self.holding -= 1

    def wait_for(self, count: int) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=20), "a holder never got a slot"

    def finish(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(30)


def test_batch_callers_leave_the_reserve_to_interactive_ones_who_get_in_at_once(budget_url):
    interactive = make_budget(budget_url, Priority.INTERACTIVE, concurrency_ceiling=4, interactive_reserve=0.25)
    with interactive.slot():  # an application process is about: from now on the reserve is kept
        pass
    batch = make_budget(budget_url, concurrency_ceiling=4, interactive_reserve=0.25)
    holders = Holders(batch, 6)  # more batch work than the budget allows
    holders.wait_for(3)
    try:
        # Batch saturates at 3 of 4: the 4th slot is the interactive reserve, however many batch callers wait.
        assert batch.backend.held_slots(ACCOUNT, time.time()) == 3
        assert holders.holding == 3
        got_in = threading.Event()

        def ask() -> None:
            with interactive.slot():
                got_in.set()

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        # The batch holders release nothing until told; the interactive caller must get in regardless.
        assert got_in.wait(10), "an interactive caller waited behind a saturated batch"
        asker.join(10)
    finally:
        holders.finish()
    assert batch.backend.held_slots(ACCOUNT, time.time()) == 0


def test_without_interactive_callers_about_a_backfill_uses_the_whole_budget(budget_url):
    batch = make_budget(budget_url, concurrency_ceiling=4, interactive_reserve=0.25)
    holders = Holders(batch, 6)
    try:
        holders.wait_for(4)
        assert batch.backend.held_slots(ACCOUNT, time.time()) == 4
    finally:
        holders.finish()


def test_two_processes_never_exceed_the_shared_concurrency(budget_url, tmp_path):
    marks = tmp_path / "marks"
    script = f"""
import os, sys, time, threading
from persona_agents_pipeline.client_factory import budget_backend
from persona_agents_pipeline.config import ConfigurationError
from persona_agents_pipeline.elevenlabs.budget import SharedBudget
budget = SharedBudget(budget_backend({budget_url!r}), {ACCOUNT!r}, concurrency_ceiling=3, interactive_reserve=0)
def work():
    for _ in range(15):
        with budget.slot():
            with open({str(marks)!r}, "a") as out:
                out.write(f"+ {{time.time()!r}}\\n")
            time.sleep(0.01)
            with open({str(marks)!r}, "a") as out:
                out.write(f"- {{time.time()!r}}\\n")
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
"""
    processes = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in processes:
        _, errors = process.communicate(timeout=120)
        assert process.returncode == 0, errors
    events = sorted((float(stamp), +1 if sign == "+" else -1) for sign, stamp in
                    (line.split() for line in marks.read_text().splitlines()))
    assert len(events) == 2 * 2 * 4 * 15
    in_flight = peak = 0
    for _, change in sorted(events, key=lambda event: (event[0], event[1])):  # a release before a take at a tie
        in_flight += change
        peak = max(peak, in_flight)
    assert peak <= 3
    assert peak == 3, "the load must actually reach the limit for the test to mean anything"


def test_a_killed_holder_gives_its_slots_back_within_one_lease(budget_url):
    lease = 2.0
    script = f"""
import sys, threading
from persona_agents_pipeline.client_factory import budget_backend
from persona_agents_pipeline.config import ConfigurationError
from persona_agents_pipeline.elevenlabs.budget import SharedBudget
budget = SharedBudget(budget_backend({budget_url!r}), {ACCOUNT!r}, concurrency_ceiling=3, interactive_reserve=0,
                      lease_seconds={lease})
ready = threading.Semaphore(0)
def hold():
    with budget.slot():
        ready.release()
        threading.Event().wait()
for _ in range(3):
    threading.Thread(target=hold, daemon=True).start()
for _ in range(3):
    ready.acquire()
print("holding", flush=True)
threading.Event().wait()
"""
    victim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline().strip() == "holding"
        budget = make_budget(budget_url, concurrency_ceiling=3, interactive_reserve=0, lease_seconds=lease)
        assert budget.backend.held_slots(ACCOUNT, time.time()) == 3
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        victim.kill()
        victim.wait()
    holders = Holders(budget, 3)
    try:
        holders.wait_for(3)
        back_after = time.monotonic() - killed_at
    finally:
        holders.finish()
    assert back_after <= lease + 1.0, f"slots came back {back_after:.1f} s after the kill (lease {lease} s)"


def test_concurrent_429s_cut_once_and_quiet_time_grows_back(budget_url, monkeypatch):
    budget = make_budget(budget_url, concurrency_ceiling=8)
    budget.observe_limit(8, "account")
    for _ in range(5):  # five threads hitting the same limit at once are one signal
        budget.concurrency_exceeded()
    assert budget.state(fresh=True).concurrency == 6
    budget.succeeded()
    assert budget.state(fresh=True).concurrency == 6, "no growth right after a cut"
    later = time.time() + 10
    monkeypatch.setattr(StoreClock, "__call__", lambda clock: later)  # the shared clock, 10 s on
    budget.succeeded()
    assert budget.state(fresh=True).concurrency == 7


def test_the_header_outranks_the_account_figure_and_the_configured_ceiling_caps_both(budget_url):
    budget = make_budget(budget_url, concurrency_ceiling=12)
    budget.observe_limit(10, "account")
    assert (budget.state(fresh=True).account_limit, budget.state().source) == (10, "account")
    budget.observe_limit(15, "header")
    assert (budget.state(fresh=True).account_limit, budget.state().source) == (12, "header")
    budget.observe_limit(5, "plan")  # weaker evidence never overrides stronger
    assert budget.state(fresh=True).account_limit == 12


def test_a_budget_whose_shared_state_vanished_starts_over_instead_of_failing(budget_url):
    budget = make_budget(budget_url, concurrency_ceiling=6)
    budget.observe_limit(4, "header")
    other_process = make_budget(budget_url, concurrency_ceiling=6)
    wipe_shared_state(budget)
    with other_process.slot():  # would fail on the missing state before
        pass
    assert budget.state(fresh=True) == other_process.state(fresh=True)
    assert (budget.state().account_limit, budget.state().source) == (6, "configuration")
    budget.observe_limit(4, "header")  # the next response teaches the account's limit again
    assert (budget.state(fresh=True).account_limit, budget.state().source) == (4, "header")


@pytest.mark.parametrize("url", ["redis://user:s3cret@127.0.0.1:1/0", "postgresql://user:s3cret@127.0.0.1:1/db"])
def test_a_budget_store_that_does_not_answer_is_a_clear_error_without_the_password(url):
    with pytest.raises(ConfigurationError) as caught:
        budget_backend(url)
    assert "PERSONA_AGENTS_BUDGET_URL" in str(caught.value) and "127.0.0.1:1" in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("bad", [0, -1])
def test_a_nonsense_ceiling_is_refused(bad, sqlite_url):
    with pytest.raises(ValueError):
        make_budget(sqlite_url, concurrency_ceiling=bad)


def starts_per_second_peak(times: list[float]) -> int:
    """The most starts any 1-second interval holds (intervals beginning at a start are the worst ones)."""
    times = sorted(times)
    peak, last = 0, 0
    for first, at in enumerate(times):
        while last < len(times) and times[last] < at + 1.0:
            last += 1
        peak = max(peak, last - first)
    return peak


def request_starts(*budgets, threads: int, each: int) -> list[float]:
    """When each slot began: `threads` threads per budget take `each` slots, all drawing at once."""
    times: list[float] = []
    lock = threading.Lock()

    def start_many(budget) -> None:
        for _ in range(each):
            with budget.slot():
                with lock:
                    times.append(time.monotonic())

    workers = [threading.Thread(target=start_many, args=(budget,)) for budget in budgets for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    return times


def test_a_rate_above_the_ring_size_still_holds_in_every_second(budget_url):
    rate = 250  # three windows of 83 starts each
    budget = make_budget(budget_url, rate_per_second=rate, concurrency_ceiling=8)
    times = request_starts(budget, threads=6, each=150)
    assert len(times) == 900
    assert starts_per_second_peak(times) <= rate


def test_batch_starts_are_paced_not_let_through_as_a_burst(budget_url):
    rate = 20
    processes = [make_budget(budget_url, rate_per_second=rate, concurrency_ceiling=8) for _ in range(2)]
    times = sorted(request_starts(*processes, threads=4, each=5))
    assert len(times) == 40
    # Before, the whole ring's 20 starts left at once, then again a window later. Paced, any 20 consecutive
    # starts span 19 gaps of 52.5 ms (1.05 s / 20): 1.0 s, less whatever delayed noting the first of them.
    assert min(later - first for first, later in zip(times, times[rate - 1:])) > 0.75, times
    assert starts_per_second_peak(times) <= rate


def test_a_start_that_stalls_past_its_reservation_moves_so_the_next_keeps_a_whole_window(budget_url, monkeypatch):
    stalling, other = (make_budget(budget_url, rate_per_second=1) for _ in range(2))
    take_start = stalling.backend.take_start

    def take_start_then_stall(*args):
        reserved = take_start(*args)
        time.sleep(0.3)  # a garbage collection, a starved CPU
        return reserved

    monkeypatch.setattr(stalling.backend, "take_start", take_start_then_stall)
    with stalling.slot():
        sent = time.monotonic()
    monkeypatch.undo()  # the two may share one backend object
    with other.slot():
        next_sent = time.monotonic()
    # The start was reserved 0.3 s before the request went: unmoved, the next one went 0.75 s after it.
    assert next_sent - sent > 0.9


def test_a_very_high_configured_rate_keeps_the_shared_ring_small(sqlite_url):
    from sqlalchemy import create_engine, text

    budget = make_budget(sqlite_url, rate_per_second=1_000_000)
    for _ in range(3):
        with budget.slot():
            pass
    engine = create_engine(sqlite_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT count(*) FROM persona_agents_budget_starts")).scalar()
    engine.dispose()
    budget.backend.close()
    # One row per ring entry: a million-entry ring made every request scan a million rows.
    assert 0 < rows <= 100


def test_a_configured_rate_above_the_servers_is_cut_for_every_process_until_its_429s_stop(sqlite_url):
    configured, server_limit, requests = 10, 9, 90  # every process is configured a little above the server's limit
    with SandboxServer(rate_limit=server_limit) as sandbox:
        agent_id = sandbox.create_agent_directly({"conversation_config": {}})
        budgets = [make_budget(sqlite_url, rate_per_second=configured, concurrency_ceiling=3) for _ in range(2)]
        clients = [ElevenLabsClient("sandbox-test-key", sandbox.url, limiter=budget) for budget in budgets]
        # Two budgets on one store, as two processes would be, each with a few threads of its own.
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda index: clients[index % 2].get_agent(agent_id), range(requests)))
        for client in clients:
            client.close()
        log = [record for record in sandbox.request_log() if "/agents/" in record.path]
    rate_limited = [record.arrived - log[0].arrived for record in log if record.status == 429]
    assert sum(record.status == 200 for record in log) == requests
    assert rate_limited, "the configured rate must exceed the server's for the test to mean anything"
    # Before, the ring kept its 10 entries: a 429 and a Retry-After pause for everyone every second or so, to
    # the end. Now the first cut (a second one on a loaded machine, whose scheduling delays eat the margin) ends them.
    assert len(rate_limited) <= 3 and rate_limited[-1] < (log[-1].arrived - log[0].arrived) / 2, rate_limited
    assert budgets[0].state(fresh=True).rate <= 9.0 + 1e-9, "the cut is shared"


def test_rate_429s_cut_the_shared_rate_once_per_window_never_below_a_quarter_and_quiet_time_grows_it(
        budget_url, monkeypatch):
    one, other = (make_budget(budget_url, rate_per_second=10) for _ in range(2))
    with ThreadPoolExecutor(8) as pool:  # every thread of both processes meets the same 429 at once: one signal
        list(pool.map(lambda index: (one, other)[index % 2].rate_exceeded(), range(8)))
    assert other.state(fresh=True).rate == pytest.approx(9.0)
    now = time.time()
    for step in range(1, 20):  # one 429 per window, long enough for the rate to reach its floor
        monkeypatch.setattr(StoreClock, "__call__", lambda clock: now + 2.0 * step)
        one.rate_exceeded()
    assert other.state(fresh=True).rate == pytest.approx(2.5)
    other.succeeded()
    assert one.state(fresh=True).rate == pytest.approx(2.5), "no growth right after a cut"
    monkeypatch.setattr(StoreClock, "__call__", lambda clock: now + 80.0)
    other.succeeded()
    assert one.state(fresh=True).rate == pytest.approx(3.0), "a quiet spell gives back 5% of the configured rate"


def test_a_cut_rate_above_the_ring_size_holds_in_every_second(budget_url):
    rate = 250  # three windows of 83 starts each; cut to 225, of 75 each
    budget = make_budget(budget_url, rate_per_second=rate, concurrency_ceiling=8)
    budget.rate_exceeded()
    times = request_starts(budget, threads=6, each=100)
    assert len(times) == 600
    assert starts_per_second_peak(times) <= 225


def test_a_shared_state_stored_before_the_rate_was_shared_is_read_and_cut(budget_url):
    make_budget(budget_url, rate_per_second=10).observe_limit(4, "header")
    forget_rate_fields(budget_url)
    budget = make_budget(budget_url, rate_per_second=10)  # as the first process of the new version
    assert (budget.state(fresh=True).account_limit, budget.state().rate) == (4, 0.0)
    budget.rate_exceeded()
    assert budget.state(fresh=True).rate == pytest.approx(9.0)
