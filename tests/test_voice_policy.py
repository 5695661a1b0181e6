import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persona_agents_pipeline.identity import (
    LEGACY_INSTALLATION,
    MAX_PERSONA_ID,
    PROJECT_TAG,
    InvalidInstallationIdError,
    identity_marker,
    identity_of,
    identity_tag,
    parse_identity_tag,
    validate_installation_id,
)
from persona_agents_pipeline.persona_validation import InvalidPersonaError, validate_persona
from persona_agents_pipeline.voice_policy import (
    DEFAULT_VOICE_CATALOGUE,
    agent_payload,
    choose_voice,
    config_hash,
    voice_settings,
)

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
names = st.text(min_size=1, max_size=200).filter(lambda text: text.strip() and all(ch.isprintable() for ch in text))
descriptions = st.none() | st.text(max_size=2000).filter(lambda text: all(ch.isprintable() or ch in "\n\t" for ch in text))


def spec(temper=0.5, chat=0.5, emo=0.5, name="Ada", description=None, persona_id=1):
    return validate_persona(persona_id, name, temper, chat, emo, description)


@pytest.mark.parametrize(
    "temper, chat, voice",
    [
        (0.9, 0.9, "Bella"),
        (0.1, 0.9, "Rachel"),
        (0.9, 0.1, "Adam"),
        (0.1, 0.1, "Domi"),
        (0.5, 0.9, "Ethan"),
        (0.9, 0.5, "Ethan"),
        (0.6, 0.6, "Bella"),
        (0.4, 0.4, "Domi"),
        (0.41, 0.59, "Ethan"),
    ],
)
def test_voice_follows_temper_and_chattiness(temper, chat, voice):
    assert choose_voice(spec(temper, chat)).name == voice


def test_voice_settings_follow_the_formula():
    settings = voice_settings(spec(temper=0.5, emo=0.8))
    assert settings == {"stability": 0.65, "similarity_boost": 0.7, "style": 0.4, "use_speaker_boost": True}


@given(temper=unit, chat=unit, emo=unit, name=names, description=descriptions, persona_id=st.integers(1, 10**9))
def test_every_payload_stays_inside_the_documented_ranges(temper, chat, emo, name, description, persona_id):
    payload = agent_payload(validate_persona(persona_id, name, temper, chat, emo, description))
    tts = payload["conversation_config"]["tts"]
    assert 0 <= tts["stability"] <= 1
    assert 0 <= tts["similarity_boost"] <= 1
    assert 0.7 <= tts["speed"] <= 1.2
    # Agents take no style or speaker boost; English agents need a turbo or flash v2 model.
    assert "style" not in tts and "use_speaker_boost" not in tts
    assert payload["conversation_config"]["agent"]["language"] == "en"
    assert tts["model_id"] in {"eleven_turbo_v2", "eleven_flash_v2"}
    assert tts["voice_id"] in DEFAULT_VOICE_CATALOGUE.values()
    assert payload["tags"] == [PROJECT_TAG, identity_tag(LEGACY_INSTALLATION, persona_id)]
    assert identity_marker(persona_id) in payload["name"]
    # Persona text cannot break the JSON body: it round-trips exactly.
    assert json.loads(json.dumps(payload)) == payload
    settings = voice_settings(validate_persona(persona_id, name, temper, chat, emo, description))
    assert 0 <= settings["stability"] <= 1 and 0 <= settings["style"] <= 1


def test_identity_marker_of_one_persona_is_not_a_substring_of_another():
    assert identity_marker(4) not in identity_marker(42)
    assert identity_marker(42) not in identity_marker(421)


def test_prompt_carries_name_description_and_traits():
    prompt = agent_payload(spec(0.9, 0.1, 0.3, name="Greta", description="A skeptical manager."))["conversation_config"][
        "agent"
    ]["prompt"]["prompt"]
    assert "Greta" in prompt and "A skeptical manager." in prompt and "0.90" in prompt


def test_config_hash_ignores_key_order_and_sees_nested_changes():
    payload = agent_payload(spec())
    reordered = json.loads(json.dumps(payload, sort_keys=True))
    assert config_hash(payload) == config_hash(reordered)
    changed = agent_payload(spec(temper=0.51))
    assert config_hash(changed) != config_hash(payload)


@pytest.mark.parametrize(
    "kwargs, field, fragment",
    [
        ({"temper": 1.5}, "temper_level", "outside 0..1"),
        ({"chat": -0.1}, "chattiness", "outside 0..1"),
        ({"emo": math.nan}, "emotional_attachment", "NaN"),
        ({"emo": None}, "emotional_attachment", "missing"),
        ({"temper": "high"}, "temper_level", "must be a number"),
        ({"temper": True}, "temper_level", "must be a number"),
        ({"name": ""}, "name", "empty"),
        ({"name": "   "}, "name", "empty"),
        ({"name": None}, "name", "missing"),
        ({"name": "x" * 10_000}, "name", "at most 200"),
        ({"name": "Bad\x00Name"}, "name", "control characters"),
        ({"description": "line\x1b[31m"}, "description", "control characters"),
        ({"description": "d" * 5000}, "description", "at most 2000"),
    ],
)
def test_invalid_personas_are_refused_naming_persona_and_field(kwargs, field, fragment):
    with pytest.raises(InvalidPersonaError) as caught:
        spec(persona_id=77, **kwargs)
    assert caught.value.field == field
    assert "persona 77" in str(caught.value) and field in str(caught.value) and fragment in str(caught.value)


def test_control_character_pattern_is_exactly_unicode_cc_except_tab_and_newline():
    import unicodedata

    from persona_agents_pipeline.persona_validation import CONTROL_CHARACTERS

    every = "".join(map(chr, range(0x110000))).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    matched = set(CONTROL_CHARACTERS.findall(every))
    expected = {ch for ch in every if unicodedata.category(ch) == "Cc" and ch not in "\n\t"}
    assert matched == expected


@pytest.mark.parametrize(
    "tag, identity",
    [
        ("persona-agents:0123456789ab:42", ("0123456789ab", 42)),
        ("persona-agents:persona:7", ("persona", 7)),  # tagged before installations existed
        ("persona-agents:persona:0001", None),
        ("persona-agents:persona:\u00b2", None),
        ("persona-agents:persona:99999999999999999999", None),
        ("persona-agents:persona:-1", None),
        ("persona-agents:ABC:1", None),
        ("persona-agents", None),
        (None, None),
    ],
)
def test_identity_tags_parse_strictly(tag, identity):
    assert parse_identity_tag(tag) == identity
    if identity:
        assert identity_tag(*identity) == tag


# Every character class a hand-edited id could bring: lowercase (accepted), capitals, separators, other
# scripts, and the separator of the tag itself.
installation_ids = st.text(alphabet=st.sampled_from("abcxyz0189ABZ-_:. \u00e9\u0131\u212a\n"), min_size=0, max_size=40)
persona_ids = st.one_of(st.integers(1, MAX_PERSONA_ID), st.integers(-5, 0), st.integers(MAX_PERSONA_ID + 1, MAX_PERSONA_ID + 5))


@given(installation_id=installation_ids, persona_id=persona_ids)
def test_every_identity_the_tag_writer_accepts_round_trips_and_what_it_refuses_is_refused_everywhere(installation_id, persona_id):
    try:
        validate_installation_id(installation_id)
        installation_ok = True
    except InvalidInstallationIdError as exc:
        installation_ok = False
        assert repr(installation_id)[:20] in str(exc) and "lowercase letters" in str(exc)
    try:
        tag = identity_tag(installation_id, persona_id)
    except ValueError:
        assert not installation_ok or not 0 < persona_id <= MAX_PERSONA_ID
        # Whatever the writer refuses, the reader never takes for an identity either.
        assert parse_identity_tag(f"{PROJECT_TAG}:{installation_id}:{persona_id}") is None
        return
    assert installation_ok
    assert parse_identity_tag(tag) == (installation_id, persona_id)
    agent = {"agent_id": "a", "tags": [PROJECT_TAG, tag]}
    assert identity_of(agent, installation_id) == persona_id


def test_the_largest_persona_id_round_trips_through_its_tag():
    assert parse_identity_tag(identity_tag("prod", MAX_PERSONA_ID)) == ("prod", MAX_PERSONA_ID)
