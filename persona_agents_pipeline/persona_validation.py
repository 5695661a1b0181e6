"""Persona validation: the checks a persona's data passes before an agent is built from it.

Nothing here touches the network, the database or Dagster, so every rule is testable on its own.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

TRAIT_FIELDS = ("temper_level", "chattiness", "emotional_attachment")

# Unicode category Cc (C0 and C1 controls and DEL) except tab and newline; a regex, since this runs for
# every persona of every status listing.
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000


class InvalidPersonaError(ValueError):
    """A persona whose data cannot produce an agent; raised before any API call."""

    def __init__(self, persona_id: Any, field: str, reason: str):
        self.persona_id = persona_id
        self.field = field
        self.reason = reason
        super().__init__(f"persona {persona_id}: {field} {reason}")


@dataclass(frozen=True)
class PersonaSpec:
    """The validated inputs an agent is built from."""

    persona_id: int
    name: str
    temper_level: float
    chattiness: float
    emotional_attachment: float
    description: str | None = None


# Characters that print as nothing: zero-width spaces and joiners, bidi marks, BOMs (category Cf) and the
# blank fillers of Hangul and Braille. A text made only of these is empty.
_BLANK_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _invisible(character: str) -> bool:
    return character.isspace() or unicodedata.category(character) == "Cf" or character in _BLANK_FILLERS


def _clean_text(persona_id: Any, field: str, value: Any, max_length: int, required: bool) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            raise InvalidPersonaError(persona_id, field, "is missing")
        return None
    if not isinstance(value, str):
        raise InvalidPersonaError(persona_id, field, f"must be text, got {type(value).__name__}")
    # Control characters (other than ordinary whitespace) have no place in a prompt or an agent name.
    if CONTROL_CHARACTERS.search(value):
        raise InvalidPersonaError(persona_id, field, "contains control characters")
    text = " ".join(value.split()) if field == "name" else value.strip()
    if not text or all(_invisible(character) for character in text):
        if required:
            raise InvalidPersonaError(persona_id, field, "is empty")
        return None
    if len(text) > max_length:
        raise InvalidPersonaError(persona_id, field, f"is {len(text)} characters long (at most {max_length})")
    return text


def _clean_trait(persona_id: Any, field: str, value: Any) -> float:
    if value is None:
        raise InvalidPersonaError(persona_id, field, "is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidPersonaError(persona_id, field, f"must be a number in 0..1, got {value!r:.40}")
    number = float(value)
    if math.isnan(number):
        raise InvalidPersonaError(persona_id, field, "is NaN (must be a number in 0..1)")
    if not 0.0 <= number <= 1.0:
        raise InvalidPersonaError(persona_id, field, f"is {number:g}, outside 0..1")
    return number


def validate_persona(
    persona_id: Any,
    name: Any,
    temper_level: Any,
    chattiness: Any,
    emotional_attachment: Any,
    description: Any = None,
) -> PersonaSpec:
    """Check one persona's data and return the spec an agent is built from, or raise InvalidPersonaError."""
    return PersonaSpec(
        persona_id=persona_id,
        name=_clean_text(persona_id, "name", name, MAX_NAME_LENGTH, required=True),
        temper_level=_clean_trait(persona_id, "temper_level", temper_level),
        chattiness=_clean_trait(persona_id, "chattiness", chattiness),
        emotional_attachment=_clean_trait(persona_id, "emotional_attachment", emotional_attachment),
        description=_clean_text(persona_id, "description", description, MAX_DESCRIPTION_LENGTH, required=False),
    )
