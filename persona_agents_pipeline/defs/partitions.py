"""The dynamic partitions of `persona_agent` and how many partitions one run takes."""


from typing import Sequence, TypeVar

import dagster as dg

from .dagster_internals import existing_dynamic_partitions
from .resources import definition_settings

# One partition per persona; the key is the persona id as text.
personas_partitions = dg.DynamicPartitionsDefinition(name="personas")

# How many partitions one run provisions. A run creates its agents concurrently (bounded by the
# client's rate and concurrency limits), so a few large runs beat many small ones: each run costs a few
# seconds to start. Before that, Dagster writes one planned event per partition (10-30 s for 500 on a
# loaded 2-core machine), so that part grows with the batch, not with the runs (README "At 100,000 personas").
# PERSONA_AGENTS_RUN_BATCH_SIZE sets it (config.py).
RUN_BATCH_SIZE = definition_settings().run_batch_size


def persona_key(persona_id: int) -> str:
    return str(persona_id)


# Dagster puts every key of one add request (and each 1,000-key membership chunk) into a single SQL
# `IN (...)`. SQLite allows 999 variables per statement before 3.32 and 32,766 by default after, so
# a tick adding 20,000 personas, or a first backfill of 100,000, would fail there in one statement.
KEYS_PER_STATEMENT = 500
T = TypeVar("T")


def key_chunks(keys: Sequence[T]) -> list[list[T]]:
    """Partition keys (or storage ids) in chunks of KEYS_PER_STATEMENT, one SQL statement each."""
    return [list(keys[start : start + KEYS_PER_STATEMENT]) for start in range(0, len(keys), KEYS_PER_STATEMENT)]


def add_requests(keys: Sequence[str]) -> list[dg.AddDynamicPartitionsRequest]:
    """Sensor requests registering `keys` in order, each small enough for any SQLite."""
    return [personas_partitions.build_add_request(chunk) for chunk in key_chunks(keys)]


def register(instance: dg.DagsterInstance, keys: Sequence[str]) -> None:
    """Register `keys` (in order) directly, as a schedule or the demo does."""
    for chunk in key_chunks(keys):
        instance.add_dynamic_partitions(personas_partitions.name, chunk)


def registered(instance: dg.DagsterInstance, keys: Sequence[str]) -> set[str]:
    """Which of `keys` are registered: one small query per chunk, never a read of every partition."""
    return {key for chunk in key_chunks(keys) for key in existing_dynamic_partitions(instance, personas_partitions.name, chunk)}
