"""RequestLimiter: pacing never trips a same-rate server limit; concurrency stays bounded."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from persona_agents_pipeline.elevenlabs.client import ElevenLabsClient
from persona_agents_pipeline.elevenlabs.rate_limit import RequestLimiter
from persona_agents_pipeline.sandbox import SandboxServer


def _max_in_any_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_starts_never_exceed_rate_in_any_one_second_window():
    limiter = RequestLimiter(rate_per_second=20, max_concurrent=None)
    starts: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        with limiter.slot():
            with lock:
                starts.append(time.monotonic())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: one(), range(30)))
    assert len(starts) == 30
    assert _max_in_any_window(starts) <= 20
    gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:])]
    assert min(gaps) >= 0.05 - 0.005  # smooth: no bursts


def test_sandbox_with_same_rate_limit_sees_no_429():
    with SandboxServer(rate_limit=20) as sandbox:
        sandbox.create_agent_directly({"conversation_config": {}})
        limiter = RequestLimiter(rate_per_second=20, max_concurrent=None)
        with ElevenLabsClient("sandbox-test-key", sandbox.url, limiter=limiter, max_attempts=1) as client:
            agent_id = sandbox.agents()[0]["agent_id"]
            with ThreadPoolExecutor(6) as pool:
                list(pool.map(lambda _: client.get_agent(agent_id), range(30)))
        stats = sandbox.stats()
    assert stats["requests_by_status"] == {"200": 30}
    assert stats["rate_limited"] == 0
    assert stats["max_requests_in_1s_window"] <= 20


def test_concurrency_is_bounded_and_filled():
    with SandboxServer(max_concurrent=3, latency=0.1) as sandbox:
        limiter = RequestLimiter(rate_per_second=None, max_concurrent=3)
        with ElevenLabsClient("sandbox-test-key", sandbox.url, limiter=limiter, max_attempts=1) as client:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: client.list_voices(), range(12)))
        stats = sandbox.stats()
    assert stats["rate_limited"] == 0
    assert stats["peak_concurrency"] == 3


def test_pause_holds_every_thread_until_the_moment():
    limiter = RequestLimiter(rate_per_second=None, max_concurrent=None)
    limiter.pause(0.3)
    limiter.pause(0.1)  # a shorter pause never shortens the current one
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        entered = list(pool.map(lambda _: _enter(limiter), range(3)))
    assert all(t - started >= 0.29 for t in entered)


def _enter(limiter: RequestLimiter) -> float:
    with limiter.slot():
        return time.monotonic()


@pytest.mark.parametrize("rate, concurrent", [(0, None), (-1, None), (None, 0)])
def test_rejects_nonsense_limits(rate, concurrent):
    with pytest.raises(ValueError):
        RequestLimiter(rate, concurrent)


def test_rate_429s_lower_the_rate_once_per_window_and_quiet_time_restores_it():
    limiter = RequestLimiter(rate_per_second=10, max_concurrent=None, recovery_seconds=0.2)
    limiter.pause(0.0)  # a pause alone (system_busy) says nothing about the rate
    assert limiter.effective_rate == 10
    limiter.rate_exceeded()
    limiter.rate_exceeded()  # threads hitting the same limit together: one cut, not two
    assert limiter.effective_rate == pytest.approx(9.0)
    time.sleep(0.25)
    with limiter.slot():
        pass
    assert limiter.effective_rate == pytest.approx(9.5)
    time.sleep(0.25)
    with limiter.slot():
        pass
    assert limiter.effective_rate == pytest.approx(10.0)  # never above the configured rate
