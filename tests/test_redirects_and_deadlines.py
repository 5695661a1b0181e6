"""The key stays home (redirects) and no exchange outlives its deadline (slow answers), against the sandbox
and a second real HTTP server on another port of 127.0.0.1, i.e. another origin."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner

from persona_agents_pipeline.cli import main
from persona_agents_pipeline.client_factory import budget_backend
from persona_agents_pipeline.demo_data import demo_personas
from persona_agents_pipeline.elevenlabs.budget import SharedBudget
from persona_agents_pipeline.elevenlabs.client import ElevenLabsClient
from persona_agents_pipeline.elevenlabs.errors import ApiTimeoutError, RedirectRefusedError
from persona_agents_pipeline.provisioning import Outcome, ProvisioningService
from persona_agents_pipeline.voice_policy import DEFAULT_VOICE_CATALOGUE

from http_helpers import RecordingServer

KEY = "sandbox-test-key"
FAST = {"backoff_base": 0.01, "backoff_max": 0.05}
PAYLOAD = {"name": "Redirected [persona:1]", "conversation_config": {}}


TEMPTING = json.dumps({"agent_id": "agent_from_elsewhere", "conversation_config": {}, "agents": [], "has_more": False,
                       "subscription_extras": {"concurrency": 99}})


def other_origin() -> RecordingServer:
    """Another host: answers what would pass for an agent, a list and a user, so anything following a redirect
    there would take its answer."""
    return RecordingServer(lambda method, path: (200, TEMPTING, {"Content-Type": "application/json"}))


@pytest.fixture
def elsewhere():
    server = other_origin()
    yield server
    server.close()


def saw_anything(server: RecordingServer) -> bool:
    return bool(server.requests) or any(KEY in json.dumps(headers) for headers in server.headers)


OPERATIONS = {
    "create": lambda client: client.create_agent(PAYLOAD),
    "get": lambda client: client.get_agent("agent_x"),
    "list": lambda client: list(client.list_agents(search="[persona:1]")),
    "patch": lambda client: client.update_agent("agent_x", {"name": "x"}),
    "delete": lambda client: client.delete_agent("agent_x"),
}


# ---- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_redirect_to_another_origin_is_refused_and_the_other_host_sees_nothing(sandbox, elsewhere, status, operation):
    sandbox.configure(redirect_status=status, redirect_to=elsewhere.url)
    with ElevenLabsClient(KEY, sandbox.url, **FAST) as client:
        with pytest.raises(RedirectRefusedError) as refused:
            OPERATIONS[operation](client)
    message = str(refused.value)
    assert "another origin" in message and elsewhere.url.removeprefix("http://") in message
    assert "ELEVENLABS_BASE_URL" in message and KEY not in message
    assert not refused.value.ambiguous
    assert not saw_anything(elsewhere)
    assert sandbox.agents() == []


def test_limit_discovery_is_not_redirected_to_another_origin(sandbox, elsewhere, sqlite_url):
    budget = SharedBudget(budget_backend(sqlite_url), "redirected-account")
    sandbox.configure(redirect_status=302, redirect_to=elsewhere.url)
    with ElevenLabsClient(KEY, sandbox.url, limiter=budget, **FAST) as client:
        client.discover_limits()
    assert not saw_anything(elsewhere)
    assert budget.state().source == "default", "what another origin says about the account is not believed"


def test_ensure_and_the_cli_behind_a_redirect_record_nothing_and_say_why(cli_env, store, sandbox, elsewhere):
    persona_ids = store.add_personas(demo_personas(3))
    sandbox.configure(redirect_status=307, redirect_to=elsewhere.url)
    service = ProvisioningService(store, ElevenLabsClient(KEY, sandbox.url, **FAST), DEFAULT_VOICE_CATALOGUE)
    with pytest.raises(RedirectRefusedError):
        service.ensure_agent(persona_ids[0])

    result = CliRunner().invoke(main, ["create-missing-agents", "--yes"])
    connection = CliRunner().invoke(main, ["test-connection"])

    assert result.exit_code == 1 and "another origin" in result.output, result.output
    assert connection.exit_code != 0 and "ELEVENLABS_BASE_URL" in connection.output, connection.output
    assert KEY not in result.output + connection.output
    assert not saw_anything(elsewhere) and sandbox.agents() == []
    for persona_id in persona_ids:
        persona = store.get(persona_id)
        assert persona.elevenlabs_agent_id is None and persona.agent_claim_owner is None
        assert persona.agent_create_attempted_at is None, "a refused redirect proves nothing was created"


@pytest.mark.parametrize("status", [307, 308])
def test_a_redirect_within_the_origin_keeping_the_method_is_followed(sandbox, sandbox_client, status):
    sandbox.configure(redirect_status=status, redirect_to=sandbox.url)
    agent_id = sandbox_client.create_agent(PAYLOAD)
    sandbox_client.update_agent(agent_id, {"name": "Renamed [persona:1]"})
    assert [agent["name"] for agent in sandbox.agents()] == ["Renamed [persona:1]"]
    assert [agent["agent_id"] for agent in sandbox_client.list_agents(search="Renamed")] == [agent_id]
    legs = [(record.method, record.path, record.status) for record in sandbox.request_log()]
    assert ("POST", "/v1/convai/agents/create", status) in legs and ("POST", "/v1/convai/agents/create", 200) in legs


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_redirect_within_the_origin_that_would_change_the_method_is_refused_but_a_get_follows_it(
    sandbox, sandbox_client, status
):
    agent_id = sandbox.create_agent_directly(PAYLOAD)
    sandbox.configure(redirect_status=status, redirect_to=sandbox.url)
    assert sandbox_client.get_agent(agent_id)["agent_id"] == agent_id
    with pytest.raises(RedirectRefusedError, match="would turn the POST into a GET"):
        sandbox_client.create_agent(PAYLOAD)
    assert len(sandbox.agents()) == 1


def test_a_redirect_loop_within_the_origin_ends_with_a_clear_error():
    looping = RecordingServer(lambda method, path: (307, "", {"Location": path}))
    try:
        with pytest.raises(RedirectRefusedError, match="more than 5 redirects"):
            ElevenLabsClient(KEY, looping.url, **FAST).get_agent("agent_x")
        assert len(looping.requests) == 6
    finally:
        looping.close()


# ---- the total deadline of one exchange ------------------------------------------------------


def test_the_deadline_is_shorter_than_the_budget_lease(sqlite_url):
    budget = SharedBudget(budget_backend(sqlite_url), "lease-account", lease_seconds=10.0)
    assert ElevenLabsClient(KEY, limiter=budget).deadline < 10.0
    assert ElevenLabsClient(KEY, limiter=budget, deadline=3.0).deadline == 3.0
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="deadline"):
            ElevenLabsClient(KEY, deadline=bad)


def test_a_dripped_answer_ends_at_the_deadline_as_an_ambiguous_timeout(sandbox):
    sandbox.configure(drip_interval=0.05)  # a byte every 50 ms: far under the read timeout
    with ElevenLabsClient(KEY, sandbox.url, timeout=(2.0, 5.0), deadline=0.5, max_attempts=1) as client:
        with pytest.raises(ApiTimeoutError, match="deadline") as cut:
            client.create_agent(PAYLOAD)
    assert cut.value.ambiguous and cut.value.request_sent
    assert len(sandbox.agents()) == 1, "the create reached the server; only its answer was lost"


def test_a_create_whose_dripped_answer_is_cut_is_adopted_not_made_twice(store, sandbox):
    [persona_id] = store.add_personas(demo_personas(1))
    sandbox.configure(drip_interval=0.05, drip_method="POST")
    client = ElevenLabsClient(KEY, sandbox.url, timeout=(2.0, 5.0), deadline=0.5, **FAST)
    result = ProvisioningService(store, client, DEFAULT_VOICE_CATALOGUE).ensure_agent(persona_id)
    [agent] = sandbox.agents()
    assert result.outcome is Outcome.ADOPTED and result.agent_id == agent["agent_id"]
    assert store.get(persona_id).elevenlabs_agent_id == agent["agent_id"]


def test_a_dripped_answer_never_lets_the_budget_exceed_its_ceiling(sandbox, sqlite_url):
    agent_id = sandbox.create_agent_directly(PAYLOAD)
    # One budget each, as two processes sharing the account's budget have.
    budgets = [SharedBudget(budget_backend(sqlite_url), "drip-account", concurrency_ceiling=1, lease_seconds=1.0)
               for _ in range(2)]
    budgets[0].observe_limit(1, "account")  # known: no discovery request
    # Each answer (about 1.5 kB at a byte every 20 ms) would take half a minute, far past the 1 s lease.
    sandbox.configure(drip_interval=0.02, drip_method="GET")
    outcomes: list[BaseException] = []

    def fetch(client: ElevenLabsClient) -> None:
        try:
            client.get_agent(agent_id)
        except ApiTimeoutError as exc:
            outcomes.append(exc)

    clients = [ElevenLabsClient(KEY, sandbox.url, timeout=(2.0, 5.0), limiter=budget, max_attempts=1)
               for budget in budgets]
    threads = [threading.Thread(target=fetch, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sandbox.stats()["peak_concurrency"] == 1, "two requests were on the wire inside a ceiling of one"
    assert len(outcomes) == 2 and all("deadline" in str(exc) for exc in outcomes)
