"""The shared API budget in Redis (PERSONA_AGENTS_BUDGET_URL=redis://host:6379/0).

Each primitive is one Lua script, so it is atomic on the server; leases and starts are stamped with the
server's `TIME`. A Redis restart or outage is waited out, reconnecting with backoff, for at most
`outage_seconds`; past that the primitive raises BudgetUnavailableError and the run stops cleanly. Keys (per account hash, no key material):
``persona-agents:budget:<account>:state`` (hash of BudgetState), ``...:slots`` (slot -> "lease_until holder")
and ``...:starts`` (ring entry -> started_at).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, fields
from typing import Any, Callable

import redis

from .budget_backend import BudgetState, BudgetUnavailableError

logger = logging.getLogger(__name__)

_TAKE_SLOT = """
for slot = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1 do
  local held = redis.call('HGET', KEYS[1], slot)
  local lease = held and tonumber(string.match(held, '^(%S+)')) or 0
  if lease < tonumber(ARGV[3]) then
    redis.call('HSET', KEYS[1], slot, ARGV[4] .. ' ' .. ARGV[5])
    return slot
  end
end
return -1
"""
_RELEASE_SLOT = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and string.match(held, ' (%S+)$') == ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1], '0 -') end
"""
_TAKE_START = """
local oldest_slot, oldest = nil, nil
for slot = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1 do
  local started = tonumber(redis.call('HGET', KEYS[1], slot) or '0')
  if oldest == nil or started < oldest then oldest_slot, oldest = slot, started end
end
local newest = 0
for _, started in ipairs(redis.call('HVALS', KEYS[1])) do newest = math.max(newest, tonumber(started)) end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local window, gap = tonumber(ARGV[3]), tonumber(ARGV[4])
local start = string.format('%.17g', math.max(now, oldest + window, newest + gap))
redis.call('HSET', KEYS[1], oldest_slot, start)
return {oldest_slot, start}
"""
_MOVE_START = """
if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') ~= tonumber(ARGV[2]) then return false end
local clock = redis.call('TIME')
local now = string.format('%.17g', tonumber(clock[1]) + tonumber(clock[2]) / 1e6)
redis.call('HSET', KEYS[1], ARGV[1], now)
return now
"""
_COMPARE_AND_SET = """
if tonumber(redis.call('HGET', KEYS[1], 'version') or '-1') ~= tonumber(ARGV[1]) then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
"""
_HELD = """
local held = 0
for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
  if tonumber(string.match(value, '^(%S+)')) >= tonumber(ARGV[1]) then held = held + 1 end
end
return held
"""
_TYPES = {f.name: f.type for f in fields(BudgetState)}


def _pairs(state: BudgetState) -> list:
    return [item for name, value in asdict(state).items() for item in (name, repr(value) if isinstance(value, float) else value)]


class RedisBudgetBackend:
    def __init__(self, url: str, *, outage_seconds: float = 30.0) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2, decode_responses=True)
        self.outage_seconds = outage_seconds
        self._outage_reported = False
        where = self.client.connection_pool.connection_kwargs
        self._where = where.get("path") or f"{where.get('host', 'localhost')}:{where.get('port', 6379)}"
        self._take_slot = self._script(_TAKE_SLOT)
        self._release_slot = self._script(_RELEASE_SLOT)
        self._take_start = self._script(_TAKE_START)
        self._move_start = self._script(_MOVE_START)
        self._compare_and_set = self._script(_COMPARE_AND_SET)
        self._held = self._script(_HELD)
        self._create = self._script(_CREATE)

    def _script(self, source: str) -> Callable[..., Any]:
        script = self.client.register_script(source)
        return lambda **kwargs: self._waiting_out_outages(script, **kwargs)

    def _waiting_out_outages(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`operation`, tried again with growing pauses while Redis cannot be reached (a restart, a failover);
        BudgetUnavailableError once it has been unreachable for `outage_seconds`."""
        deadline = time.monotonic() + self.outage_seconds
        delay = 0.05
        while True:
            try:
                answer = operation(*args, **kwargs)
                self._outage_reported = False
                return answer
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                if not self._outage_reported:
                    self._outage_reported = True  # once per outage, not once per waiting thread
                    logger.warning("the API budget's Redis at %s does not answer (%s); waiting up to %g s for it",
                                   self._where, type(exc).__name__, self.outage_seconds)
                if time.monotonic() + delay > deadline:
                    raise BudgetUnavailableError(
                        f"the API budget's Redis at {self._where} has not answered for {self.outage_seconds:g} s "
                        f"({type(exc).__name__}); check that it runs (PERSONA_AGENTS_BUDGET_URL), or raise "
                        "PERSONA_AGENTS_BUDGET_OUTAGE_SECONDS to wait longer"
                    ) from None
            time.sleep(random.uniform(delay / 2, delay))
            delay = min(2.0, delay * 2)

    def close(self) -> None:
        self.client.close()

    def now(self) -> float:
        seconds, microseconds = self._waiting_out_outages(self.client.time)
        return seconds + microseconds / 1e6

    @staticmethod
    def _key(account: str, part: str) -> str:
        return f"persona-agents:budget:{account}:{part}"

    def state(self, account: str) -> BudgetState | None:
        raw = self._waiting_out_outages(self.client.hgetall, self._key(account, "state"))
        if not raw:
            return None
        converters = {"int": int, "float": float, "str": str}
        # A field missing (stored by an older version) takes its default; one a newer version added is skipped.
        return BudgetState(**{name: converters[_TYPES[name]](value) for name, value in raw.items() if name in _TYPES})

    def create_state(self, account: str, state: BudgetState) -> None:
        self._create(keys=[self._key(account, "state")], args=_pairs(state))

    def compare_and_set(self, account: str, expected_version: int, new: BudgetState) -> bool:
        return bool(self._compare_and_set(keys=[self._key(account, "state")], args=[expected_version, *_pairs(new)]))

    def take_slot(self, account: str, first: int, end: int, holder: str, now: float, lease_until: float) -> int | None:
        slot = int(self._take_slot(keys=[self._key(account, "slots")], args=[first, end, repr(now), repr(lease_until), holder]))
        return None if slot < 0 else slot

    def release_slot(self, account: str, slot: int, holder: str) -> None:
        self._release_slot(keys=[self._key(account, "slots")], args=[slot, holder])

    def take_start(self, account: str, first: int, end: int, window: float, gap: float) -> tuple[int, float] | None:
        # The script reads the server's clock as it runs, atomically.
        entry, start = self._take_start(keys=[self._key(account, "starts")], args=[first, end, repr(window), repr(gap)])
        return int(entry), float(start)

    def move_start(self, account: str, entry: int, reserved: float) -> float | None:
        moved = self._move_start(keys=[self._key(account, "starts")], args=[entry, repr(reserved)])
        return float(moved) if moved else None

    def held_slots(self, account: str, now: float) -> int:
        return int(self._held(keys=[self._key(account, "slots")], args=[repr(now)]))
