"""Agent columns on `personas` (created if absent), the change log with its triggers, agent history.

(Installations from before the project's tables were namespaced got `persona_changes` and
`agent_events` here; 0003 renames them.)

Works on an empty database and on an application database whose `personas` table predates the agent
columns: existing rows are kept, only missing columns, indexes and tables are added.
"""

import sqlalchemy as sa
from alembic import op

from persona_agents_pipeline.migrations.change_log import (
    CHANGE_LOG_TABLE,
    EVENTS_INDEX,
    EVENTS_TABLE,
    change_log_columns,
    change_log_triggers,
    event_columns,
)
from persona_agents_pipeline.schema_errors import SchemaError

revision = "0001_agent_columns"
down_revision = None
branch_labels = None
depends_on = None

def _persona_columns() -> list[sa.Column]:
    return [
        sa.Column("name", sa.String(255)),
        sa.Column("temper_level", sa.Float),
        sa.Column("chattiness", sa.Float),
        sa.Column("emotional_attachment", sa.Float),
        sa.Column("description", sa.Text),
        sa.Column("created_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("elevenlabs_agent_id", sa.String(64)),
        sa.Column("voice_id", sa.String(64)),
        sa.Column("conversation_prompt", sa.Text),
        sa.Column("voice_settings", sa.JSON),
        sa.Column("agent_created_at", sa.DateTime),
        sa.Column("agent_config_hash", sa.String(64)),
        sa.Column("agent_claim_owner", sa.String(64)),
        sa.Column("agent_claim_expires_at", sa.DateTime),
        sa.Column("agent_create_attempted_at", sa.DateTime),
    ]


def _settle_legacy_agent_ids(bind) -> None:
    """Make the legacy agent ids fit the unique index: blank ids mean "no agent" (NULL); an agent id
    shared by several personas cannot be decided here, so the upgrade stops and names them."""
    bind.execute(sa.text("UPDATE personas SET elevenlabs_agent_id = NULL WHERE TRIM(elevenlabs_agent_id) = ''"))
    shared = bind.execute(sa.text(
        "SELECT elevenlabs_agent_id, id FROM personas WHERE elevenlabs_agent_id IN ("
        "SELECT elevenlabs_agent_id FROM personas WHERE elevenlabs_agent_id IS NOT NULL "
        "GROUP BY elevenlabs_agent_id HAVING COUNT(*) > 1) ORDER BY elevenlabs_agent_id, id"
    )).all()
    if shared:
        owners: dict[str, list[str]] = {}
        for agent_id, persona_id in shared:
            owners.setdefault(agent_id, []).append(str(persona_id))
        listing = "; ".join(f"agent {agent_id} is recorded by personas {', '.join(ids)}" for agent_id, ids in owners.items())
        raise SchemaError(
            f"cannot upgrade: each agent must belong to one persona, but {listing}. Keep each agent on one persona "
            "(UPDATE personas SET elevenlabs_agent_id = NULL WHERE id = ... for the others; `persona-agents "
            "create-missing-agents` then gives them their own), and run `persona-agents db upgrade` again. "
            "Nothing was changed."
        )


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if inspector.has_table("personas"):
        existing = {column["name"] for column in inspector.get_columns("personas")}
        for column in _persona_columns():
            if column.name not in existing:
                op.add_column("personas", column)
        if "elevenlabs_agent_id" in existing:
            _settle_legacy_agent_ids(bind)
    else:
        # AUTOINCREMENT on SQLite: a deleted persona's id is never handed to a new one.
        op.create_table("personas", sa.Column("id", sa.Integer, primary_key=True, autoincrement=True), *_persona_columns(),
                        sqlite_autoincrement=True)

    op.create_index("uq_personas_elevenlabs_agent_id", "personas", ["elevenlabs_agent_id"], unique=True)
    op.create_table(CHANGE_LOG_TABLE, *change_log_columns())
    op.create_table(EVENTS_TABLE, *event_columns())
    op.create_index(EVENTS_INDEX, EVENTS_TABLE, ["persona_id"])
    for statement in change_log_triggers(bind.dialect.name):
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the agent columns hold data that a downgrade would lose; restore a backup instead")
