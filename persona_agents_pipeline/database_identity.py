"""The identity of the database at hand: what a copy of the database cannot keep.

Its own module because the installation rules and the migration that records it both need it, and the
migrations must not import what runs them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class DatabaseIdentity:
    key: str  # compared: what a copy of the database cannot keep
    location: str  # shown to the operator


def database_identity(connection: Connection) -> DatabaseIdentity:
    """PostgreSQL: the cluster's system identifier (new on every initdb, kept by replicas), the database
    and the schema. SQLite: the file's device and inode, which a copy never shares with its original
    while a reopen, a symlink or another spelling of the path does."""
    if connection.dialect.name == "postgresql":
        try:
            with connection.begin_nested():  # a role refused pg_control_system falls back to the names alone
                system = connection.scalar(sa.text("SELECT system_identifier FROM pg_control_system()"))
        except sa.exc.DBAPIError:
            system = "unknown-cluster"
        database, schema = connection.execute(sa.text("SELECT current_database(), current_schema()")).one()
        return DatabaseIdentity(f"postgresql:{system}:{database}:{schema}",
                                f"PostgreSQL database {database!r}, schema {schema!r} of cluster {system}")
    files = [row[2] for row in connection.exec_driver_sql("PRAGMA database_list") if row[1] == "main"]
    if not files or not files[0]:
        return DatabaseIdentity("sqlite:memory", "an in-memory SQLite database")
    status = os.stat(files[0])
    return DatabaseIdentity(f"sqlite:{status.st_dev}:{status.st_ino}", f"SQLite file {Path(files[0]).resolve()}")
