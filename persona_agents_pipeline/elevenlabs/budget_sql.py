"""The shared API budget in a SQL database: the personas database (SQLite or PostgreSQL) by default.

Three small tables, `persona_agents_budget_*`, made by the project's migrations like its other tables
(client_factory runs them where the budget finds its tables missing). Every primitive is one short
transaction: on SQLite the store's engine begins it with BEGIN IMMEDIATE (writers queue); on PostgreSQL rows
are locked FOR UPDATE SKIP LOCKED, so concurrent callers take different slots instead of waiting on each other.
"""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, func, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from .budget_backend import BudgetState

_metadata = MetaData()
accounts = Table(
    "persona_agents_budget_accounts", _metadata,
    Column("account", String(64), primary_key=True),
    Column("account_limit", Integer, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("source", String(16), nullable=False),
    Column("paused_until", Float, nullable=False),
    Column("changed_at", Float, nullable=False),
    Column("interactive_seen_at", Float, nullable=False),
    Column("version", Integer, nullable=False),
    Column("rate", Float, nullable=False, server_default="0"),
    Column("rate_changed_at", Float, nullable=False, server_default="0"),
)
slots = Table(
    "persona_agents_budget_slots", _metadata,
    Column("account", String(64), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("holder", String(32), nullable=True),
    Column("lease_until", Float, nullable=False),
)
starts = Table(
    "persona_agents_budget_starts", _metadata,
    Column("account", String(64), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("started_at", Float, nullable=False),
)


# The database's clock in epoch seconds: every host reading it sees the same time.
_NOW = {
    "postgresql": "SELECT extract(epoch from clock_timestamp())::float8",
    "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
}


def missing_tables(engine: Engine) -> list[str]:
    """The budget's tables the database lacks (all of them before the migrations that make them ran)."""
    present = set(inspect(engine).get_table_names())
    return [name for name in _metadata.tables if name not in present]


class SqlBudgetBackend:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._now_sql = text(_NOW[engine.dialect.name])

    def close(self) -> None:
        # The engine is the process's shared one (engines.py): this closes idle connections; it opens new ones if used.
        self.engine.dispose()

    def now(self) -> float:
        with self.engine.connect() as connection:
            return self._clock(connection)

    def _clock(self, connection) -> float:
        return float(connection.execute(self._now_sql).scalar())

    def state(self, account: str) -> BudgetState | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(accounts).where(accounts.c.account == account)).mappings().first()
        if row is None:
            return None
        return BudgetState(**{key: value for key, value in row.items() if key != "account"})

    def create_state(self, account: str, state: BudgetState) -> None:
        try:
            with self.engine.begin() as connection:
                if connection.execute(select(accounts.c.version).where(accounts.c.account == account)).first():
                    return
                connection.execute(insert(accounts).values(account=account, **asdict(state)))
        except IntegrityError:
            pass  # another process created it between our check and our insert

    def compare_and_set(self, account: str, expected_version: int, new: BudgetState) -> bool:
        with self.engine.begin() as connection:
            changed = connection.execute(
                update(accounts)
                .where(accounts.c.account == account, accounts.c.version == expected_version)
                .values(**asdict(new))
            ).rowcount
        return changed == 1

    def _ensure_rows(self, connection, table: Table, account: str, end: int, empty: dict) -> None:
        count = connection.execute(select(func.count()).select_from(table).where(table.c.account == account)).scalar()
        if count < end:
            present = set(connection.execute(select(table.c.slot).where(table.c.account == account)).scalars())
            missing = [{"account": account, "slot": slot, **empty} for slot in range(end) if slot not in present]
            if missing:
                connection.execute(insert(table), missing)

    def take_slot(self, account: str, first: int, end: int, holder: str, now: float, lease_until: float) -> int | None:
        try:
            with self.engine.begin() as connection:
                self._ensure_rows(connection, slots, account, end, {"holder": None, "lease_until": 0.0})
                free = connection.execute(
                    select(slots.c.slot)
                    .where(slots.c.account == account, slots.c.slot >= first, slots.c.slot < end,
                           slots.c.lease_until < now)
                    .order_by(slots.c.slot).limit(1).with_for_update(skip_locked=True)
                ).scalar()
                if free is None:
                    return None
                connection.execute(update(slots).where(slots.c.account == account, slots.c.slot == free)
                                   .values(holder=holder, lease_until=lease_until))
                return free
        except IntegrityError:
            return None  # two processes added the same missing rows; the caller polls again

    def release_slot(self, account: str, slot: int, holder: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(update(slots)
                               .where(slots.c.account == account, slots.c.slot == slot, slots.c.holder == holder)
                               .values(holder=None, lease_until=0.0))

    def take_start(self, account: str, first: int, end: int, window: float, gap: float) -> tuple[int, float] | None:
        try:
            with self.engine.begin() as connection:  # on SQLite, waits here for the write lock
                # One taker per account at a time on PostgreSQL too (SQLite's BEGIN IMMEDIATE already is), so
                # the gap to the newest start holds; the ring entry's own lock below keeps the ring exact anyway.
                connection.execute(select(accounts.c.version).where(accounts.c.account == account).with_for_update())
                self._ensure_rows(connection, starts, account, end, {"started_at": 0.0})
                oldest = connection.execute(
                    select(starts.c.slot, starts.c.started_at)
                    .where(starts.c.account == account, starts.c.slot >= first, starts.c.slot < end)
                    .order_by(starts.c.started_at, starts.c.slot).limit(1).with_for_update(skip_locked=True)
                ).first()
                if oldest is None:
                    return None  # every entry is being taken right now by someone else
                newest = connection.execute(select(func.max(starts.c.started_at))
                                            .where(starts.c.account == account)).scalar()
                start = max(self._clock(connection), oldest.started_at + window, newest + gap)
                connection.execute(update(starts).where(starts.c.account == account, starts.c.slot == oldest.slot)
                                   .values(started_at=start))
                return oldest.slot, start
        except IntegrityError:
            return None

    def move_start(self, account: str, entry: int, reserved: float) -> float | None:
        with self.engine.begin() as connection:
            now = self._clock(connection)
            moved = connection.execute(update(starts).where(starts.c.account == account, starts.c.slot == entry,
                                                            starts.c.started_at == reserved)
                                       .values(started_at=now)).rowcount
        return now if moved == 1 else None

    def held_slots(self, account: str, now: float) -> int:
        with self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(slots)
                                      .where(slots.c.account == account, slots.c.lease_until >= now)).scalar()
