"""SQLAlchemy models: the application's `personas` table with its agent columns, the change log and agent history."""

from __future__ import annotations

from datetime import datetime, timezone

import json
import logging
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .persona_validation import InvalidPersonaError, PersonaSpec, validate_persona


def utcnow() -> datetime:
    """Naive UTC: SQLite keeps no zone, so every timestamp we compare is naive UTC on both databases."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def utc_from_unix(seconds: Any) -> datetime | None:
    """A timestamp the API gives in Unix seconds, as naive UTC; None when it gave none."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None) if isinstance(seconds, (int, float)) else None


log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


class LegacyTolerantJSON(TypeDecorator):
    """JSON that reads legacy rows holding something else (e.g. Rails YAML in SQLite) as
    {"unreadable": <the text>} instead of failing every query that loads the row."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect):
        # SQLite keeps JSON as text, so decode it here where a bad value can be caught; PostgreSQL's
        # json type cannot hold anything but JSON.
        return dialect.type_descriptor(Text() if dialect.name == "sqlite" else JSON())

    def process_bind_param(self, value, dialect):
        return json.dumps(value) if dialect.name == "sqlite" and value is not None else value

    def process_result_value(self, value, dialect):
        if dialect.name != "sqlite" or value is None:
            return value
        try:
            return json.loads(value)
        except ValueError:
            log.warning("a stored voice_settings value is not JSON; shown as unreadable and rewritten by the next update")
            return {"unreadable": value[:200]}


class Persona(Base):
    __tablename__ = "personas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Application columns. Nullable on purpose: an application database may hold incomplete personas,
    # and those are refused by validation with a clear message rather than by the schema.
    name: Mapped[str | None] = mapped_column(String(255))
    temper_level: Mapped[float | None] = mapped_column(Float)
    chattiness: Mapped[float | None] = mapped_column(Float)
    emotional_attachment: Mapped[float | None] = mapped_column(Float)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    # The five agent columns of the original system.
    elevenlabs_agent_id: Mapped[str | None] = mapped_column(String(64))
    voice_id: Mapped[str | None] = mapped_column(String(64))
    conversation_prompt: Mapped[str | None] = mapped_column(Text)
    voice_settings: Mapped[dict | None] = mapped_column(LegacyTolerantJSON)
    agent_created_at: Mapped[datetime | None] = mapped_column(DateTime)

    # Bookkeeping for exactly-one-agent: the config hash the agent was built from (drift detection),
    # a claim with owner and lease (no two callers create for one persona), and when a create was
    # last sent (a crash after that point means an agent may exist that we must adopt, not duplicate).
    agent_config_hash: Mapped[str | None] = mapped_column(String(64))
    agent_claim_owner: Mapped[str | None] = mapped_column(String(64))
    agent_claim_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    agent_create_attempted_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("uq_personas_elevenlabs_agent_id", "elevenlabs_agent_id", unique=True),)

    @property
    def has_elevenlabs_agent(self) -> bool:
        return bool(self.elevenlabs_agent_id)

    def agent_status(self, now: datetime, invalid_reason: str | None) -> str:
        """One of AGENT_STATUSES, from this row alone, given its invalid_reason(); agent_status.persona_status
        refines "active" into drifted, gone and invalid for every report."""
        if self.elevenlabs_agent_id:
            return "active"
        if invalid_reason:
            return "invalid"
        if self.agent_claim_owner and self.agent_claim_expires_at and self.agent_claim_expires_at > now:
            return "in_progress"
        if self.agent_create_attempted_at:
            return "interrupted"  # a create may have been sent; the next run adopts or creates
        return "missing"

    def spec(self) -> PersonaSpec:
        """The validated spec its agent is built from; raises InvalidPersonaError naming persona and field."""
        return validate_persona(
            self.id, self.name, self.temper_level, self.chattiness, self.emotional_attachment, self.description
        )

    def invalid_reason(self) -> str | None:
        try:
            self.spec()
        except InvalidPersonaError as exc:
            return f"{exc.field} {exc.reason}"
        return None


AGENT_STATUSES = ("active", "missing", "in_progress", "interrupted", "invalid")


class PersonaChange(Base):
    """Filled by database triggers on insert, delete and trait edits, so sensors read only what changed."""

    __tablename__ = "persona_agents_changes"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    persona_id: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime | None] = mapped_column(DateTime)


class AgentEvent(Base):
    """History of every change to a persona's agent: created, adopted, updated, replaced, deleted."""

    __tablename__ = "persona_agents_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    persona_id: Mapped[int] = mapped_column(Integer, index=True)
    agent_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # The change-log seq of the insert that made the persona this entry is about (migrations/change_log.py
    # birth_of): a later persona given the same id has another birth, and a history of its own.
    persona_birth: Mapped[int | None] = mapped_column(Integer)
