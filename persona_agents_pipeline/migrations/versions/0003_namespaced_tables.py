"""Move the change log and agent history of earlier installations to the namespaced table names.

Databases set up by this version already have them (0001 creates them); there this does nothing, and it
never touches a `persona_changes` or `agent_events` table that the application owns.
"""

import sqlalchemy as sa
from alembic import op

from persona_agents_pipeline.migrations.change_log import (
    CHANGE_LOG_TABLE,
    EVENTS_INDEX,
    EVENTS_TABLE,
    change_log_triggers,
)

revision = "0003_namespaced_tables"
down_revision = "0002_installation"
branch_labels = None
depends_on = None

OLD_CHANGE_LOG, OLD_EVENTS, OLD_INDEX = "persona_changes", "agent_events", "ix_agent_events_persona_id"
OLD_TRIGGERS = ("persona_changes_on_insert", "persona_changes_on_delete", "persona_changes_on_update")


def upgrade() -> None:
    bind = op.get_bind()
    if sa.inspect(bind).has_table(CHANGE_LOG_TABLE):
        return
    postgresql = bind.dialect.name == "postgresql"
    for trigger in OLD_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}" + (" ON personas" if postgresql else ""))
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS record_persona_change()")
    op.drop_index(OLD_INDEX, table_name=OLD_EVENTS)
    op.rename_table(OLD_CHANGE_LOG, CHANGE_LOG_TABLE)
    op.rename_table(OLD_EVENTS, EVENTS_TABLE)
    op.create_index(EVENTS_INDEX, EVENTS_TABLE, ["persona_id"])
    for statement in change_log_triggers(bind.dialect.name):
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("restore a backup instead")
