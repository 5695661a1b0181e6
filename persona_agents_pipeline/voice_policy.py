"""Pure domain rules: persona validation, voice choice, voice settings, prompt and agent payload.

Nothing here touches the network, the database or Dagster, so every rule is testable on its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping

TRAIT_FIELDS = ("temper_level", "chattiness", "emotional_attachment")

# A trait at or above HIGH counts as high (hot-tempered, chatty); at or below LOW as low (calm, quiet).
# Anything in between on either axis is "moderate" and gets the balanced voice.
HIGH_THRESHOLD = 0.6
LOW_THRESHOLD = 0.4

# Unicode category Cc (C0 and C1 controls and DEL) except tab and newline; a regex, since this runs for
# every persona of every status listing.
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000

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


@dataclass(frozen=True)
class VoiceProfile:
    name: str
    style: str


VOICE_PROFILES: dict[str, VoiceProfile] = {
    "Bella": VoiceProfile("Bella", "assertive"),
    "Rachel": VoiceProfile("Rachel", "warm"),
    "Adam": VoiceProfile("Adam", "authoritative"),
    "Domi": VoiceProfile("Domi", "gentle"),
    "Ethan": VoiceProfile("Ethan", "balanced"),
}

# The seed system's voice ids. Several are legacy or retired upstream (see the API reference §6), so the
# catalogue is configuration: `PERSONA_AGENTS_VOICES` overrides any of these.
DEFAULT_VOICE_CATALOGUE: dict[str, str] = {
    "Bella": "EXAVITQu4vr4xnSDxMaL",
    "Rachel": "21m00Tcm4TlvDq8ikWAM",
    "Adam": "pNInz6obpgDQGcFmaJgB",
    "Domi": "AZnzlk1XvdvUeBnXmlld",
    "Ethan": "g5CIjZEefAph4nQFvHAz",
}

# English agents must use a turbo or flash v2 model (API reference §3.1, language/model rule).
DEFAULT_TTS_MODEL = "eleven_turbo_v2"
DEFAULT_LLM = "gemini-2.0-flash"
LANGUAGE = "en"


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


def choose_voice(spec: PersonaSpec) -> VoiceProfile:
    """Pick the voice from temper and chattiness; anything moderate gets the balanced voice."""
    hot = spec.temper_level >= HIGH_THRESHOLD
    calm = spec.temper_level <= LOW_THRESHOLD
    chatty = spec.chattiness >= HIGH_THRESHOLD
    quiet = spec.chattiness <= LOW_THRESHOLD
    if hot and chatty:
        return VOICE_PROFILES["Bella"]
    if calm and chatty:
        return VOICE_PROFILES["Rachel"]
    if hot and quiet:
        return VOICE_PROFILES["Adam"]
    if calm and quiet:
        return VOICE_PROFILES["Domi"]
    return VOICE_PROFILES["Ethan"]


def _unit(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4)


def voice_settings(spec: PersonaSpec) -> dict[str, Any]:
    """The four seed voice settings, kept on the persona row (the agents API accepts only some of them)."""
    return {
        "stability": _unit(0.5 + spec.temper_level * 0.3),
        "similarity_boost": 0.7,
        "style": _unit(spec.emotional_attachment * 0.5),
        "use_speaker_boost": True,
    }


def _describe(value: float, low: str, middle: str, high: str) -> str:
    if value >= HIGH_THRESHOLD:
        return high
    if value <= LOW_THRESHOLD:
        return low
    return middle


def conversation_prompt(spec: PersonaSpec) -> str:
    temper = _describe(spec.temper_level, "calm and patient", "even-tempered", "quick-tempered and blunt")
    talk = _describe(spec.chattiness, "reserved; you answer briefly", "conversational", "talkative; you elaborate freely")
    bond = _describe(
        spec.emotional_attachment, "emotionally distant", "friendly but measured", "warm and emotionally invested"
    )
    lines = [
        f"You are {spec.name}, a persona in a conversation training session.",
        f"Temperament: {temper} (temper level {spec.temper_level:.2f}).",
        f"Talkativeness: {talk} (chattiness {spec.chattiness:.2f}).",
        f"Attachment: {bond} toward the person you talk to (emotional attachment {spec.emotional_attachment:.2f}).",
    ]
    if spec.description:
        lines.append(f"Background: {spec.description}")
    lines.append("Stay in character for the whole conversation and never say that you are an AI.")
    return "\n".join(lines)


def first_message(spec: PersonaSpec) -> str:
    if spec.chattiness >= HIGH_THRESHOLD:
        return f"Hi! I'm {spec.name}. So good to finally talk, what's on your mind?"
    if spec.temper_level >= HIGH_THRESHOLD:
        return f"{spec.name}. What do you want?"
    return f"Hello, I'm {spec.name}."


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


def agent_name(spec: PersonaSpec) -> str:
    return f"{spec.name[:100]} {identity_marker(spec.persona_id)}"


def agent_payload(
    spec: PersonaSpec,
    voice_catalogue: Mapping[str, str] = DEFAULT_VOICE_CATALOGUE,
    *,
    installation_id: str = LEGACY_INSTALLATION,
    tts_model: str = DEFAULT_TTS_MODEL,
    llm: str = DEFAULT_LLM,
) -> dict[str, Any]:
    """The complete create body. Agents take only stability, similarity_boost and speed as voice knobs."""
    voice = choose_voice(spec)
    settings = voice_settings(spec)
    return {
        "name": agent_name(spec),
        "tags": [PROJECT_TAG, identity_tag(installation_id, spec.persona_id)],
        "conversation_config": {
            "agent": {
                "first_message": first_message(spec),
                "language": LANGUAGE,
                "prompt": {"prompt": conversation_prompt(spec), "llm": llm, "temperature": 0.7},
            },
            "tts": {
                "model_id": tts_model,
                "voice_id": voice_catalogue[voice.name],
                "stability": settings["stability"],
                "similarity_boost": settings["similarity_boost"],
                "speed": 1.0,
            },
        },
    }


def config_hash(payload: Mapping[str, Any]) -> str:
    """Stable hash of an agent config: canonical JSON (sorted keys), so key order never matters.

    Tags are identity, not config: they are left out, so the hash is the same in every installation and
    computable from settings alone.
    """
    config = {key: value for key, value in payload.items() if key != "tags"}
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class AgentTemplate:
    """The desired agent for any persona: the payload and its config hash, from configuration alone."""

    voice_catalogue: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_VOICE_CATALOGUE))
    tts_model: str = DEFAULT_TTS_MODEL
    installation_id: str = LEGACY_INSTALLATION

    def payload(self, spec: PersonaSpec) -> dict[str, Any]:
        return agent_payload(spec, self.voice_catalogue, installation_id=self.installation_id, tts_model=self.tts_model)

    def config_hash(self, spec: PersonaSpec) -> str:
        return config_hash(self.payload(spec))
