"""Static answers of the sandbox: the agent config's defaults, the premade voices, and the user and models
that a connection test reads.

Bodies follow the examples in the official OpenAPI spec (https://api.elevenlabs.io/openapi.json), trimmed to the
required fields plus the ones a client is likely to read.
"""

from __future__ import annotations

from typing import Any

CONVERSATION_CONFIG_DEFAULTS: dict[str, Any] = {
    "asr": {"quality": "high", "provider": "elevenlabs", "user_input_audio_format": "pcm_16000", "keywords": []},
    "turn": {"turn_timeout": 7.0, "silence_end_call_timeout": -1.0, "mode": "turn"},
    "tts": {
        "model_id": "eleven_turbo_v2",
        "voice_id": "cjVigY5qzO86Huf0OWal",
        "supported_voices": [],
        "agent_output_audio_format": "pcm_16000",
        "optimize_streaming_latency": 3,
        "stability": 0.5,
        "speed": 1.0,
        "similarity_boost": 0.8,
        "pronunciation_dictionary_locators": [],
    },
    "conversation": {"text_only": False, "max_duration_seconds": 600, "client_events": ["audio", "interruption"]},
    "language_presets": {},
    "agent": {
        "first_message": "",
        "language": "en",
        "dynamic_variables": {"dynamic_variable_placeholders": {}},
        "prompt": {
            "prompt": "",
            "llm": "gemini-2.0-flash",
            "temperature": 0.0,
            "max_tokens": -1,
            "tool_ids": [],
            "mcp_server_ids": [],
            "native_mcp_server_ids": [],
            "knowledge_base": [],
            "ignore_default_personality": False,
        },
    },
}

PLATFORM_SETTINGS_DEFAULTS: dict[str, Any] = {
    "evaluation": {"criteria": []},
    "widget": {"variant": "full"},
    "data_collection": {},
    "overrides": {},
    "call_limits": {"agent_concurrency_limit": -1, "daily_limit": 100000, "bursting_enabled": True},
    "privacy": {"record_voice": True, "retention_days": -1, "delete_transcript_and_pii": False},
    "archived": False,
}

ACCESS_INFO: dict[str, Any] = {
    "is_creator": True, "creator_name": "Sandbox User", "creator_email": "sandbox@example.com", "role": "admin",
}

# The API's language/model rule: English needs a v2 English model ("English Agents must use turbo or flash v2"),
# other languages a v2_5 model.
ENGLISH_MODELS = frozenset({"eleven_turbo_v2", "eleven_flash_v2", "eleven_v3_conversational"})

LEGACY_VOICES = {
    "Rachel": "21m00Tcm4TlvDq8ikWAM",
    "Adam": "pNInz6obpgDQGcFmaJgB",
    "Domi": "AZnzlk1XvdvUeBnXmlld",
    "Ethan": "g5CIjZEefAph4nQFvHAz",
}

CURRENT_VOICES = {
    "Alice": "Xb7hH8MSUJpSbSDYk0k2", "Aria": "9BWtsMINqrJLrRacOk9x", "Bill": "pqHfZKP75CvOlQylNhV4",
    "Brian": "nPczCjzI2devNBz1zQrb", "Callum": "N2lVS1w4EtoT3dr4eOWO", "Charlie": "IKne3meq5aSn9XLyUdCD",
    "Charlotte": "XB0fDUnXU5powFXDhCwa", "Chris": "iP95p4xoKVk53GoZ742B", "Daniel": "onwK4e9ZLuTAKqWW03F9",
    "Eric": "cjVigY5qzO86Huf0OWal", "George": "JBFqnCBsd6RMkjVDRZzb", "Jessica": "cgSgspJ2msm6clMCkdW9",
    "Laura": "FGY2WhTYpPnrIDTdsKH5", "Liam": "TX3LPaxmHKxFdv7VOQHJ", "Lily": "pFZP5JQG7iQjIQuC4Bku",
    "Matilda": "XrExE9yKIg1WjnnlVkGX", "River": "SAz9YHcvj6GT2YYXdXww", "Roger": "CwhRBWXzGAHq8TQ4Fs17",
    "Sarah": "EXAVITQu4vr4xnSDxMaL", "Will": "bIHbv24MWmeRgasZH58o",
}


def _voice(name: str, voice_id: str, *, legacy: bool) -> dict[str, Any]:
    return {
        "voice_id": voice_id,
        "name": name,
        "category": "premade",
        "labels": {},
        "description": None,
        "preview_url": f"https://storage.googleapis.com/eleven-public-prod/premade/voices/{voice_id}/preview.mp3",
        "available_for_tiers": [],
        "settings": None,
        "high_quality_base_model_ids": ["eleven_turbo_v2", "eleven_flash_v2", "eleven_turbo_v2_5",
                                        "eleven_flash_v2_5", "eleven_multilingual_v2"],
        "is_legacy": legacy,
        "is_owner": False,
        "is_mixed": False,
    }


VOICES: list[dict[str, Any]] = (
    [_voice(n, v, legacy=False) for n, v in CURRENT_VOICES.items()]
    + [_voice(n, v, legacy=True) for n, v in LEGACY_VOICES.items()]
)

SUBSCRIPTION: dict[str, Any] = {
    "tier": "starter", "character_count": 1000, "character_limit": 10000, "max_character_limit_extension": 10000,
    "can_extend_character_limit": True, "allowed_to_extend_character_limit": True, "voice_slots_used": 1,
    "professional_voice_slots_used": 0, "voice_limit": 10, "voice_add_edit_counter": 0, "professional_voice_limit": 1,
    "can_extend_voice_limit": True, "can_use_instant_voice_cloning": True, "can_use_professional_voice_cloning": True,
    "status": "active", "has_open_invoices": False, "currency": "usd", "billing_period": "monthly_period",
    "character_refresh_period": "monthly_period", "next_character_count_reset_unix": 1738356858,
    "next_invoice": {"amount_due_cents": 1000, "next_payment_attempt_unix": 1738356858},
}

# UserResponseModel.example, except xi_api_key: the sandbox never echoes a key.
USER: dict[str, Any] = {
    "user_id": "1234567890",
    "subscription": {k: v for k, v in SUBSCRIPTION.items() if k not in ("has_open_invoices", "next_invoice")},
    "subscription_extras": {"concurrency": 10, "convai_concurrency": 10, "force_logging_disabled": False},
    "is_new_user": False,
    "can_use_delayed_payment_methods": False,
    "is_onboarding_completed": True,
    "is_onboarding_checklist_completed": True,
    "created_at": 1753999199,
    "first_name": "Sandbox",
    "is_api_key_hashed": True,
    "xi_api_key": "sandbox-key-not-shown",
}


def _model(model_id: str, name: str, group: str) -> dict[str, Any]:
    return {
        "model_id": model_id, "name": name, "can_be_finetuned": True, "can_do_text_to_speech": True,
        "can_do_voice_conversion": False, "can_use_style": model_id == "eleven_multilingual_v2",
        "can_use_speaker_boost": True, "serves_pro_voices": False, "token_cost_factor": 1.0,
        "description": name, "requires_alpha_access": False, "max_characters_request_free_user": 2500,
        "max_characters_request_subscribed_user": 5000, "maximum_text_length_per_request": 1000000,
        "languages": [{"language_id": "en", "name": "English"}], "model_rates": {"character_cost_multiplier": 1},
        "concurrency_group": group,
    }


MODELS: list[dict[str, Any]] = [
    _model("eleven_multilingual_v2", "Eleven Multilingual v2", "standard"),
    _model("eleven_turbo_v2", "Eleven Turbo v2", "turbo"),
    _model("eleven_turbo_v2_5", "Eleven Turbo v2.5", "turbo"),
    _model("eleven_flash_v2", "Eleven Flash v2", "turbo"),
    _model("eleven_flash_v2_5", "Eleven Flash v2.5", "turbo"),
]
