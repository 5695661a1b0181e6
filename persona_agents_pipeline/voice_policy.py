"""Pure domain rules: voice choice, voice settings, prompt, agent payload and its config hash.

Nothing here touches the network, the database or Dagster, so every rule is testable on its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .identity import LEGACY_INSTALLATION, PROJECT_TAG, identity_marker, identity_tag
from .persona_validation import PersonaSpec

# A trait at or above HIGH counts as high (hot-tempered, chatty); at or below LOW as low (calm, quiet).
# Anything in between on either axis is "moderate" and gets the balanced voice.
HIGH_THRESHOLD = 0.6
LOW_THRESHOLD = 0.4


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

# The seed system's voice ids. Several are ElevenLabs "legacy" premade voices, hidden from the voice list or
# retired since, so the catalogue is configuration: `PERSONA_AGENTS_VOICES` overrides any of these.
DEFAULT_VOICE_CATALOGUE: dict[str, str] = {
    "Bella": "EXAVITQu4vr4xnSDxMaL",
    "Rachel": "21m00Tcm4TlvDq8ikWAM",
    "Adam": "pNInz6obpgDQGcFmaJgB",
    "Domi": "AZnzlk1XvdvUeBnXmlld",
    "Ethan": "g5CIjZEefAph4nQFvHAz",
}

# The API refuses an English agent with any other TTS model than turbo or flash v2 ("English Agents must
# use turbo or flash v2").
DEFAULT_TTS_MODEL = "eleven_turbo_v2"
DEFAULT_LLM = "gemini-2.0-flash"
LANGUAGE = "en"


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
