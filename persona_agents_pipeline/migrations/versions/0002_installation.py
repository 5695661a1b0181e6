"""The installation id: names this `personas` database in every agent's identity tag.

Several databases (staging and production, tenants) may share one ElevenLabs account; the id in the tag
keeps each installation's plan, apply and adoption to its own agents.
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002_installation"
down_revision = "0001_agent_columns"
branch_labels = None
depends_on = None

INSTALLATION_TABLE = "persona_agents_installation"


def upgrade() -> None:
    table = op.create_table(
        INSTALLATION_TABLE,
        sa.Column("installation_id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
    )
    # 12 hex digits: short in a tag, and two installations on one account never draw the same.
    op.bulk_insert(table, [{"installation_id": uuid.uuid4().hex[:12]}])


def downgrade() -> None:
    raise NotImplementedError("agents are tagged with the installation id; restore a backup instead")
