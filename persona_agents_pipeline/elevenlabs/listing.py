"""The agent list's items, checked one by one: an item of a shape the project does not expect (not an
object, no agent_id, a name that is not text, tags that are not a list) is skipped and named, so one odd
agent on the account never stops a run for every persona, and is never taken for anyone's agent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SkippedAgent:
    agent_id: str | None  # None when the item has no usable agent_id
    name: str | None
    problem: str

    def __str__(self) -> str:
        who = f"agent {self.agent_id}" if self.agent_id else "a listed item"
        return f"{who}{f' ({self.name!r})' if self.name else ''}: {self.problem}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def skipped_summary(item: Any) -> SkippedAgent | None:
    """Why this list item is skipped, or None when the project can use it."""
    if not isinstance(item, dict):
        return SkippedAgent(None, None, f"not an object but {type(item).__name__} {str(item)[:40]!r}")
    agent_id = item.get("agent_id") if isinstance(item.get("agent_id"), str) and item.get("agent_id") else None
    name = item.get("name") if isinstance(item.get("name"), str) else None
    if agent_id is None:
        return SkippedAgent(None, name, f"without an agent_id (got {str(item.get('agent_id'))[:40]!r})")
    if name is None:
        problem = "it has no name" if item.get("name") is None else f"its name is {type(item['name']).__name__}, not text"
        return SkippedAgent(agent_id, None, problem)
    tags = item.get("tags")
    if tags is not None and not isinstance(tags, list):
        return SkippedAgent(agent_id, name, f"its tags are {type(tags).__name__}, not a list")
    created = item.get("created_at_unix_secs")
    if created is not None and not _number(created):
        return SkippedAgent(agent_id, name, f"its created_at_unix_secs is {type(created).__name__}, not a number")
    return None
