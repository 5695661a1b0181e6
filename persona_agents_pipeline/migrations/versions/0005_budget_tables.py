"""The shared API budget's tables join the project's: `persona_agents_budget_*`, made by this revision.

Earlier versions created `api_budget_accounts`, `api_budget_slots` and `api_budget_starts` on first use, outside
the migrations. Where they exist they are renamed, rows kept; an accounts table from before the shared rate
gets its two rate columns, with defaults meaning "nothing learnt yet". The columns are written out here, not
imported from the budget, so this revision stays what it was when later ones change the tables.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_budget_tables"
down_revision = "0004_database_identity"
branch_labels = None
depends_on = None

OLD_PREFIX, PREFIX = "api_budget_", "persona_agents_budget_"


def _rate_columns() -> list[sa.Column]:
    return [
        sa.Column("rate", sa.Float, nullable=False, server_default="0"),
        sa.Column("rate_changed_at", sa.Float, nullable=False, server_default="0"),
    ]


def _tables() -> dict[str, list[sa.Column]]:
    return {
        "accounts": [
            sa.Column("account", sa.String(64), primary_key=True),
            sa.Column("account_limit", sa.Integer, nullable=False),
            sa.Column("concurrency", sa.Integer, nullable=False),
            sa.Column("source", sa.String(16), nullable=False),
            sa.Column("paused_until", sa.Float, nullable=False),
            sa.Column("changed_at", sa.Float, nullable=False),
            sa.Column("interactive_seen_at", sa.Float, nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
            *_rate_columns(),
        ],
        "slots": [
            sa.Column("account", sa.String(64), primary_key=True),
            sa.Column("slot", sa.Integer, primary_key=True),
            sa.Column("holder", sa.String(32), nullable=True),
            sa.Column("lease_until", sa.Float, nullable=False),
        ],
        "starts": [
            sa.Column("account", sa.String(64), primary_key=True),
            sa.Column("slot", sa.Integer, primary_key=True),
            sa.Column("started_at", sa.Float, nullable=False),
        ],
    }


def _rename(old: str, new: str, postgresql: bool) -> None:
    op.rename_table(old, new)
    if postgresql:  # the primary key's index keeps its old name otherwise
        op.execute(f"ALTER INDEX IF EXISTS {old}_pkey RENAME TO {new}_pkey")


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for name, columns in _tables().items():
        if OLD_PREFIX + name in existing:
            _rename(OLD_PREFIX + name, PREFIX + name, bind.dialect.name == "postgresql")
        else:
            op.create_table(PREFIX + name, *columns)
    present = {column["name"] for column in sa.inspect(bind).get_columns(PREFIX + "accounts")}
    for column in _rate_columns():
        if column.name not in present:
            op.add_column(PREFIX + "accounts", column)


def downgrade() -> None:
    raise NotImplementedError("restore a backup instead")
