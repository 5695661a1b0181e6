"""The database each installation was made in, each history entry's persona birth, ids never reused.

- `persona_agents_installation` records the identity of the database it was made in, so a copy of the
  database (which carries the same installation id) is recognised before it acts on the original's
  agents. Existing installations record the database this upgrade runs in.
- `persona_agents_events.persona_birth` is the change-log entry of the insert that made the persona the
  entry belongs to: SQLite hands a deleted persona's id to the next insert, and the new persona must not
  inherit the old one's history. Existing entries belong to the persona that has the id now.
- On SQLite the project's own tables get AUTOINCREMENT, so their ids are never handed out twice either.
"""

import sqlalchemy as sa
from alembic import op

from persona_agents_pipeline.database_identity import database_identity
from persona_agents_pipeline.migrations.change_log import (
    BIRTH_INDEX,
    CHANGE_LOG_TABLE,
    EVENTS_TABLE,
    INSTALLATION_TABLE,
    TRIGGER_PREFIX,
    birth_of,
    change_log_triggers,
)

revision = "0004_database_identity"
down_revision = "0003_namespaced_tables"
branch_labels = None
depends_on = None


def _record_database_identity(bind) -> None:
    with op.batch_alter_table(INSTALLATION_TABLE) as batch:
        batch.add_column(sa.Column("database_identity", sa.String(255)))
        batch.add_column(sa.Column("database_location", sa.Text))
    identity = database_identity(bind)
    bind.execute(
        sa.text(f"UPDATE {INSTALLATION_TABLE} SET database_identity = :key, database_location = :location"),
        {"key": identity.key, "location": identity.location},
    )


def _never_reuse_ids_on_sqlite() -> None:
    # The change-log triggers name the table being rebuilt; they are made again once it is back.
    for kind in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER_PREFIX}{kind}")
    for table in (CHANGE_LOG_TABLE, EVENTS_TABLE):
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
    for statement in change_log_triggers("sqlite"):
        op.execute(statement)


def upgrade() -> None:
    bind = op.get_bind()
    _record_database_identity(bind)
    op.add_column(EVENTS_TABLE, sa.Column("persona_birth", sa.Integer))
    op.create_index(BIRTH_INDEX, CHANGE_LOG_TABLE, ["persona_id", "change"])
    op.execute(f"UPDATE {EVENTS_TABLE} SET persona_birth = {birth_of(f'{EVENTS_TABLE}.persona_id')}")
    if bind.dialect.name == "sqlite":
        _never_reuse_ids_on_sqlite()


def downgrade() -> None:
    raise NotImplementedError("restore a backup instead")
