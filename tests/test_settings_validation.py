"""Every setting is checked where it is read: a value that would hang, flood the store or silently give a
process a private budget is refused with the variable named and the accepted range."""

import re

import pytest

from persona_agents_pipeline.config import NUMBER_SETTINGS, ConfigurationError, Settings, database_pool_size
from test_dagster_settings import load_definitions

ABSURD_NUMBERS = [
    ("ELEVENLABS_MAX_CONCURRENT", "3000000", "from 1 to 1000"),
    ("ELEVENLABS_MAX_CONCURRENT", "0", "from 1 to 1000"),
    ("ELEVENLABS_MAX_CONCURRENT", "2.5", "whole number"),
    ("ELEVENLABS_RATE_LIMIT", "nan", "from 0.01 to 10000"),
    ("ELEVENLABS_RATE_LIMIT", "inf", "from 0.01 to 10000"),
    ("ELEVENLABS_RATE_LIMIT", "1e300", "from 0.01 to 10000"),
    ("PERSONA_AGENTS_BUDGET_LEASE_SECONDS", "nan", "from 5 to 3600"),
    ("PERSONA_AGENTS_BUDGET_LEASE_SECONDS", "inf", "from 5 to 3600"),
    ("PERSONA_AGENTS_BUDGET_LEASE_SECONDS", "0.001", "from 5 to 3600"),
    ("PERSONA_AGENTS_CLAIM_LEASE_SECONDS", "-inf", "from 1 to 86400"),
    ("PERSONA_AGENTS_CLAIM_LEASE_SECONDS", "1e12", "from 1 to 86400"),
    ("PERSONA_AGENTS_INTERACTIVE_RESERVE", "nan", "from 0 to 0.9"),
    ("PERSONA_AGENTS_RUN_BATCH_SIZE", "99999999999999999999", "from 1 to 10000"),
    ("PERSONA_AGENTS_SENSOR_INTERVAL", "0", "from 1 to 86400"),
    ("PERSONA_AGENTS_DB_POOL_SIZE", "0", "from 1 to 50"),
    ("PERSONA_AGENTS_DB_POOL_SIZE", "500", "from 1 to 50"),
]


@pytest.mark.parametrize("name, value, accepted", ABSURD_NUMBERS)
def test_an_absurd_number_is_refused_with_the_variable_and_the_range(name, value, accepted):
    with pytest.raises(ConfigurationError, match=f"{name} must be .*{accepted}.*{re.escape(repr(value))}"):
        Settings.from_env({name: value})


def test_every_numeric_default_is_inside_its_own_accepted_range():
    defaults = Settings.from_env({})
    for attribute, (_name, low, high) in NUMBER_SETTINGS.items():
        assert low <= getattr(defaults, attribute) <= high


def test_the_store_reads_the_pool_size_with_the_same_check():
    assert database_pool_size({}) == 4
    assert database_pool_size({"PERSONA_AGENTS_DB_POOL_SIZE": "2"}) == 2
    with pytest.raises(ConfigurationError, match="PERSONA_AGENTS_DB_POOL_SIZE"):
        database_pool_size({"PERSONA_AGENTS_DB_POOL_SIZE": "many"})


@pytest.mark.parametrize("name", ["PERSONA_AGENTS_BACKFILL_CRON", "PERSONA_AGENTS_VERIFY_CRON"])
@pytest.mark.parametrize("value", ["0 25 * * *", "every day", "* * * *", "61 * * * *", "0 3 * * 8", "0 3 */0 * *",
                                   "5-1 * * * *", "0 3 * foo *", "0 0 30 2 *"])
def test_an_invalid_cron_is_refused_by_name(name, value):
    with pytest.raises(ConfigurationError, match=f"{name} must be a cron expression.*{re.escape(repr(value))}"):
        Settings.from_env({name: value})


@pytest.mark.parametrize("value", ["*/15 1-5 * jan-mar mon,fri", "0 0 1,15 * *", "@daily", "0 4 * * 7"])
def test_valid_crons_are_kept(value):
    assert Settings.from_env({"PERSONA_AGENTS_VERIFY_CRON": value}).verify_cron == value


def test_an_invalid_cron_leaves_the_code_location_loading_with_automation_off(tmp_path):
    loaded = load_definitions(tmp_path, PERSONA_AGENTS_BACKFILL_CRON="0 25 * * *", AUTO_CREATE_ELEVENLABS_AGENTS="true")
    assert loaded == {"batch": 500, "interval": 30, "backfill": "0 3 * * *", "verify": "0 4 * * 0", "creation": "STOPPED"}


@pytest.mark.parametrize("url, message", [
    ("redis://127.0.0.1:6379/abc", "Redis database must be a number from 0 to 15"),
    ("redis://127.0.0.1:6379/99", "Redis database must be a number from 0 to 15"),
    ("sqlite:////no/such/directory/budget.db", "directory /no/such/directory does not exist"),
    ("sqlite:///:memory:", "private to one process"),
    ("mysql://host/db", "must be off, redis://"),
])
def test_a_budget_url_that_would_give_a_private_budget_is_refused(url, message):
    with pytest.raises(ConfigurationError, match=f"PERSONA_AGENTS_BUDGET_URL.*{message}"):
        Settings.from_env({"PERSONA_AGENTS_BUDGET_URL": url})


def test_usable_budget_urls_are_kept(tmp_path):
    for url in ("redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379", f"sqlite:///{tmp_path}/budget.db",
                "postgresql://postgres@127.0.0.1/test", "off"):
        assert Settings.from_env({"PERSONA_AGENTS_BUDGET_URL": url}).budget_url == url
