"""ElevenLabsClient against the sandbox (and a scripted server for answers the sandbox never gives)."""

from __future__ import annotations

import json
import logging
import time

import pytest

from persona_agents_pipeline.elevenlabs.client import ElevenLabsClient
from persona_agents_pipeline.elevenlabs.errors import (
    ApiConnectionError,
    ApiTimeoutError,
    ApiValidationError,
    AuthenticationError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    error_from_response,
)
from persona_agents_pipeline.elevenlabs.rate_limit import RequestLimiter
from persona_agents_pipeline.sandbox.local_servers import free_port

from http_helpers import RecordingServer, scripted_server

KEY = "sandbox-test-key"
FAST = {"backoff_base": 0.01, "backoff_max": 0.05}


def _client(sandbox, key=KEY, **options) -> ElevenLabsClient:
    return ElevenLabsClient(key, sandbox.url, **{**FAST, **options})


@pytest.fixture
def scripted():
    servers: list[RecordingServer] = []

    def make(*script):
        server = scripted_server(list(script))
        servers.append(server)
        return ElevenLabsClient(KEY, server.url, **FAST), server

    yield make
    for server in servers:
        server.close()


# ---- CRUD ------------------------------------------------------------------------------------


def test_create_get_update_delete(sandbox_client):
    agent_id = sandbox_client.create_agent({"name": "Ada", "conversation_config": {
        "agent": {"first_message": "hello", "prompt": {"prompt": "p1"}}}})
    assert sandbox_client.get_agent(agent_id)["name"] == "Ada"
    updated = sandbox_client.update_agent(agent_id, {"conversation_config": {"agent": {"prompt": {"prompt": "p2"}}}})
    assert updated["conversation_config"]["agent"]["first_message"] == "hello"  # deep merge kept it
    assert updated["conversation_config"]["agent"]["prompt"]["prompt"] == "p2"
    sandbox_client.delete_agent(agent_id)
    with pytest.raises(NotFoundError):
        sandbox_client.get_agent(agent_id)
    with pytest.raises(NotFoundError) as info:
        sandbox_client.delete_agent(agent_id)
    assert info.value.code == "agent_not_found" and info.value.status_code == 404


def test_list_follows_cursors_and_searches(sandbox, sandbox_client):
    for index in range(5):
        sandbox.create_agent_directly({"name": f"Persona {index}", "conversation_config": {}})
    sandbox.create_agent_directly({"name": "Other", "conversation_config": {}})
    assert len(list(sandbox_client.list_agents(page_size=2))) == 6
    assert {a["name"] for a in sandbox_client.list_agents(search="persona", page_size=2)} == {
        f"Persona {i}" for i in range(5)}
    assert sum(1 for r in sandbox.request_log() if r.path == "/v1/convai/agents") == 3 + 3


def test_voices(sandbox_client):
    names = {v["name"] for v in sandbox_client.list_voices()}
    assert {"Rachel", "Sarah"} <= names
    assert "Rachel" not in {v["name"] for v in sandbox_client.list_voices(show_legacy=False)}
    assert sandbox_client.get_voice("EXAVITQu4vr4xnSDxMaL")["name"] == "Sarah"


# ---- auth and secrecy ------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, ""])
def test_missing_key_fails_before_any_request(sandbox, key):
    client = _client(sandbox, key=key)
    with pytest.raises(AuthenticationError, match="ELEVENLABS_API_KEY"):
        client.get_agent("agent_x")
    assert sandbox.stats()["requests_total"] == 0


def test_wrong_key_is_never_shown(sandbox, caplog):
    secret = "sk_wrong_secret_9f8e7d"
    caplog.set_level(logging.DEBUG)
    client = _client(sandbox, key=secret)
    with pytest.raises(AuthenticationError) as info:
        client.list_voices()
    error = info.value
    assert error.status_code == 401 and error.code == "unauthorized" and error.request_id
    assert "Invalid API key" in str(error)
    for text in (str(error), repr(error), repr(client), caplog.text):
        assert secret not in text
    assert "api_key=***" in repr(client)


def test_valid_key_never_logged(sandbox_client, caplog):
    caplog.set_level(logging.DEBUG)
    sandbox_client.create_agent({"conversation_config": {}})
    assert "POST /v1/convai/agents/create -> 200" in caplog.text
    assert KEY not in caplog.text


def test_restricted_key_is_permission_denied(sandbox):
    with pytest.raises(PermissionDeniedError) as info:
        _client(sandbox, key="sandbox-restricted-key").create_agent({"conversation_config": {}})
    assert info.value.code == "missing_permissions" and "convai_write" in info.value.message


# ---- validation ------------------------------------------------------------------------------


def test_422_carries_the_api_message(sandbox, sandbox_client):
    with pytest.raises(ApiValidationError) as info:
        sandbox_client.create_agent({"conversation_config": {"tts": {"stability": 2}}})
    assert "body.conversation_config.tts.stability: Input should be less than or equal to 1" in str(info.value)
    assert not info.value.ambiguous
    with pytest.raises(ApiValidationError, match="English Agents must use turbo or flash v2"):
        sandbox_client.create_agent({"conversation_config": {"tts": {"model_id": "eleven_flash_v2_5"}}})
    assert sandbox.agents() == []


# ---- 429 and retries -------------------------------------------------------------------------


def test_create_retries_429_after_retry_after(sandbox):
    sandbox.configure(rate_limit=1, retry_after=True)
    limiter = RequestLimiter(rate_per_second=None, max_concurrent=None)
    client = _client(sandbox, limiter=limiter)
    client.list_voices()
    agent_id = client.create_agent({"conversation_config": {}})
    log = sandbox.request_log()
    assert [r.status for r in log] == [200, 429, 200]
    assert log[2].arrived - log[1].arrived >= 1.0 - 0.02  # Retry-After: 1 honoured
    assert [a["agent_id"] for a in sandbox.agents()] == [agent_id]


def test_429_without_retry_after_backs_off_then_gives_up(sandbox):
    sandbox.configure(rate_limit=1, retry_after=False)
    client = _client(sandbox, max_attempts=3)
    client.list_voices()
    with pytest.raises(RateLimitedError) as info:
        client.list_voices()
    assert info.value.retry_after is None and info.value.code == "rate_limit_exceeded"
    assert [r.status for r in sandbox.request_log()] == [200, 429, 429, 429]


def test_get_retries_5xx(sandbox):
    agent_id = sandbox.create_agent_directly({"conversation_config": {}})
    sandbox.configure(error_rate=0.5, seed=1)  # seed 1: the first request fails, the next succeeds
    assert _client(sandbox).get_agent(agent_id)["agent_id"] == agent_id
    statuses = [r.status for r in sandbox.request_log()]
    assert statuses[-1] == 200 and statuses[0] in (500, 503)


def test_get_gives_up_after_max_attempts(sandbox):
    sandbox.configure(error_rate=1.0)
    with pytest.raises(ServerError):
        _client(sandbox, max_attempts=3).list_voices()
    assert sandbox.stats()["requests_total"] == 3


@pytest.mark.parametrize("fault", ["error_rate", "error_after_create_rate"])
def test_create_is_not_retried_after_5xx(sandbox, fault):
    sandbox.configure(**{fault: 1.0})
    with pytest.raises(ServerError) as info:
        _client(sandbox).create_agent({"conversation_config": {}})
    assert info.value.ambiguous
    assert sandbox.stats()["requests_total"] == 1
    assert len(sandbox.agents()) == (1 if fault == "error_after_create_rate" else 0)


def test_create_dropped_after_create_is_ambiguous_and_not_retried(sandbox):
    sandbox.configure(drop_after_create_rate=1.0)
    with pytest.raises(ApiConnectionError) as info:
        _client(sandbox).create_agent({"conversation_config": {}})
    assert info.value.request_sent is True and info.value.ambiguous
    assert len(sandbox.agents()) == 1
    assert sandbox.stats()["requests_total"] == 1


def test_refused_connection_was_never_sent():
    port = free_port()
    client = ElevenLabsClient(KEY, f"http://127.0.0.1:{port}", max_attempts=2, **FAST)
    with pytest.raises(ApiConnectionError) as info:
        client.create_agent({"conversation_config": {}})
    assert info.value.request_sent is False and not info.value.ambiguous


def test_read_timeout_is_ambiguous(sandbox):
    sandbox.configure(latency=0.3)
    client = _client(sandbox, timeout=(1.0, 0.1), max_attempts=2)
    started = time.monotonic()
    with pytest.raises(ApiTimeoutError) as info:
        client.create_agent({"conversation_config": {}})
    assert info.value.request_sent and info.value.ambiguous
    assert time.monotonic() - started < 0.3  # one attempt only, no retry


# ---- answers the sandbox never gives ---------------------------------------------------------


@pytest.mark.parametrize("body", ["<html>oops</html>", "{}", '{"agent_id": ""}'])
def test_malformed_create_answer_is_ambiguous(scripted, body):
    client, server = scripted((200, body, {"Content-Type": "application/json"}))
    with pytest.raises(MalformedResponseError) as info:
        client.create_agent({"conversation_config": {}})
    assert info.value.ambiguous and len(server.requests) == 1


def test_malformed_reads(scripted):
    client, _ = scripted((200, '{"name": "no id"}', {}),
                         (200, '{"agents": [], "has_more": true}', {}))
    with pytest.raises(MalformedResponseError) as info:
        client.get_agent("agent_x")
    assert not info.value.ambiguous
    with pytest.raises(MalformedResponseError, match="next_cursor"):
        list(client.list_agents())


def test_delete_404_after_ambiguous_attempt_counts_as_deleted(scripted):
    not_found = json.dumps({"detail": {"status": "agent_not_found", "message": "Agent not found"}})
    client, server = scripted((503, "upstream hiccup", {}), (404, not_found, {}))
    client.delete_agent("agent_x")
    assert [m for m, _ in server.requests] == ["DELETE", "DELETE"]


def test_delete_accepts_200_with_empty_object(scripted):
    client, _ = scripted((200, "{}", {"Content-Type": "application/json"}), (200, "", {}))
    client.delete_agent("agent_a")
    client.delete_agent("agent_b")


# ---- error envelopes -------------------------------------------------------------------------


def test_error_envelopes():
    legacy = error_from_response(401, '{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}')
    assert isinstance(legacy, AuthenticationError) and legacy.code == "invalid_api_key"
    restricted = error_from_response(401, '{"detail":{"status":"missing_permissions","message":"no"}}')
    assert isinstance(restricted, PermissionDeniedError)
    assert isinstance(error_from_response(403, "Forbidden"), PermissionDeniedError)
    quota = error_from_response(401, '{"detail":{"status":"quota_exceeded","message":"quota"}}')
    assert isinstance(quota, AuthenticationError) and quota.code == "quota_exceeded"
    invalid = error_from_response(400, '{"detail":{"status":"invalid_agent_config","message":"The agent config is invalid."}}')
    assert isinstance(invalid, ApiValidationError) and "agent config is invalid" in str(invalid)
    plain = error_from_response(502, "<html>Bad Gateway</html>\n")
    assert isinstance(plain, ServerError) and "Bad Gateway" in plain.message
    dated = error_from_response(429, "{}", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert isinstance(dated, RateLimitedError) and dated.retry_after == 0.0
    seconds = error_from_response(429, '{"detail":{"status":"system_busy","message":"busy"}}', {"Retry-After": "7"})
    assert seconds.retry_after == 7.0 and seconds.code == "system_busy"


# ---- test_connection -------------------------------------------------------------------------


def test_connection_report_all_good_with_voice_findings(sandbox_client):
    report = sandbox_client.test_connection({"Sarah": "EXAVITQu4vr4xnSDxMaL", "Rachel": "21m00Tcm4TlvDq8ikWAM",
                                             "Ghost": "doesnotexist"})
    assert report.reachable and report.authenticated and report.can_read_agents
    assert report.voices_found == {"Sarah": "EXAVITQu4vr4xnSDxMaL", "Rachel": "21m00Tcm4TlvDq8ikWAM"}
    assert report.voices_missing == {"Ghost": "doesnotexist"}
    assert [p.problem for p in report.problems] == ["Voice 'Ghost' (doesnotexist) does not exist for this account"]
    assert "legacy" in report.warnings[0].problem and "Rachel" in report.warnings[0].problem
    assert KEY not in repr(report)


def test_connection_report_for_restricted_wrong_and_missing_keys(sandbox):
    restricted = _client(sandbox, key="sandbox-restricted-key").test_connection({})
    assert restricted.authenticated and not restricted.can_read_agents
    assert "convai_read" in restricted.problems[0].what_to_do
    wrong = _client(sandbox, key="bad-key").test_connection({})
    assert wrong.reachable and not wrong.authenticated and "ELEVENLABS_API_KEY" in wrong.problems[0].what_to_do
    missing = _client(sandbox, key=None).test_connection({})
    assert missing.reachable is None and not missing.ok


def test_connection_report_unreachable():
    port = free_port()
    report = ElevenLabsClient(KEY, f"http://127.0.0.1:{port}", max_attempts=1).test_connection({})
    assert report.reachable is False and report.problems
