"""Agent storage of the sandbox: sqlite3, one row per agent.

One row per agent keeps creates O(1) at tens of thousands of agents, and a file
database survives sandbox restarts. Listing uses keyset cursors, so paging
stays correct while agents are created or deleted between pages.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

# sort_by -> SQL expression. call_count_7d is always 0 in the sandbox, so creation order decides.
_SORT_COLUMNS = {"created_at": "seq", "call_count_7d": "seq", "name": "name_key"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL UNIQUE,
    name_key TEXT NOT NULL,
    archived INTEGER NOT NULL,
    doc TEXT NOT NULL
)
"""


def encode_cursor(sort_value: Any, seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([sort_value, seq]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[Any, int] | None:
    try:
        sort_value, seq = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return sort_value, int(seq)
    except (ValueError, TypeError):
        return None


class AgentStore:
    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        self._db.create_function("casefold", 1, lambda s: s.casefold() if isinstance(s, str) else s,
                                 deterministic=True)
        if path:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, agent: dict[str, Any]) -> None:
        """Insert or replace; an update keeps the agent's place in creation order."""
        row = (agent["agent_id"], str(agent.get("name") or "").casefold(),
               int(bool((agent.get("platform_settings") or {}).get("archived"))), json.dumps(agent))
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO agents (agent_id, name_key, archived, doc) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(agent_id) DO UPDATE SET name_key=excluded.name_key, "
                "archived=excluded.archived, doc=excluded.doc",
                row,
            )

    def get(self, agent_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM agents WHERE agent_id = ?", (agent_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def delete(self, agent_id: str) -> bool:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM agents WHERE agent_id = ?", (agent_id,)).rowcount > 0

    def wipe(self) -> int:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM agents").rowcount

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM agents").fetchone()[0]

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM agents ORDER BY seq").fetchall()
        return [json.loads(doc) for (doc,) in rows]

    def page(
        self,
        *,
        search: str | None,
        archived: bool,
        sort_by: str,
        descending: bool,
        page_size: int,
        after: tuple[Any, int] | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page and the cursor of the next one (None on the last page)."""
        column = _SORT_COLUMNS[sort_by]
        where, args = ["archived = ?"], [int(archived)]
        if search:
            where.append("instr(name_key, casefold(?)) > 0")
            args.append(search)
        if after is not None:
            where.append(f"({column}, seq) {'<' if descending else '>'} (?, ?)")
            args.extend(after)
        direction = "DESC" if descending else "ASC"
        sql = (f"SELECT {column}, seq, doc FROM agents WHERE {' AND '.join(where)} "
               f"ORDER BY {column} {direction}, seq {direction} LIMIT ?")
        with self._lock:
            rows = self._db.execute(sql, (*args, page_size + 1)).fetchall()
        agents = [json.loads(doc) for _, _, doc in rows[:page_size]]
        if len(rows) <= page_size:
            return agents, None
        last_sort, last_seq, _ = rows[page_size - 1]
        return agents, encode_cursor(last_sort, last_seq)
