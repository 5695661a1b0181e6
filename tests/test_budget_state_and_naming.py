"""The shared budget's row cannot hang every process, and one account's processes find one budget however
its key or base URL is spelt."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from budget_helpers import TEST_ACCOUNT as ACCOUNT
from budget_helpers import SlotTakers
from budget_helpers import budget_url  # noqa: F401  (fixture)

from persona_agents_pipeline.client_factory import account_id, budget_backend, build_limiter
from persona_agents_pipeline.config import Settings
from persona_agents_pipeline.elevenlabs.budget import Priority, SharedBudget


@pytest.mark.parametrize("damage", [
    {"concurrency": 0},
    {"concurrency": 0, "account_limit": 0},
    {"paused_until": time.time() + 10 * 86_400},
    {"rate": -5.0},
])
def test_a_damaged_budget_row_is_reset_instead_of_hanging_every_process(budget_url, damage, caplog):  # noqa: F811
    first = SharedBudget(budget_backend(budget_url), ACCOUNT, concurrency_ceiling=2, interactive_reserve=0)
    state = first.state(fresh=True)
    assert first.backend.compare_and_set(ACCOUNT, state.version, replace(state, version=state.version + 1, **damage))
    later = SharedBudget(budget_backend(budget_url), ACCOUNT, concurrency_ceiling=2, interactive_reserve=0)
    with SlotTakers() as takers:
        assert takers.got_within(later, 10), f"a budget row with {damage} hangs every request"
    assert "reset" in caplog.text


def test_two_spellings_of_the_base_url_name_one_budget():
    assert account_id("https://api.elevenlabs.io", "key") == account_id("HTTPS://API.ElevenLabs.io:443/", "key")
    assert account_id("http://127.0.0.1:8080/", "key") == account_id("http://127.0.0.1:8080", "key")
    assert account_id("https://api.elevenlabs.io", "key") != account_id("https://api.elevenlabs.io:8443", "key")


def test_two_keys_of_one_named_account_share_its_budget(sqlite_url):
    named = Settings.from_env({"PERSONAS_DATABASE_URL": sqlite_url, "PERSONA_AGENTS_BUDGET_ACCOUNT": "acme-prod"})
    unnamed = Settings.from_env({"PERSONAS_DATABASE_URL": sqlite_url})
    accounts = {key: build_limiter(named, key, Priority.BATCH).account for key in ("key-one", "key-two")}
    assert accounts["key-one"] == accounts["key-two"]
    assert build_limiter(unnamed, "key-one", Priority.BATCH).account != build_limiter(unnamed, "key-two", Priority.BATCH).account
    assert "key-one" not in accounts["key-one"] and "acme-prod" not in accounts["key-one"]
