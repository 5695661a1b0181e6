"""Request validation of the sandbox, answering in pydantic-v2 / FastAPI 422 style, the body every agent endpoint
declares for 422 in the OpenAPI spec: `{"detail": [{"type", "loc", "msg", "input", "ctx"}]}`."""

from __future__ import annotations

import copy
from typing import Any

from .data import CONVERSATION_CONFIG_DEFAULTS, ENGLISH_MODELS

Loc = list[str | int]

# (field, lower bound, upper bound) for conversation_config.tts: the ranges the API accepts.
_TTS_RANGES = (("stability", 0.0, 1.0), ("similarity_boost", 0.0, 1.0), ("speed", 0.7, 1.2))


def _num(value: float) -> str:
    return f"{value:g}"


def issue(kind: str, loc: Loc, msg: str, value: Any, ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx is not None:
        item["ctx"] = ctx
    return item


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Dicts merge recursively; arrays and scalars replace: how the API's PATCH merges an agent's config."""
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check_types(body: dict[str, Any], *, create: bool) -> list[dict[str, Any]]:
    issues: list[dict[str, Any]] = []
    if create and "conversation_config" not in body:
        issues.append(issue("missing", ["body", "conversation_config"], "Field required", body))
    for name, wanted, kind, msg in (
        ("conversation_config", dict, "dict_type", "Input should be a valid dictionary"),
        ("platform_settings", dict, "dict_type", "Input should be a valid dictionary"),
        ("name", str, "string_type", "Input should be a valid string"),
        ("tags", list, "list_type", "Input should be a valid list"),
    ):
        value = body.get(name)
        nullable = not (create and name == "conversation_config")
        if name in body and not isinstance(value, wanted) and not (value is None and nullable):
            issues.append(issue(kind, ["body", name], msg, value))
    tags = body.get("tags")
    if isinstance(tags, list):
        for index, tag in enumerate(tags):
            if not isinstance(tag, str):
                issues.append(issue("string_type", ["body", "tags", index], "Input should be a valid string", tag))
    return issues


def _check_tts(conversation_config: dict[str, Any]) -> list[dict[str, Any]]:
    tts = conversation_config.get("tts")
    if not isinstance(tts, dict):
        return []
    issues = []
    for name, low, high in _TTS_RANGES:
        if name not in tts:
            continue
        value, loc = tts[name], ["body", "conversation_config", "tts", name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            issues.append(issue("float_type", loc, "Input should be a valid number", value))
        elif value < low:
            issues.append(issue("greater_than_equal", loc, f"Input should be greater than or equal to {_num(low)}",
                                value, {"ge": low}))
        elif value > high:
            issues.append(issue("less_than_equal", loc, f"Input should be less than or equal to {_num(high)}",
                                value, {"le": high}))
    return issues


def _check_language_model(effective_config: dict[str, Any], given: Any) -> list[dict[str, Any]]:
    language = (effective_config.get("agent") or {}).get("language") or "en"
    model = (effective_config.get("tts") or {}).get("model_id") or "eleven_turbo_v2"
    if language == "en" and model not in ENGLISH_MODELS:
        message = "English Agents must use turbo or flash v2"
    elif language != "en" and not str(model).endswith("_v2_5"):
        message = "Non-english Agents must use turbo or flash v2_5"
    else:
        return []
    return [issue("value_error", ["body", "conversation_config"], f"Value error, {message}", given, {"error": {}})]


def validate_agent_body(body: Any, stored_config: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issues for a create (stored_config None) or a PATCH of an agent holding stored_config."""
    if not isinstance(body, dict):
        return [issue("model_attributes_type", ["body"],
                      "Input should be a valid dictionary or object to extract fields from", body)]
    issues = _check_types(body, create=stored_config is None)
    if issues:
        return issues
    given = body.get("conversation_config") or {}
    issues = _check_tts(given)
    if issues:
        return issues
    # The rule applies to the config the agent would end up with, so a PATCH of only
    # the language is checked against the stored model.
    base = stored_config if stored_config is not None else CONVERSATION_CONFIG_DEFAULTS
    return _check_language_model(deep_merge(base, given), given)
