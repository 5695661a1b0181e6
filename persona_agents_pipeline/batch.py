"""Running one operation over many personas concurrently, and stopping such a run early (Ctrl-C).

A stop is cooperative: no persona starts once it is asked for, and the personas in flight are waited for
at most `settle_seconds`. A request cannot be cut off half-way without losing track of what it did, so a
persona still in flight after that (or when the caller quits at once) is let go: it keeps its claim, which
expires within one lease as a crashed process's would. Releasing it sooner would let the next run create a
second agent while the first create may still land; left to expire, the next run waits for it and adopts.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Callable, Iterable, Iterator, TypeVar

Result = TypeVar("Result")

NOT_STARTED = "not started: the run was interrupted"
LET_GO = "still in flight when the run stopped; its claim expires within one lease, then the next run adopts or creates its agent"


class BatchStop:
    """Asks running batches to stop. `request` only sets a flag and wakes the batches' queues (SimpleQueue's
    put is reentrant), so a signal handler may call it."""

    def __init__(self, settle_seconds: float = 30.0):
        self.requested = False
        self.settle_seconds = settle_seconds
        self._in_flight: set[int] = set()
        self._wakers: set[SimpleQueue] = set()

    def request(self) -> None:
        self.requested = True
        for waker in tuple(self._wakers):
            waker.put(_WAKE)

    @property
    def in_flight(self) -> frozenset[int]:
        """Personas whose operation is running now."""
        return frozenset(self._in_flight)


_WAKE = object()


@dataclass(frozen=True)
class _Raised:
    error: BaseException


def run_batch(
    persona_ids: Iterable[int],
    work: Callable[[int], Result],
    skipped: Callable[[int, str], Result],
    *,
    concurrency: int,
    stop: BatchStop,
) -> Iterator[Result]:
    """`work(persona_id)` for each persona on `concurrency` threads, yielding each result as it arrives.

    After `stop` is requested, personas not started are yielded at once as `skipped(id, NOT_STARTED)`;
    those in flight are waited for at most `stop.settle_seconds`, then yielded as `skipped(id, LET_GO)`
    and left running (they stay in `stop.in_flight`, and claimed).
    """
    arrived: SimpleQueue = SimpleQueue()

    def one(persona_id: int) -> None:
        if stop.requested:
            arrived.put((persona_id, skipped(persona_id, NOT_STARTED)))
            return
        stop._in_flight.add(persona_id)
        try:
            arrived.put((persona_id, work(persona_id)))
        except BaseException as error:  # re-raised in the caller's thread, as Future.result() would
            arrived.put((persona_id, _Raised(error)))
        finally:
            stop._in_flight.discard(persona_id)

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="provision")
    stop._wakers.add(arrived)
    waiting: dict[Future, int] = {}
    try:
        waiting = {pool.submit(one, persona_id): persona_id for persona_id in persona_ids}
        yield from _collect(arrived, waiting, skipped, stop)
    finally:
        stop._wakers.discard(arrived)
        # Stopped: queued personas are cancelled and nobody waits for those in flight.
        pool.shutdown(wait=not stop.requested, cancel_futures=stop.requested)


def _collect(
    arrived: SimpleQueue, waiting: dict[Future, int], skipped: Callable[[int, str], Result], stop: BatchStop
) -> Iterator[Result]:
    remaining = len(waiting)
    yielded: set[int] = set()
    deadline = time.monotonic() + stop.settle_seconds if stop.requested else None
    while remaining:
        try:
            item = arrived.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except Empty:
            break
        if item is _WAKE:
            deadline = deadline or time.monotonic() + stop.settle_seconds
            for future, persona_id in waiting.items():
                if future.cancel():
                    remaining -= 1
                    yielded.add(persona_id)
                    yield skipped(persona_id, NOT_STARTED)
            continue
        persona_id, result = item
        remaining -= 1
        yielded.add(persona_id)
        if isinstance(result, _Raised):
            raise result.error
        yield result
    for persona_id in waiting.values():
        if persona_id not in yielded:
            yield skipped(persona_id, LET_GO)
