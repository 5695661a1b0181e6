"""The Dagster definitions take their batch size, tick interval and schedules from Settings (the same
environment names as before), and a misconfigured environment still loads the code location."""

import json
import os
import subprocess
import sys

import pytest

from persona_agents_pipeline.config import ConfigurationError, Settings

LOAD = """
import json
import os
from persona_agents_pipeline.definitions import defs
from persona_agents_pipeline.defs.assets import persona_agent
print(json.dumps({
    "batch": persona_agent.backfill_policy.max_partitions_per_run,
    "interval": defs.get_sensor_def("new_personas_sensor").minimum_interval_seconds,
    "backfill": defs.get_schedule_def("backfill_missing_agents").cron_schedule,
    "verify": defs.get_schedule_def("verify_agents").cron_schedule,
    "creation": defs.get_sensor_def("new_personas_sensor").default_status.value,
}))
"""


def load_definitions(tmp_path, **env: str) -> dict:
    names = ("PERSONA_AGENTS_RUN_BATCH_SIZE", "PERSONA_AGENTS_SENSOR_INTERVAL", "PERSONA_AGENTS_BACKFILL_CRON",
             "PERSONA_AGENTS_VERIFY_CRON", "PERSONA_AGENTS_ENV", "AUTO_CREATE_ELEVENLABS_AGENTS")
    clean = {name: value for name, value in os.environ.items() if name not in names}
    result = subprocess.run([sys.executable, "-c", LOAD], env={**clean, **env, "PERSONA_AGENTS_DATA_DIR": str(tmp_path)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_settings_read_the_automation_variables_with_their_defaults():
    defaults = Settings.from_env({})
    assert (defaults.run_batch_size, defaults.sensor_interval_seconds) == (500, 30)
    assert (defaults.backfill_cron, defaults.verify_cron) == ("0 3 * * *", "0 4 * * 0")
    custom = Settings.from_env({"PERSONA_AGENTS_RUN_BATCH_SIZE": "250", "PERSONA_AGENTS_SENSOR_INTERVAL": "2",
                                "PERSONA_AGENTS_BACKFILL_CRON": "15 1 * * *", "PERSONA_AGENTS_VERIFY_CRON": "0 5 * * 1"})
    assert (custom.run_batch_size, custom.sensor_interval_seconds) == (250, 2)
    assert (custom.backfill_cron, custom.verify_cron) == ("15 1 * * *", "0 5 * * 1")


@pytest.mark.parametrize("value", ["many", "0", "-5", "2.5"])
def test_a_batch_size_that_is_not_a_positive_whole_number_is_refused_by_name(value):
    with pytest.raises(ConfigurationError, match=f"PERSONA_AGENTS_RUN_BATCH_SIZE .*{value}"):
        Settings.from_env({"PERSONA_AGENTS_RUN_BATCH_SIZE": value})


def test_the_definitions_use_the_settings(tmp_path):
    loaded = load_definitions(tmp_path, PERSONA_AGENTS_RUN_BATCH_SIZE="250", PERSONA_AGENTS_SENSOR_INTERVAL="2",
                              PERSONA_AGENTS_BACKFILL_CRON="15 1 * * *", PERSONA_AGENTS_VERIFY_CRON="0 5 * * 1",
                              AUTO_CREATE_ELEVENLABS_AGENTS="true")
    assert loaded == {"batch": 250, "interval": 2, "backfill": "15 1 * * *", "verify": "0 5 * * 1", "creation": "RUNNING"}


def test_a_misconfigured_environment_still_loads_the_code_location_with_automation_off(tmp_path):
    loaded = load_definitions(tmp_path, PERSONA_AGENTS_ENV="staging", PERSONA_AGENTS_RUN_BATCH_SIZE="many",
                              AUTO_CREATE_ELEVENLABS_AGENTS="true")
    assert loaded == {"batch": 500, "interval": 30, "backfill": "0 3 * * *", "verify": "0 4 * * 0", "creation": "STOPPED"}


@pytest.mark.parametrize("value", ["5", "[1, 2]"])
def test_voices_that_are_not_a_mapping_are_a_configuration_error(value):
    """Not a crash: the definitions load with defaults only on a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="PERSONA_AGENTS_VOICES must map voice names"):
        Settings.from_env({"PERSONA_AGENTS_VOICES": value})
