"""What converge compares: the agent on ElevenLabs against the payload the persona's traits produce.

Every field the project sets is compared (name, tags, first message, prompt, LLM, temperature, voice,
model, stability, similarity, speed, language), after normalising what the API may change without
meaning anything: numbers compare by value (1 == 1.0, floats within FLOAT_TOLERANCE) and lists of plain
values as sets. Fields the project does not set (a knowledge base or tools added in the dashboard,
anything the API fills in) are neither compared nor touched. Tags are compared within the project's own
namespace: a tag someone else added is theirs, kept on repair and not counted as a difference.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .identity import PROJECT_TAG

FLOAT_TOLERANCE = 1e-6
_MISSING = object()


def is_project_tag(tag: Any) -> bool:
    return isinstance(tag, str) and (tag == PROJECT_TAG or tag.startswith(PROJECT_TAG + ":"))


def differing_fields(desired: Mapping[str, Any], remote: Any) -> list[str]:
    """Dotted paths of the desired payload's fields whose remote value differs, in the payload's order."""
    differing: list[str] = []
    _compare(desired, remote, "", differing)
    return differing


def foreign_tags(remote: Any) -> list[str]:
    """The remote agent's tags outside the project's namespace, to keep when its tags are repaired."""
    tags = remote.get("tags") if isinstance(remote, Mapping) else None
    if not isinstance(tags, list):
        return []
    return [tag for tag in tags if isinstance(tag, str) and not is_project_tag(tag)]


def _compare(desired: Any, remote: Any, path: str, differing: list[str]) -> None:
    if isinstance(desired, Mapping):
        remote_fields = remote if isinstance(remote, Mapping) else {}
        for key, value in desired.items():
            _compare(value, remote_fields.get(key, _MISSING), f"{path}.{key}" if path else key, differing)
    elif not (_same_tags(desired, remote) if path == "tags" else _same(desired, remote)):
        differing.append(path)


def _same(desired: Any, remote: Any) -> bool:
    if isinstance(desired, bool) or isinstance(remote, bool):
        return type(desired) is type(remote) and desired == remote
    if isinstance(desired, (int, float)) and isinstance(remote, (int, float)):
        return math.isclose(desired, remote, rel_tol=0.0, abs_tol=FLOAT_TOLERANCE)
    if isinstance(desired, list) and isinstance(remote, list):
        return _sorted(desired) == _sorted(remote)
    return type(desired) is type(remote) and desired == remote


def _sorted(values: list[Any]) -> list[str]:
    return sorted(repr(value) for value in values)


def _same_tags(desired: list[str], remote: Any) -> bool:
    if not isinstance(remote, list):
        return False
    return _sorted(desired) == _sorted([tag for tag in remote if is_project_tag(tag)])
