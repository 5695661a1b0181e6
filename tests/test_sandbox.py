"""The sandbox speaks the agents API wire format: endpoints, error bodies, limits and faults. Raw HTTP, no client."""

from __future__ import annotations

import logging
import re
import socket
import struct

import pytest
import requests

from persona_agents_pipeline.sandbox import SandboxServer
from persona_agents_pipeline.sandbox.local_servers import wait_until

KEY = {"xi-api-key": "sandbox-test-key"}
EN_OK = {"conversation_config": {"agent": {"language": "en"}, "tts": {"model_id": "eleven_turbo_v2"}}}


def _create(sandbox, body=None, **extra) -> str:
    response = requests.post(f"{sandbox.url}/v1/convai/agents/create", json=body or {"conversation_config": {}},
                             headers=KEY, **extra)
    assert response.status_code == 200, response.text
    return response.json()["agent_id"]


@pytest.mark.parametrize("headers, legacy_status", [
    ({}, "needs_authorization"),
    ({"xi-api-key": "nope"}, "invalid_api_key"),
])
def test_unauthenticated_requests_get_401_in_the_current_envelope(sandbox, headers, legacy_status):
    response = requests.get(f"{sandbox.url}/v1/convai/agents", headers=headers)
    assert response.status_code == 401
    detail = response.json()["detail"]
    assert detail["type"] == "authentication_error"
    assert detail["status"] == legacy_status
    assert re.fullmatch(r"[0-9a-f]{32}", detail["request_id"])
    assert response.headers["x-trace-id"] == detail["request_id"]


def test_restricted_key_lacks_convai_permission_but_reads_voices(sandbox):
    restricted = {"xi-api-key": "sandbox-restricted-key"}
    response = requests.get(f"{sandbox.url}/v1/convai/agents", headers=restricted)
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "missing_permissions"
    assert "convai_read" in response.json()["detail"]["message"]
    assert requests.get(f"{sandbox.url}/v1/voices", headers=restricted).status_code == 200


def test_create_returns_agent_id_and_get_fills_defaults(sandbox):
    agent_id = _create(sandbox, {"name": "Ada", "tags": ["t1"],
                                 "conversation_config": {"tts": {"stability": 0.2}}})
    assert re.fullmatch(r"agent_[a-z0-9]{28}", agent_id)
    agent = requests.get(f"{sandbox.url}/v1/convai/agents/{agent_id}", headers=KEY).json()
    assert agent["name"] == "Ada" and agent["tags"] == ["t1"]
    tts = agent["conversation_config"]["tts"]
    assert tts["stability"] == 0.2 and tts["similarity_boost"] == 0.8 and tts["voice_id"] == "cjVigY5qzO86Huf0OWal"
    assert agent["conversation_config"]["agent"]["language"] == "en"
    assert agent["metadata"]["created_at_unix_secs"] <= agent["metadata"]["updated_at_unix_secs"]
    assert agent["phone_numbers"] == [] and agent["access_info"]["role"] == "admin"


def test_create_without_conversation_config_is_422(sandbox):
    response = requests.post(f"{sandbox.url}/v1/convai/agents/create", json={"name": "x"}, headers=KEY)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "conversation_config"]
    assert response.json()["detail"][0]["type"] == "missing"


@pytest.mark.parametrize("tts, field, kind", [
    ({"stability": 1.5}, "stability", "less_than_equal"),
    ({"similarity_boost": -0.1}, "similarity_boost", "greater_than_equal"),
    ({"speed": 1.3}, "speed", "less_than_equal"),
    ({"speed": 0.5}, "speed", "greater_than_equal"),
])
def test_out_of_range_tts_values_are_422(sandbox, tts, field, kind):
    response = requests.post(f"{sandbox.url}/v1/convai/agents/create",
                             json={"conversation_config": {"tts": tts}}, headers=KEY)
    assert response.status_code == 422
    issue = response.json()["detail"][0]
    assert issue["loc"] == ["body", "conversation_config", "tts", field]
    assert issue["type"] == kind


@pytest.mark.parametrize("language, model, accepted", [
    ("en", "eleven_turbo_v2", True),
    ("en", "eleven_flash_v2", True),
    ("en", "eleven_v3_conversational", True),
    ("en", "eleven_turbo_v2_5", False),
    ("de", "eleven_flash_v2_5", True),
    ("de", "eleven_turbo_v2", False),
    ("fr", "eleven_multilingual_v2", False),
])
def test_language_model_rule(sandbox, language, model, accepted):
    body = {"conversation_config": {"agent": {"language": language}, "tts": {"model_id": model}}}
    response = requests.post(f"{sandbox.url}/v1/convai/agents/create", json=body, headers=KEY)
    assert (response.status_code == 200) is accepted
    if not accepted:
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "value_error"
        assert "Agents must use turbo or flash" in response.json()["detail"][0]["msg"]


def test_patch_deep_merges_replaces_arrays_and_checks_the_resulting_config(sandbox):
    agent_id = _create(sandbox, {"name": "A", "tags": ["a", "b"], "conversation_config": {
        "agent": {"first_message": "hi", "prompt": {"prompt": "p1"}}}})
    url = f"{sandbox.url}/v1/convai/agents/{agent_id}"
    response = requests.patch(url, json={"tags": ["c"], "conversation_config": {"agent": {"prompt": {"prompt": "p2"}}}},
                              headers=KEY)
    assert response.status_code == 200
    agent = response.json()
    assert agent["tags"] == ["c"]
    assert agent["conversation_config"]["agent"]["first_message"] == "hi"
    assert agent["conversation_config"]["agent"]["prompt"]["prompt"] == "p2"
    # Only the language changes, but German with the stored English model is invalid.
    response = requests.patch(url, json={"conversation_config": {"agent": {"language": "de"}}}, headers=KEY)
    assert response.status_code == 422
    assert requests.get(url, headers=KEY).json()["conversation_config"]["agent"]["language"] == "en"


def test_delete_is_204_then_404_agent_not_found(sandbox):
    agent_id = _create(sandbox)
    url = f"{sandbox.url}/v1/convai/agents/{agent_id}"
    first = requests.delete(url, headers=KEY)
    assert first.status_code == 204 and first.content == b""
    second = requests.delete(url, headers=KEY)
    assert second.status_code == 404
    assert second.json()["detail"]["code"] == "agent_not_found"
    assert requests.get(url, headers=KEY).status_code == 404


def test_list_filters_sorts_and_pages(sandbox):
    for name in ["Zed", "alpha one", "Alpha two", "beta"]:
        sandbox.create_agent_directly({"name": name, "conversation_config": {}})
    sandbox.create_agent_directly({"name": "alpha archived", "conversation_config": {},
                                   "platform_settings": {"archived": True}})
    url = f"{sandbox.url}/v1/convai/agents"
    found = requests.get(url, params={"search": "ALPHA"}, headers=KEY).json()
    assert sorted(a["name"] for a in found["agents"]) == ["Alpha two", "alpha one"]
    archived = requests.get(url, params={"archived": "true"}, headers=KEY).json()
    assert [a["name"] for a in archived["agents"]] == ["alpha archived"]

    names, cursor = [], None
    while True:
        params = {"page_size": 2, "sort_by": "name", "sort_direction": "asc", **({"cursor": cursor} if cursor else {})}
        page = requests.get(url, params=params, headers=KEY).json()
        names += [a["name"] for a in page["agents"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert names == ["alpha one", "Alpha two", "beta", "Zed"]
    newest_first = requests.get(url, headers=KEY).json()["agents"]
    assert [a["name"] for a in newest_first] == ["beta", "Alpha two", "alpha one", "Zed"]


@pytest.mark.parametrize("page_size", ["0", "101", "x"])
def test_list_rejects_bad_page_size(sandbox, page_size):
    response = requests.get(f"{sandbox.url}/v1/convai/agents", params={"page_size": page_size}, headers=KEY)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "page_size"]


def test_duplicate_creates_a_new_agent(sandbox):
    agent_id = _create(sandbox, {"name": "Orig", "conversation_config": {}})
    response = requests.post(f"{sandbox.url}/v1/convai/agents/{agent_id}/duplicate", json={"name": "Copy"},
                             headers=KEY)
    assert response.status_code == 200
    assert sorted(a["name"] for a in sandbox.agents()) == ["Copy", "Orig"]


def test_voices_hide_legacy_unless_asked(sandbox):
    default = {v["voice_id"] for v in requests.get(f"{sandbox.url}/v1/voices", headers=KEY).json()["voices"]}
    with_legacy = requests.get(f"{sandbox.url}/v1/voices", params={"show_legacy": "true"}, headers=KEY).json()
    assert "EXAVITQu4vr4xnSDxMaL" in default and "21m00Tcm4TlvDq8ikWAM" not in default
    legacy = {v["name"] for v in with_legacy["voices"] if v["is_legacy"]}
    assert legacy == {"Rachel", "Adam", "Domi", "Ethan"}
    assert requests.get(f"{sandbox.url}/v1/voices/pNInz6obpgDQGcFmaJgB", headers=KEY).json()["name"] == "Adam"
    missing = requests.get(f"{sandbox.url}/v1/voices/nope", headers=KEY)
    assert missing.status_code == 404 and missing.json()["detail"]["code"] == "voice_not_found"


def test_user_subscription_and_models_never_echo_the_key(sandbox):
    user = requests.get(f"{sandbox.url}/v1/user", headers=KEY)
    assert user.status_code == 200 and "sandbox-test-key" not in user.text
    assert user.json()["subscription_extras"]["convai_concurrency"] == 10
    assert requests.get(f"{sandbox.url}/v1/user/subscription", headers=KEY).json()["status"] == "active"
    models = requests.get(f"{sandbox.url}/v1/models", headers=KEY).json()
    assert isinstance(models, list) and {"eleven_turbo_v2", "eleven_flash_v2_5"} <= {m["model_id"] for m in models}


def test_agents_survive_a_restart(tmp_path):
    state = tmp_path / "sandbox.db"
    with SandboxServer(state_path=state) as first:
        agent_id = _create(first, {"name": "Keeper", "conversation_config": {}})
    with SandboxServer(state_path=state) as second:
        response = requests.get(f"{second.url}/v1/convai/agents/{agent_id}", headers=KEY)
        assert response.status_code == 200 and response.json()["name"] == "Keeper"


def test_error_rate_fails_before_creating(sandbox):
    sandbox.configure(error_rate=1.0, seed=7)
    response = requests.post(f"{sandbox.url}/v1/convai/agents/create", json={"conversation_config": {}}, headers=KEY)
    assert response.status_code in (500, 503)
    assert response.json()["detail"]["type"] in ("internal_error", "service_unavailable")
    assert sandbox.agents() == []


def test_error_after_create_creates_then_answers_500(sandbox):
    sandbox.configure(error_after_create_rate=1.0)
    response = requests.post(f"{sandbox.url}/v1/convai/agents/create", json={"conversation_config": {}}, headers=KEY)
    assert response.status_code == 500
    assert len(sandbox.agents()) == 1


def test_drop_after_create_closes_without_answer(sandbox):
    sandbox.configure(drop_after_create_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{sandbox.url}/v1/convai/agents/create", json={"conversation_config": {}}, headers=KEY)
    assert len(sandbox.agents()) == 1
    assert sandbox.stats()["dropped"] == 1


def test_rate_and_concurrency_429_bodies(sandbox):
    sandbox.configure(rate_limit=1, retry_after=True)
    assert requests.get(f"{sandbox.url}/v1/voices", headers=KEY).status_code == 200
    limited = requests.get(f"{sandbox.url}/v1/voices", headers=KEY)
    assert limited.status_code == 429
    assert limited.json()["detail"]["code"] == "rate_limit_exceeded"
    assert limited.headers["Retry-After"] == "1"
    sandbox.configure(rate_limit=None, max_concurrent=0, retry_after=False)
    busy = requests.get(f"{sandbox.url}/v1/voices", headers=KEY)
    assert busy.status_code == 429 and "Retry-After" not in busy.headers
    assert busy.json()["detail"]["status"] == "too_many_concurrent_requests"
    assert busy.json()["detail"]["message"].startswith("Too many concurrent requests.")
    assert sandbox.stats()["rate_limited"] == 2


def test_admin_endpoints(sandbox):
    _create(sandbox)
    config = requests.post(f"{sandbox.url}/_sandbox/config", json={"latency": 0.01, "error_rate": 0.0})
    assert config.status_code == 200 and config.json()["latency"] == 0.01
    assert requests.post(f"{sandbox.url}/_sandbox/config", json={"bogus": 1}).status_code == 400
    stats = requests.get(f"{sandbox.url}/_sandbox/stats").json()
    assert stats["agents"] == 1 and stats["requests_by_status"] == {"200": 1}
    assert requests.delete(f"{sandbox.url}/_sandbox/agents").json() == {"deleted": 1}
    assert sandbox.agents() == []


def test_direct_accessors(sandbox):
    agent_id = sandbox.create_agent_directly({"name": "Dash", **EN_OK})
    assert [a["agent_id"] for a in sandbox.agents()] == [agent_id]
    assert sandbox.delete_agent_directly(agent_id) is True
    assert sandbox.agents() == []
    assert sandbox.stats()["requests_total"] == 0


def test_a_client_hanging_up_before_its_answer_is_logged_not_printed(sandbox, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="persona_agents_pipeline.sandbox")
    sandbox.configure(latency=0.5)
    host, port = sandbox.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(b"GET /v1/voices HTTP/1.1\r\nHost: sandbox\r\nxi-api-key: sandbox-test-key\r\n\r\n")
        wait_until(lambda: sandbox.stats()["peak_attempted_concurrency"] == 1, "the sandbox holds the request",
                   timeout=10, interval=0.01)
        # Linger 0: close with a reset while the answer is pending, so writing it fails at once.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_until(lambda: any("hung up" in record.getMessage() for record in caplog.records), "the hang-up is logged",
               timeout=10, interval=0.01)
    assert "Traceback" not in capfd.readouterr().err
    assert requests.get(f"{sandbox.url}/v1/voices", headers=KEY).status_code == 200
