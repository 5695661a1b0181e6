"""A sensor's place in the persona change log is a position in one database's log: the same seq in another
database (an instance re-pointed from the SQLite demo to PostgreSQL) names other changes, so resuming there
skips some and replays others. Every such cursor is stored as "<installation id>@<position>" and read back only
by a sensor reading the same installation's database; any other cursor is foreign.

A cursor from before positions were tied to their database names none. Its seq may fit this log and still
come from another, so it is foreign too: the sensor starts as it would on a new instance (the partitions
sensor reconciles its partitions with the table, which makes no API call and changes nothing that matched).
`PersonaStore.installation_id` refuses a copied database until the operator says which installation it is,
so no position is read or written for it.
"""

from __future__ import annotations

from .resources import PersonaStoreResource

SEPARATOR = "@"


def own_position(persona_store: PersonaStoreResource, cursor: str | None) -> str | None:
    """The position stored in `cursor` when it was written for this database; None for no cursor or a foreign one."""
    installation, separator, position = (cursor or "").rpartition(SEPARATOR)
    return position if separator and installation == persona_store.get_store().installation_id() else None


def tied_cursor(persona_store: PersonaStoreResource, position: str) -> str:
    """`position` stored as this database's."""
    return f"{persona_store.get_store().installation_id()}{SEPARATOR}{position}"
