"""Which installation this database is: the id in every agent's identity tag, and the database it was made in.

A copy of the database (staging restored from production's backup, a `cp` of the SQLite file) carries
the original's installation id. Acting on that id, the copy would take the original's agents for its
own: delete them as duplicates, rename them, adopt them, and the original would adopt the copy's. So the
installation row records the identity of the database it was made in, every use of the id compares it
with the database at hand (`require_known_installation`), and on a mismatch no agent work is done until
the operator says which installation this is: `start_new_installation` (a copy with agents of its own)
or `adopt_installation` (the same installation, moved).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .config import ConfigurationError
from .database_identity import DatabaseIdentity, database_identity
from .migrations.change_log import EVENTS_TABLE, INSTALLATION_TABLE, birth_of
from .models import utcnow
from .identity import LEGACY_INSTALLATION, InvalidInstallationIdError, parse_identity_tag, validate_installation_id

UPGRADE = "run `persona-agents db upgrade`"
NEW_INSTALLATION = "persona-agents db upgrade --new-installation"
ADOPT = "persona-agents installation adopt"


class InstallationError(ConfigurationError):
    """The database cannot say which installation it is; the message says what to run."""


@dataclass(frozen=True)
class InstallationRecord:
    installation_id: str
    made_in: DatabaseIdentity | None


def read_installation(connection: Connection) -> InstallationRecord | None:
    """The installation row as stored (its id validated); None when the row is missing."""
    inspector = sa.inspect(connection)
    if not inspector.has_table(INSTALLATION_TABLE) or "database_identity" not in {
        column["name"] for column in inspector.get_columns(INSTALLATION_TABLE)
    }:
        raise InstallationError(f"this database has no installation id yet, or an older schema; {UPGRADE} first")
    rows = connection.execute(
        sa.text(f"SELECT installation_id, database_identity, database_location FROM {INSTALLATION_TABLE}")
    ).all()
    if len(rows) > 1:
        raise InstallationError(
            f"{INSTALLATION_TABLE} has {len(rows)} rows ({', '.join(repr(row[0]) for row in rows)}); an installation "
            "has exactly one id: delete the rows that are not this installation's"
        )
    if not rows:
        return None
    installation_id, key, location = rows[0]
    try:
        validate_installation_id(installation_id, f"the installation id in {INSTALLATION_TABLE}")
    except InvalidInstallationIdError as exc:
        raise InstallationError(
            f"{exc}. No agent was created, changed or deleted. Set a valid id, e.g. "
            f"UPDATE {INSTALLATION_TABLE} SET installation_id = '{_suggested_id(installation_id)}'"
        ) from None
    return InstallationRecord(installation_id, DatabaseIdentity(key, location or key) if key else None)


def _suggested_id(invalid: Any) -> str:
    kept = "".join(character for character in str(invalid).lower() if character in "abcdefghijklmnopqrstuvwxyz0123456789")
    return kept[:32] or fresh_installation_id()


def fresh_installation_id() -> str:
    # 12 hex digits: short in a tag, and two installations on one account never draw the same.
    return uuid.uuid4().hex[:12]


def require_known_installation(connection: Connection) -> str:
    """The installation id, once the row proves this database is the one the installation was made in.

    The one gate of all agent work (plan, apply, create, adopt, update, delete): CLI, Python API and
    Dagster reach the id only through here."""
    record = read_installation(connection)
    if record is None:
        raise InstallationError(
            f"the {INSTALLATION_TABLE} row is missing, so this database cannot tell which agents are its own; "
            f"run `{ADOPT}` to restore it (it reads the id back from the agents the personas record)"
        )
    current = database_identity(connection)
    if record.made_in is None or record.made_in.key != current.key:
        raise InstallationError(_copy_message(record, current))
    return record.installation_id


def _copy_message(record: InstallationRecord, current: DatabaseIdentity) -> str:
    made_in = record.made_in.location if record.made_in else "a database it does not name"
    return (
        f"this database looks like a copy: installation {record.installation_id} was made in {made_in}, and this is "
        f"{current.location}. A copy (staging restored from production's backup, a copied SQLite file) carries "
        "the original's installation id, so on the same ElevenLabs account it would delete, change and adopt the "
        "original's agents as its own; no agent is created, changed or deleted until you say which installation "
        f"this is. A copy that should manage agents of its own: run `{NEW_INSTALLATION}` (it gets a new id and "
        f"forgets the agent ids it copied). The same installation, moved to a new server or file: run `{ADOPT}`."
    )


@dataclass(frozen=True)
class Renamed:
    old_id: str | None
    new_id: str
    disowned: int  # personas whose copied agent id was forgotten


def start_new_installation(connection: Connection) -> Renamed:
    """Give this database a fresh installation id made here, and forget the agents it copied: they
    belong to the original installation, which keeps them; this one creates its own."""
    record = read_installation(connection)
    new_id = fresh_installation_id()
    _write_row(connection, new_id, database_identity(connection), replace=record is not None)
    reason = (f"database copied from installation {record.installation_id if record else 'unknown'}: that "
              f"installation keeps this agent; installation {new_id} makes its own")
    disowned = connection.execute(sa.text(
        f"INSERT INTO {EVENTS_TABLE} (persona_id, agent_id, action, reason, at, persona_birth) SELECT id, "
        f"elevenlabs_agent_id, 'disowned', :reason, :at, {birth_of('personas.id')} FROM personas "
        "WHERE elevenlabs_agent_id IS NOT NULL"
    ), {"reason": reason, "at": utcnow()}).rowcount
    connection.execute(sa.text(
        "UPDATE personas SET elevenlabs_agent_id = NULL, agent_config_hash = NULL, agent_created_at = NULL, "
        "agent_claim_owner = NULL, agent_claim_expires_at = NULL, agent_create_attempted_at = NULL "
        "WHERE elevenlabs_agent_id IS NOT NULL OR agent_claim_owner IS NOT NULL OR agent_create_attempted_at IS NOT NULL"
    ))
    return Renamed(record.installation_id if record else None, new_id, disowned)


def adopt_installation(connection: Connection, installation_id: str | None) -> tuple[str, int]:
    """Record this database as the installation's own; a missing row is restored with `installation_id`.

    Returns the id and how many claims were released: claims left by commands that failed for want of
    the row (no command can work without it, so none of them is live)."""
    record = read_installation(connection)
    if record is not None:
        if installation_id not in (None, record.installation_id):
            raise InstallationError(f"this database is installation {record.installation_id}; --id only restores a missing row")
        _write_row(connection, record.installation_id, database_identity(connection), replace=True)
        return record.installation_id, 0
    if installation_id is None:
        raise InstallationError(f"the {INSTALLATION_TABLE} row is missing and its id could not be recovered; give it with --id")
    _write_row(connection, validate_installation_id(installation_id, "--id"), database_identity(connection), replace=False)
    released = connection.execute(sa.text(
        "UPDATE personas SET agent_claim_owner = NULL, agent_claim_expires_at = NULL WHERE agent_claim_owner IS NOT NULL"
    )).rowcount
    return installation_id, released


def _write_row(connection: Connection, installation_id: str, identity: DatabaseIdentity, *, replace: bool) -> None:
    if replace:
        connection.execute(sa.text(f"DELETE FROM {INSTALLATION_TABLE}"))
    connection.execute(
        sa.text(f"INSERT INTO {INSTALLATION_TABLE} (installation_id, database_identity, database_location, created_at) "
                "VALUES (:id, :key, :location, :at)"),
        {"id": installation_id, "key": identity.key, "location": identity.location, "at": utcnow()},
    )


def recorded_agent_ids(connection: Connection, limit: int = 20) -> list[tuple[int, str]]:
    """(persona id, agent id) of some personas that record an agent, newest first."""
    return [tuple(row) for row in connection.execute(sa.text(
        "SELECT id, elevenlabs_agent_id FROM personas WHERE elevenlabs_agent_id IS NOT NULL ORDER BY id DESC LIMIT :n"
    ), {"n": limit})]


def recover_installation_id(recorded: Iterable[tuple[int, str]], get_agent: Callable[[str], dict]) -> str | None:
    """The installation id the recorded agents' identity tags name for their own personas; None when
    none of them says (`get_agent` answers {} for an agent that is gone). Several different ids are
    refused: the operator must choose with --id."""
    found: set[str] = set()
    for persona_id, agent_id in recorded:
        tags = get_agent(agent_id).get("tags") or []
        found |= {identity[0] for identity in map(parse_identity_tag, tags if isinstance(tags, list) else [])
                  if identity and identity[1] == persona_id and identity[0] != LEGACY_INSTALLATION}
    if len(found) > 1:
        raise InstallationError(f"the recorded agents name several installations ({', '.join(sorted(found))}); "
                                "choose this database's with --id")
    return next(iter(found), None)
