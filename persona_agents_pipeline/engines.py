"""The database engines of a process: one per database URL, shared by the persona store and the SQL budget,
with a bounded pool on PostgreSQL and SQLite's writers queued on its busy timeout."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from .config import ConfigurationError, database_pool_size

SQLITE_BUSY_TIMEOUT_MS = 60_000
SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def normalise_database_url(database_url: str) -> str:
    url = make_url(database_url)
    if url.get_backend_name() not in SUPPORTED_BACKENDS:
        raise ConfigurationError(
            f"cannot use the database (check PERSONAS_DATABASE_URL): {url.get_backend_name()} is not supported; "
            "use SQLite (sqlite:///path/to/file.db) or PostgreSQL (postgresql://user@host/db)"
        )
    # Plain postgresql:// URLs would pick psycopg2; the project ships psycopg 3.
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


# Connections a process waits for a free pooled one before giving up (a lock wait holds one that long at most).
POOL_TIMEOUT_SECONDS = 60
# PostgreSQL's words when it has no connection slot left for us.
_REFUSED = ("too many clients", "remaining connection slots are reserved", "too many connections")


class DatabaseConnectionsExhaustedError(ConfigurationError):
    """The database server refused a connection because all of its connection slots are taken."""


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def shared_engine(database_url: str) -> Engine:
    """One engine per database URL per process, shared by the store and the SQL budget, so a process holds
    at most PERSONA_AGENTS_DB_POOL_SIZE connections to a PostgreSQL database however many threads it runs."""
    url = normalise_database_url(database_url)
    with _engines_lock:
        if url not in _engines:
            _engines[url] = create_store_engine(url)
        return _engines[url]


def _fresh_pools_in_a_forked_child() -> None:
    """A forked child (Celery's prefork pool, multiprocessing) inherits the engines with the parent's pooled
    connections: one socket used by two processes. It keeps the engines and starts their pools afresh, leaving
    the parent's connections open for the parent."""
    global _engines_lock
    _engines_lock = threading.Lock()  # another thread may have held it at the fork
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_fresh_pools_in_a_forked_child)


def close_shared_engines() -> None:
    """Close every pooled connection of this process (tests open databases per test)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _postgres_engine(url) -> Engine:
    pool_size = database_pool_size()
    # Threads beyond the pool wait for a connection instead of opening more: a fixed, documented number
    # per process is what lets many processes share the server's max_connections.
    engine = create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=0,
                           pool_timeout=POOL_TIMEOUT_SECONDS,
                           connect_args={} if "application_name" in url.query else {"application_name": "persona-agents"})

    @event.listens_for(engine, "handle_error")
    def _explain_refusal(context):
        said = str(context.original_exception).strip().splitlines()[-1:] or [""]
        if any(words in said[0] for words in _REFUSED):
            raise DatabaseConnectionsExhaustedError(
                f"the PostgreSQL server at {url.host} refused a connection ({said[0]}): its connection slots "
                "(max_connections, or a limit on the role) are all in use. Each persona-agents process uses at most "
                f"PERSONA_AGENTS_DB_POOL_SIZE connections (now {pool_size}); run fewer processes at once, lower "
                "that setting, or raise max_connections on the server"
            ) from None

    return engine


def create_store_engine(database_url: str) -> Engine:
    """A new engine; use `shared_engine` unless the caller disposes of it itself."""
    url = make_url(normalise_database_url(database_url))
    if url.get_backend_name() != "sqlite":
        return _postgres_engine(url)

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, decide when transactions begin (see the "begin" hook below).
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        # A deferred transaction that reads and then writes can fail at once with "database is locked";
        # taking the write lock up front makes concurrent writers wait their turn instead.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
