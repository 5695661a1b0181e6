"""Agent identity: the tags and name marker that say which installation's persona an agent belongs to,
and the rule for installation ids.

Nothing here touches the network, the database or Dagster, so every rule is testable on its own.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

# Tag that marks an agent as made by this project, and the per-persona identity tag. Together with the
# identity marker in the agent's name (searchable through the list endpoint's `search`), they let us
# find an agent again after a create whose response was lost.
PROJECT_TAG = "persona-agents"
# Identity tags name the installation (one `personas` database) as well as the persona, so several
# installations can share one ElevenLabs account without taking each other's agents for their own.
# LEGACY_INSTALLATION stands where tags written before installations existed have no installation id.
LEGACY_INSTALLATION = "persona"
# An installation id is what `identity_tag` writes and `parse_identity_tag` reads back: one pattern for
# both, so no id can be written that the parser would not recognise as ours.
INSTALLATION_ID_RULE = "1 to 32 lowercase letters a-z and digits 0-9"
_INSTALLATION_ID = "[0-9a-z]{1,32}"
# Persona ids fit a 64-bit integer column; a tag naming anything larger is nobody's identity.
MAX_PERSONA_ID = 2**63 - 1
_IDENTITY_TAG = re.compile(rf"{PROJECT_TAG}:({_INSTALLATION_ID}):([1-9][0-9]{{0,{len(str(MAX_PERSONA_ID)) - 1}}})")


class InvalidInstallationIdError(ValueError):
    """An installation id that identity tags cannot carry; the message names the value and the rule."""


def validate_installation_id(value: Any, source: str = "the installation id") -> str:
    """The id unchanged when an identity tag can carry it, else InvalidInstallationIdError."""
    if not isinstance(value, str) or re.fullmatch(_INSTALLATION_ID, value) is None:
        raise InvalidInstallationIdError(
            f"{source} {value!r:.60} is not valid: an installation id is {INSTALLATION_ID_RULE}, "
            "because it is written into every agent's identity tag"
        )
    return value


def identity_tag(installation_id: str, persona_id: int) -> str:
    """The tag naming the agent's owner: `persona-agents:<installation>:<persona id>`; refuses what
    `parse_identity_tag` would not read back."""
    validate_installation_id(installation_id)
    if isinstance(persona_id, bool) or not isinstance(persona_id, int) or not 0 < persona_id <= MAX_PERSONA_ID:
        raise ValueError(f"persona id {persona_id!r:.40} cannot be tagged: persona ids run from 1 to {MAX_PERSONA_ID}")
    return f"{PROJECT_TAG}:{installation_id}:{persona_id}"


def parse_identity_tag(tag: Any) -> tuple[str, int] | None:
    """(installation id, persona id) from an identity tag; None for any other tag.

    Strict on purpose: `persona:0001`, `persona:²` or an id beyond the integer range name no persona,
    so an agent carrying one is never taken for another persona's agent.
    """
    match = _IDENTITY_TAG.fullmatch(tag) if isinstance(tag, str) else None
    if match is None or int(match.group(2)) > MAX_PERSONA_ID:
        return None
    return match.group(1), int(match.group(2))


def identity_of(agent: Mapping[str, Any], installation_id: str) -> int | None:
    """The persona this installation's agent belongs to; None for agents of others or of no one.

    Agents tagged before installations existed (`persona-agents:persona:<id>`) are not counted as ours:
    they may belong to any installation on the account.
    """
    tags = agent.get("tags") or []
    if PROJECT_TAG not in tags:
        return None
    for tag in tags:
        identity = parse_identity_tag(tag)
        if identity is not None and identity[0] == installation_id:
            return identity[1]
    return None


def identity_marker(persona_id: Any) -> str:
    """Text in the agent name that the list endpoint's name search finds for exactly this persona."""
    return f"[persona:{persona_id}]"
