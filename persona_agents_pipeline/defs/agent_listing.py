"""What the last complete listing of the account's agents found, as agent_status_report reads it back: the
listing asset's key, and the orphans recorded in its latest materialization."""

from __future__ import annotations

import dagster as dg

LISTING_KEY = dg.AssetKey("elevenlabs_agent_listing")
ORPHANS = "orphans"  # the first of them, by agent id
ORPHAN_COUNT = "orphaned_agents"


def orphans_metadata(instance: dg.DagsterInstance) -> dict[str, dg.MetadataValue]:
    """The report's entries for orphans of this installation, from the latest listing (none before one ran)."""
    event = instance.get_latest_materialization_event(LISTING_KEY)
    materialization = event.asset_materialization if event else None
    entry = materialization.metadata.get(ORPHANS) if materialization else None
    orphans = list(entry.value) if entry is not None else []
    count = materialization.metadata[ORPHAN_COUNT].value if orphans else 0
    rows = "\n".join(f"| {o['agent_id']} | {str(o['name']).replace('|', '/')} | {o['persona_id']} |" for o in orphans)
    table = "| agent | name | carries persona |\n|---|---|---:|\n" + rows
    return {
        "count_orphaned_agents": dg.MetadataValue.int(count),
        "orphaned_agents": dg.MetadataValue.md(
            table + (f"\n\n... and {count - len(orphans)} more" if count > len(orphans) else "")
            if orphans else "no orphaned agent at the last listing"
        ),
    }
