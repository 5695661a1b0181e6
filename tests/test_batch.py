"""The batch runner's stop: personas not started are skipped, those in flight are waited for (bounded)."""

import threading

import pytest

from persona_agents_pipeline.batch import LET_GO, NOT_STARTED, BatchStop, run_batch


def test_a_stop_skips_queued_personas_and_lets_go_of_one_that_outlasts_the_settle_time():
    stop = BatchStop(settle_seconds=0.2)
    release_stuck = threading.Event()
    stuck = 2

    def work(persona_id: int) -> tuple[int, str]:
        if persona_id == stuck:
            release_stuck.wait(timeout=60)  # a request that does not answer within the settle time
        return persona_id, "done"

    results: dict[int, str] = {}
    try:
        for persona_id, outcome in run_batch(range(1, 11), work, lambda pid, why: (pid, why), concurrency=2, stop=stop):
            results[persona_id] = outcome
            if outcome == "done" and not stop.requested:
                stop.request()  # Ctrl-C after the first result
        assert stop.in_flight == {stuck}
    finally:
        release_stuck.set()
    assert results[stuck] == LET_GO
    assert sorted(results) == list(range(1, 11)), "every persona is accounted for"
    done = [pid for pid, outcome in results.items() if outcome == "done"]
    assert 1 <= len(done) <= 2 and stuck not in done
    assert all(outcome == NOT_STARTED for pid, outcome in results.items() if pid not in done and pid != stuck)


def test_without_a_stop_every_persona_runs_and_errors_reach_the_caller():
    stop = BatchStop()
    assert sorted(run_batch(range(5), lambda pid: pid * 2, lambda pid, why: None, concurrency=3, stop=stop)) == [0, 2, 4, 6, 8]

    def failing(persona_id: int) -> int:
        raise ValueError(f"persona {persona_id}")

    with pytest.raises(ValueError, match="persona 7"):
        list(run_batch([7], failing, lambda pid, why: None, concurrency=1, stop=stop))
