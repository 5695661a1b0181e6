"""The project's own tables and the triggers that fill the change log, shared by the migrations.

Every name is prefixed `persona_agents_`: the `personas` table lives in the application's database,
which may have tables of its own called `persona_changes` or `agent_events`.
"""

import sqlalchemy as sa

# Alembic's own bookkeeping too: the application may run Alembic itself, with its own `alembic_version`.
VERSION_TABLE = "persona_agents_alembic_version"
CHANGE_LOG_TABLE = "persona_agents_changes"
EVENTS_TABLE = "persona_agents_events"
INSTALLATION_TABLE = "persona_agents_installation"
EVENTS_INDEX = "ix_persona_agents_events_persona_id"
BIRTH_INDEX = "ix_persona_agents_changes_persona_id_change"
TRIGGER_PREFIX = "persona_agents_changes_on_"
TRIGGER_FUNCTION = "persona_agents_record_change"
TRAIT_COLUMNS = ("name", "description", "temper_level", "chattiness", "emotional_attachment")


def birth_of(persona_id: str) -> str:
    """SQL for the birth of the persona that has the id `persona_id` (an SQL expression) now: the
    sequence number of the change-log entry of its insert, 0 for a persona older than the change log.
    SQLite gives a deleted persona's id to the next insert; the birth tells the two apart."""
    return (f"COALESCE((SELECT MAX(seq) FROM {CHANGE_LOG_TABLE} WHERE {CHANGE_LOG_TABLE}.persona_id = {persona_id} "
            "AND change = 'insert'), 0)")


def change_log_columns() -> list[sa.Column]:
    return [
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("persona_id", sa.Integer, nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("changed_at", sa.DateTime),
    ]


def event_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("persona_id", sa.Integer, nullable=False),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("at", sa.DateTime, nullable=False),
    ]


def _sqlite_triggers() -> list[str]:
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in TRAIT_COLUMNS)
    insert = f"INSERT INTO {CHANGE_LOG_TABLE} (persona_id, change, changed_at) VALUES ({{row}}.id, '{{kind}}', CURRENT_TIMESTAMP)"
    return [
        f"CREATE TRIGGER {TRIGGER_PREFIX}insert AFTER INSERT ON personas BEGIN "
        + insert.format(row="NEW", kind="insert") + "; END",
        f"CREATE TRIGGER {TRIGGER_PREFIX}delete AFTER DELETE ON personas BEGIN "
        + insert.format(row="OLD", kind="delete") + "; END",
        f"CREATE TRIGGER {TRIGGER_PREFIX}update AFTER UPDATE OF {', '.join(TRAIT_COLUMNS)} ON personas "
        f"WHEN {changed} BEGIN " + insert.format(row="NEW", kind="update") + "; END",
    ]


def _postgresql_triggers() -> list[str]:
    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in TRAIT_COLUMNS)
    execute = f"FOR EACH ROW EXECUTE FUNCTION {TRIGGER_FUNCTION}()"
    return [
        f"""CREATE OR REPLACE FUNCTION {TRIGGER_FUNCTION}() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                INSERT INTO {CHANGE_LOG_TABLE} (persona_id, change, changed_at) VALUES (OLD.id, 'delete', now());
                RETURN OLD;
            END IF;
            INSERT INTO {CHANGE_LOG_TABLE} (persona_id, change, changed_at) VALUES (NEW.id, lower(TG_OP), now());
            RETURN NEW;
        END $$ LANGUAGE plpgsql""",
        f"CREATE TRIGGER {TRIGGER_PREFIX}insert AFTER INSERT ON personas {execute}",
        f"CREATE TRIGGER {TRIGGER_PREFIX}delete AFTER DELETE ON personas {execute}",
        f"CREATE TRIGGER {TRIGGER_PREFIX}update AFTER UPDATE OF {', '.join(TRAIT_COLUMNS)} ON personas "
        f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {TRIGGER_FUNCTION}()",
    ]


def change_log_triggers(dialect: str) -> list[str]:
    return _postgresql_triggers() if dialect == "postgresql" else _sqlite_triggers()
