"""What every sensor and schedule shares: whether automation runs by default, how often sensors tick,
the slice of the persona change log a tick reads, and the runs finished since a tick."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

import dagster as dg

from ..models import PersonaChange
from .change_cursor import own_position
from .partitions import persona_key
from .resources import PersonaStoreResource, definition_settings

SENSOR_INTERVAL_SECONDS = definition_settings().sensor_interval_seconds
# Bounded work per tick (Dagster gives a sensor evaluation 60 s); the rest waits for the next tick.
MAX_CHANGES_PER_TICK = 20_000
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


def automation_status() -> dg.DefaultSensorStatus:
    """Running by default only where auto-creation is on (production, or AUTO_CREATE_ELEVENLABS_AGENTS=true)."""
    return dg.DefaultSensorStatus.RUNNING if definition_settings().auto_create else dg.DefaultSensorStatus.STOPPED


@dataclass(frozen=True)
class ChangeSlice:
    """The change-log entries after a sensor's cursor (never empty), and what they add up to."""

    changes: Sequence[PersonaChange]

    @property
    def last_seq(self) -> int:
        return self.changes[-1].seq

    def describe(self) -> str:
        return f"changes {self.changes[0].seq}..{self.last_seq}"

    def insert_seq(self, key: str) -> int:
        """The seq of the slice's last insert of the persona with this partition key (its place in net_keys)."""
        return next(change.seq for change in reversed(self.changes)
                    if change.change == "insert" and persona_key(change.persona_id) == key)

    def edited(self) -> list[int]:
        """Personas whose traits were edited (drift matters), in id order."""
        return sorted({change.persona_id for change in self.changes if change.change == "update"})

    def net_keys(self) -> tuple[list[str], list[str]]:
        """Keys inserted and keys deleted by the slice, in order: an insert then a delete cancels out."""
        inserted: dict[str, None] = {}
        deleted: dict[str, None] = {}
        for change in self.changes:
            key = persona_key(change.persona_id)
            if change.change == "insert":
                inserted[key] = None
                deleted.pop(key, None)
            elif change.change == "delete":
                if key in inserted:
                    inserted.pop(key)
                else:
                    deleted[key] = None
        return list(inserted), list(deleted)


def changes_after(persona_store: PersonaStoreResource, seq: int) -> ChangeSlice | dg.SkipReason:
    """The next bounded slice of the persona change log after `seq` (one range scan on the log's primary
    key), or why the tick skips."""
    changes = persona_store.get_store().changes_since(seq, limit=MAX_CHANGES_PER_TICK)
    return ChangeSlice(changes) if changes else dg.SkipReason(f"no persona changes after seq {seq}")


def changes_after_cursor(context: dg.SensorEvaluationContext, persona_store: PersonaStoreResource) -> ChangeSlice | dg.SkipReason:
    """The slice after the sensor's cursor (a change-log seq of this database; from the start on a new or
    foreign cursor, as on a new instance)."""
    return changes_after(persona_store, int(own_position(persona_store, context.cursor) or 0))


def runs_finished_after(
    instance: dg.DagsterInstance, timestamp: float, *, limit: int, oldest_first: bool = False,
    statuses: Sequence[dg.DagsterRunStatus] = FINISHED,
) -> Sequence[dg.RunRecord]:
    """Runs of any job that ended in `statuses` (by default: succeeded or failed) after `timestamp` (one query),
    newest first unless `oldest_first`."""
    return instance.get_run_records(
        dg.RunsFilter(statuses=list(statuses), updated_after=datetime.fromtimestamp(timestamp, timezone.utc)),
        limit=limit,
        order_by="update_timestamp" if oldest_first else None,
        ascending=oldest_first,
    )
