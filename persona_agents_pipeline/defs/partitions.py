"""The dynamic partitions of `persona_agent` and how many partitions one run takes."""


import os

import dagster as dg

# One partition per persona; the key is the persona id as text.
personas_partitions = dg.DynamicPartitionsDefinition(name="personas")

# How many partitions one run provisions. A run creates its agents concurrently (bounded by the
# client's rate and concurrency limits), so a few large runs beat many small ones: each run costs about
# a second to start (benchmarks/results/latest.md).
RUN_BATCH_SIZE = int(os.environ.get("PERSONA_AGENTS_RUN_BATCH_SIZE", "500"))


def persona_key(persona_id: int) -> str:
    return str(persona_id)
