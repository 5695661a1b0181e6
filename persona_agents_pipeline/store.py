"""The persona store: SQLAlchemy access to `personas`, claims, the change log and agent history.

Every write is a short transaction. On SQLite each transaction starts with BEGIN IMMEDIATE in WAL mode,
so concurrent writers queue on the busy timeout instead of failing with "database is locked".
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
import sqlalchemy.exc
from sqlalchemy import DateTime, delete, func, inspect, literal_column, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from .engines import normalise_database_url, shared_engine
from .installation import require_known_installation
from .migrations.change_log import VERSION_TABLE, birth_of
from .models import AgentEvent, Persona, PersonaChange, utcnow
from .identity import MAX_PERSONA_ID
from .persona_validation import InvalidPersonaError, validate_persona

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The persona's own fields, in validate_persona's order; everything else belongs to its agent.
EDITABLE_FIELDS = ("name", "temper_level", "chattiness", "emotional_attachment", "description")
ID_CHUNK = 500  # ids per IN (...) list: inside every SQLite's limit (999 variables before 3.32) and PostgreSQL's


class PersonaNotFoundError(LookupError):
    def __init__(self, persona_id: Any):
        self.persona_id = persona_id
        super().__init__(f"persona {persona_id} does not exist")


class AgentRecordedElsewhereError(RuntimeError):
    """The agent is recorded by another persona, so it is not this persona's to record."""

    def __init__(self, agent_id: str, persona_id: int):
        self.agent_id, self.persona_id = agent_id, persona_id
        super().__init__(f"agent {agent_id} is not this persona's: persona {persona_id} records it")


@dataclass(frozen=True)
class Claim:
    """Outcome of trying to claim a persona for agent work."""

    acquired: bool
    persona: Persona | None  # the row as it was just before the claim attempt


# Claims are bookkeeping, not edits of the persona: they leave the application's `updated_at` as it is.
_UNCHANGED = {"updated_at": Persona.updated_at}


def _adopt_legacy_version_row(connection, config: Config) -> None:
    """Releases before 0.2 kept their revision in Alembic's default `alembic_version`, which the
    application may share for its own migrations: move our row (only ours) to VERSION_TABLE."""
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables or "alembic_version" not in tables:
        return
    ours = [script.revision for script in ScriptDirectory.from_config(config).walk_revisions()]
    legacy = connection.execute(
        text("SELECT version_num FROM alembic_version WHERE version_num IN :ours").bindparams(
            sqlalchemy.bindparam("ours", expanding=True)
        ),
        {"ours": ours},
    ).scalar()
    if legacy is None:
        return  # the application's own Alembic history: not ours to touch
    connection.execute(text(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
    connection.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:v)"), {"v": legacy})
    connection.execute(text("DELETE FROM alembic_version WHERE version_num = :v"), {"v": legacy})
    if connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 0:
        connection.execute(text("DROP TABLE alembic_version"))


def _birth(persona_id: Any):
    """The birth (migrations/change_log.py birth_of) of the persona that has this id now: an SQL expression."""
    return literal_column(birth_of(str(persona_id) if isinstance(persona_id, int) else persona_id))


def _event(persona_id: int, agent_id: str | None, action: str, reason: str, at: datetime) -> AgentEvent:
    """A history entry about the persona that has this id now, not an earlier one given the same id."""
    return AgentEvent(persona_id=persona_id, agent_id=agent_id, action=action, reason=reason, at=at,
                      persona_birth=_birth(persona_id))


class PersonaStore:
    def __init__(self, database_url: str):
        self.database_url = normalise_database_url(database_url)
        self.engine = shared_engine(self.database_url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._installation_id: str | None = None

    def __repr__(self) -> str:
        return f"PersonaStore({make_url(self.database_url).render_as_string(hide_password=True)!r})"

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def upgrade(self) -> list[str]:
        """Bring the schema to the newest revision; returns the revisions applied (empty when up to date)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            _adopt_legacy_version_row(connection, config)
            before = self._current_revision(connection)
            command.upgrade(config, "head")
            after = self._current_revision(connection)
        return [] if before == after else [after]

    def installation_id(self) -> str:
        """The id `db upgrade` gave this database; it names the installation in every identity tag.

        Raises InstallationError (a ConfigurationError saying what to run) where the database cannot say
        which installation it is: a copy of another database, a missing or invalid row. Every use of the
        id comes through here, so no agent work starts on such a database."""
        if self._installation_id is None:
            with self.engine.begin() as connection:
                self._installation_id = require_known_installation(connection)
        return self._installation_id

    @staticmethod
    def _current_revision(connection) -> str | None:
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()

    # ---- personas -------------------------------------------------------------------------------

    def add_personas(self, rows: Iterable[dict[str, Any]]) -> list[int]:
        """Validate every row first, then insert them all in one transaction; all or nothing."""
        personas = []
        for number, row in enumerate(rows, start=1):
            label = f"row {number}" + (f" ({row['name'][:40]})" if isinstance(row.get("name"), str) and row["name"].strip() else "")
            spec = validate_persona(
                label,
                row.get("name"),
                row.get("temper_level"),
                row.get("chattiness"),
                row.get("emotional_attachment"),
                row.get("description"),
            )
            personas.append(
                Persona(
                    name=spec.name,
                    temper_level=spec.temper_level,
                    chattiness=spec.chattiness,
                    emotional_attachment=spec.emotional_attachment,
                    description=spec.description,
                )
            )
        with self.session() as session:
            session.add_all(personas)
            session.flush()
            return [persona.id for persona in personas]

    def edit_persona(self, persona_id: int, changes: Mapping[str, Any]) -> Persona:
        """Change some of a persona's fields. The persona as it would be is validated first, so a bad value
        changes nothing; returns the persona as saved."""
        with self.session() as session:
            persona = session.get(Persona, persona_id, with_for_update=True) if 0 < persona_id <= self.max_persona_id else None
            if persona is None:
                raise PersonaNotFoundError(persona_id)
            merged = {field: changes.get(field, getattr(persona, field)) for field in EDITABLE_FIELDS}
            spec = validate_persona(persona_id, *(merged[field] for field in EDITABLE_FIELDS))
            for field in changes:
                setattr(persona, field, getattr(spec, field))
        return persona

    def delete_persona(self, persona_id: int) -> None:
        """Delete the persona row; its agent history stays (see `history`)."""
        with self.session() as session:
            found = 0 < persona_id <= self.max_persona_id
            if not found or session.execute(delete(Persona).where(Persona.id == persona_id)).rowcount == 0:
                raise PersonaNotFoundError(persona_id)

    @functools.cached_property
    def max_persona_id(self) -> int:
        """The largest id `personas.id` holds here (PostgreSQL's integer: 2**31-1); larger ids name no persona."""
        types = [column["type"] for column in inspect(self.engine).get_columns(Persona.__tablename__) if column["name"] == "id"]
        if self.dialect == "postgresql" and types and not isinstance(types[0], sqlalchemy.BigInteger):
            return 2**15 - 1 if isinstance(types[0], sqlalchemy.SmallInteger) else 2**31 - 1
        return MAX_PERSONA_ID

    def has_personas_table(self) -> bool:
        return inspect(self.engine).has_table(Persona.__tablename__)

    def get(self, persona_id: int) -> Persona | None:
        if not 0 < persona_id <= self.max_persona_id:
            return None
        with self.session() as session:
            return session.get(Persona, persona_id)

    def require(self, persona_id: int) -> Persona:
        persona = self.get(persona_id)
        if persona is None:
            raise PersonaNotFoundError(persona_id)
        return persona

    def without_agents(self) -> list[Persona]:
        with self.session() as session:
            return list(session.scalars(select(Persona).where(Persona.elevenlabs_agent_id.is_(None)).order_by(Persona.id)))

    def with_agents(self) -> list[Persona]:
        with self.session() as session:
            return list(
                session.scalars(select(Persona).where(Persona.elevenlabs_agent_id.is_not(None)).order_by(Persona.id))
            )

    def ids_without_agents(self) -> list[int]:
        with self.session() as session:
            return list(session.scalars(select(Persona.id).where(Persona.elevenlabs_agent_id.is_(None)).order_by(Persona.id)))

    def get_many(self, persona_ids: Sequence[int]) -> list[Persona]:
        """The personas with these ids that still exist, in id order: one primary-key query per chunk."""
        found: list[Persona] = []
        with self.session() as session:
            for start in range(0, len(persona_ids), ID_CHUNK):
                chunk = list(persona_ids[start : start + ID_CHUNK])
                found += session.scalars(select(Persona).where(Persona.id.in_(chunk)))
        return sorted(found, key=lambda persona: persona.id)

    def count(self) -> int:
        with self.session() as session:
            return session.scalar(select(func.count()).select_from(Persona)) or 0

    def iter_personas(self, batch_size: int = 5000, after_id: int | None = None) -> Iterator[Persona]:
        """Stream every persona (with an id above `after_id`) in id order, a page at a time, so memory stays
        flat at any table size."""
        last_id = -math.inf if after_id is None else after_id
        while True:
            with self.session() as session:
                page = list(
                    session.scalars(select(Persona).where(Persona.id > last_id).order_by(Persona.id).limit(batch_size))
                )
            if not page:
                return
            yield from page
            last_id = page[-1].id

    # ---- claims ---------------------------------------------------------------------------------

    def _database_now(self, later_by: timedelta = timedelta(0)):
        """The database's clock (naive UTC, as the columns hold it) plus `later_by`, as a SQL expression: claims
        are written and compared by many hosts, whose own clocks need not agree."""
        if self.dialect == "sqlite":
            # Microseconds, as SQLAlchemy writes the column, so stored and computed times compare as text.
            return func.strftime("%Y-%m-%d %H:%M:%f000", "now", f"{later_by.total_seconds():+f} seconds")
        return func.timezone("UTC", func.now(), type_=DateTime) + later_by

    def try_claim(
        self, persona_id: int, owner: str, lease: timedelta, *, replacing: bool = False, for_create: bool = True
    ) -> Claim:
        """Atomically take the persona for agent work unless another live claim holds it.

        `for_create` also stamps `agent_create_attempted_at`: from here on a create may be sent, so a
        caller that later finds this claim expired knows to look for an agent to adopt before creating
        one. A claim taken only to delete (`for_create=False`) leaves the marker as it is.
        """
        now = self._database_now()
        with self.session() as session:
            # Locked, so the row we decide on is the row we claim: a caller recording or releasing meanwhile
            # commits first (PostgreSQL re-evaluates the UPDATE on the new row, but `before` would be stale).
            before = session.get(Persona, persona_id, with_for_update=True)
            if before is None:
                return Claim(False, None)
            session.expunge(before)
            conditions = [
                Persona.id == persona_id,
                (Persona.agent_claim_owner.is_(None))
                | (Persona.agent_claim_owner == owner)
                | (Persona.agent_claim_expires_at < now),
            ]
            if not replacing:
                conditions.append(Persona.elevenlabs_agent_id.is_(None))
            values: dict[str, Any] = {
                "agent_claim_owner": owner, "agent_claim_expires_at": self._database_now(lease), **_UNCHANGED
            }
            if for_create:
                values["agent_create_attempted_at"] = func.coalesce(Persona.agent_create_attempted_at, now)
            result = session.execute(
                update(Persona).where(*conditions).values(**values).execution_options(synchronize_session=False)
            )
            return Claim(result.rowcount == 1, before)

    def renew_claims(self, owner: str, lease: timedelta) -> int:
        with self.session() as session:
            return session.execute(
                update(Persona)
                .where(Persona.agent_claim_owner == owner)
                .values(agent_claim_expires_at=self._database_now(lease), **_UNCHANGED)
                .execution_options(synchronize_session=False)
            ).rowcount

    def release_claim(self, persona_id: int, owner: str, *, create_may_have_happened: bool | None) -> None:
        """Release our claim. `create_may_have_happened`: True stamps the marker with now, the last moment a
        create of ours may have been sent (a search sees it once the listing has caught up); False clears
        it; None leaves it as it is."""
        values: dict[str, Any] = {"agent_claim_owner": None, "agent_claim_expires_at": None, **_UNCHANGED}
        if create_may_have_happened is not None:
            values["agent_create_attempted_at"] = utcnow() if create_may_have_happened else None
        with self.session() as session:
            session.execute(
                update(Persona)
                .where(Persona.id == persona_id, Persona.agent_claim_owner == owner)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def personas_recording(self, agent_ids: Iterable[str]) -> dict[str, int]:
        """Which persona records each of these agents (agents no persona records are left out)."""
        ids, found = list(agent_ids), {}
        with self.session() as session:
            for start in range(0, len(ids), ID_CHUNK):
                chunk = ids[start : start + ID_CHUNK]
                rows = session.execute(
                    select(Persona.elevenlabs_agent_id, Persona.id).where(Persona.elevenlabs_agent_id.in_(chunk))
                )
                found.update({agent_id: persona_id for agent_id, persona_id in rows})
        return found

    def record_agent(
        self,
        persona_id: int,
        owner: str,
        *,
        agent_id: str,
        voice_id: str,
        conversation_prompt: str,
        voice_settings: dict[str, Any],
        config_hash: str,
        action: str,
        reason: str,
        created_at: datetime | None = None,
    ) -> bool:
        """Save the agent and release the claim, only while `owner` still holds it. False if it lost the claim;
        AgentRecordedElsewhereError (claim kept) if another persona records that agent."""
        now = utcnow()
        values: dict[str, Any] = {
            "elevenlabs_agent_id": agent_id,
            "voice_id": voice_id,
            "conversation_prompt": conversation_prompt,
            "voice_settings": voice_settings,
            "agent_config_hash": config_hash,
            "agent_claim_owner": None,
            "agent_claim_expires_at": None,
            "agent_create_attempted_at": None,
        }
        if created_at is not None:
            values["agent_created_at"] = created_at
        try:
            with self.session() as session:
                result = session.execute(
                    update(Persona)
                    .where(Persona.id == persona_id, Persona.agent_claim_owner == owner)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount != 1:
                    return False
                session.add(_event(persona_id, agent_id, action, reason, now))
                return True
        except sqlalchemy.exc.IntegrityError:  # the unique index on the agent id: another persona records it
            other = self.personas_recording([agent_id]).get(agent_id)
            if other is None or other == persona_id:
                raise
            raise AgentRecordedElsewhereError(agent_id, other) from None

    def forget_agent(self, persona_id: int, agent_id: str, reason: str) -> bool:
        """Clear a recorded agent that no longer exists remotely; only if the row still names that agent."""
        with self.session() as session:
            result = session.execute(
                update(Persona)
                .where(Persona.id == persona_id, Persona.elevenlabs_agent_id == agent_id)
                .values(elevenlabs_agent_id=None, agent_config_hash=None)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                session.add(_event(persona_id, agent_id, "lost", reason, utcnow()))
            return result.rowcount == 1

    def record_event(self, persona_id: int, agent_id: str | None, action: str, reason: str) -> None:
        with self.session() as session:
            session.add(_event(persona_id, agent_id, action, reason, utcnow()))

    def history(self, persona_id: int) -> list[AgentEvent]:
        if not 0 < persona_id <= self.max_persona_id:
            return []
        with self.session() as session:
            return list(
                session.scalars(
                    select(AgentEvent)
                    # No birth: written by an older version during an upgrade; taken as the current persona's.
                    .where(AgentEvent.persona_id == persona_id,
                           (AgentEvent.persona_birth == _birth(persona_id)) | AgentEvent.persona_birth.is_(None))
                    .order_by(AgentEvent.at, AgentEvent.id)
                )
            )

    def agents_of_earlier_personas(self, persona_id: int | None = None) -> set[tuple[int, str]]:
        """(persona id, agent id) of agents the history records only for an earlier persona with the id
        (SQLite hands a deleted persona's id to the next insert): never agents of the persona that has the
        id now, nor to be adopted by it. Only `persona_id`'s when given."""
        query = (
            select(AgentEvent.persona_id, AgentEvent.agent_id)
            .where(AgentEvent.agent_id.is_not(None))
            .group_by(AgentEvent.persona_id, AgentEvent.agent_id)
            .having(func.max(AgentEvent.persona_birth) < _birth(f"{AgentEvent.__tablename__}.persona_id"))
        )
        if persona_id is not None:
            query = query.where(AgentEvent.persona_id == persona_id)
        with self.session() as session:
            return {(row[0], row[1]) for row in session.execute(query)}

    # ---- change log -----------------------------------------------------------------------------

    def changes_since(self, seq: int, limit: int = 10_000) -> list[PersonaChange]:
        """Changes after `seq`, oldest first: one range scan on the log's primary key."""
        with self.session() as session:
            return list(
                session.scalars(select(PersonaChange).where(PersonaChange.seq > seq).order_by(PersonaChange.seq).limit(limit))
            )

    def latest_change_seq(self) -> int:
        with self.session() as session:
            return session.scalar(select(func.max(PersonaChange.seq))) or 0


__all__ = ["PersonaStore", "PersonaNotFoundError", "AgentRecordedElsewhereError", "InvalidPersonaError", "Claim"]
