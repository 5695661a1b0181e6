"""The API key never reaches output, logs, exceptions or Dagster storage, whatever shape it arrives in:
surrounding whitespace is stripped, anything else inside a key is refused before any request."""

import logging
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from persona_agents_pipeline.cli import main
from persona_agents_pipeline.config import ConfigurationError, load_api_key
from persona_agents_pipeline.defs.assets import persona_agent
from persona_agents_pipeline.defs.dagster_internals import range_tags
from persona_agents_pipeline.defs.partitions import personas_partitions
from persona_agents_pipeline.in_process_runs import execute_run_request
from persona_agents_pipeline.sandbox import SandboxServer

CANARY = "sk_canary_7d1e0c9b"
# What `echo key > file`, a mounted secret, a copy from a web page or a pasted header give.
USABLE = {"trailing newline": CANARY + "\n", "surrounding blanks": f"  {CANARY}\t\r\n"}
REFUSED = {
    "inner space": "sk_canary_7d1e 0c9b",
    "inner newline (header injection)": "sk_canary_7d1e\r\nX-Evil: 0c9b",
    "control character": "sk_canary_7d1e\x1b0c9b",
    "non-ASCII": "sk_canary_7d1e\u00a00c9b",
}
FRAGMENTS = ("sk_canary_7d1e", "0c9b")  # each half of a refused key, which must not show either


def leaked(text: str, key: str) -> bool:
    return key.strip() in text or any(fragment in text for fragment in FRAGMENTS if fragment in key)


def scan_directory(root: Path) -> str:
    return "\n".join(path.read_bytes().decode("utf-8", "replace") for path in root.rglob("*") if path.is_file())


@pytest.fixture
def canary_env(monkeypatch, sqlite_url, tmp_path):
    with SandboxServer(api_keys=[CANARY]) as sandbox:
        monkeypatch.setenv("PERSONAS_DATABASE_URL", sqlite_url)
        monkeypatch.setenv("ELEVENLABS_BASE_URL", sandbox.url)
        monkeypatch.setenv("PERSONA_AGENTS_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        monkeypatch.setenv("ELEVENLABS_RATE_LIMIT", "200")
        runner = CliRunner()
        assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
        assert runner.invoke(main, ["demo-data", "3"]).exit_code == 0
        yield sandbox


@pytest.mark.parametrize("form", list(USABLE) + list(REFUSED))
def test_a_damaged_key_never_shows_in_cli_output_or_logs(form, canary_env, monkeypatch, caplog):
    key = USABLE.get(form) or REFUSED[form]
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ELEVENLABS_API_KEY", key)
    runner = CliRunner()
    results = [runner.invoke(main, command) for command in (["create-missing-agents", "--yes"], ["test-connection"])]
    everything = "\n".join(result.output for result in results)
    everything += "\n".join(f"{record.getMessage()} {record.exc_info} {record.args!r}" for record in caplog.records)
    assert not leaked(everything, key)
    assert all(result.exception is None or isinstance(result.exception, SystemExit) for result in results)
    if form in USABLE:
        assert results[0].exit_code == 0 and len(canary_env.agents()) == 3
    else:
        assert results[0].exit_code == 1 and "ELEVENLABS_API_KEY contains" in results[0].output
        assert canary_env.stats()["requests_total"] == 0, "a refused key must not be sent"


@pytest.mark.parametrize("form", ["trailing newline", "inner newline (header injection)", "inner space"])
def test_a_damaged_key_never_reaches_dagster_storage_or_compute_logs(form, canary_env, monkeypatch, tmp_path):
    key = USABLE.get(form) or REFUSED[form]
    monkeypatch.setenv("ELEVENLABS_API_KEY", key)
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        instance.add_dynamic_partitions(personas_partitions.name, ["1", "2", "3"])
        request = dg.RunRequest(
            asset_selection=[persona_agent.key], tags=range_tags("1", "3")
        )
        result = execute_run_request(instance, request)
        assert result.success == (form in USABLE)
        events = "\n".join(repr(record) for run in instance.get_runs() for record in instance.all_logs(run.run_id))
    assert not leaked(events + scan_directory(dagster_home), key)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"\xef\xbb\xbfELEVENLABS_API_KEY=" + CANARY.encode() + b"\n", CANARY),  # byte order mark
        (b"export ELEVENLABS_API_KEY='" + CANARY.encode() + b"'\n", CANARY),
        (CANARY.encode() + b"\r\n", CANARY),
    ],
)
def test_credentials_files_as_editors_and_shells_write_them(content, expected, tmp_path):
    path = tmp_path / "credentials"
    path.write_bytes(content)
    path.chmod(0o600)
    assert load_api_key({"PERSONA_AGENTS_CREDENTIALS_FILE": str(path)}) == expected


def test_credentials_that_are_a_directory_or_binary_are_refused_without_showing_content(tmp_path):
    folder = tmp_path / "credentials-dir"
    folder.mkdir()
    with pytest.raises(ConfigurationError, match="is a directory"):
        load_api_key({"PERSONA_AGENTS_CREDENTIALS_FILE": str(folder)})
    binary = tmp_path / "credentials.bin"
    binary.write_bytes(b"\xff\xfe" + "ELEVENLABS_API_KEY=x".encode("utf-16-le"))
    binary.chmod(0o600)
    with pytest.raises(ConfigurationError, match="not a text file"):
        load_api_key({"PERSONA_AGENTS_CREDENTIALS_FILE": str(binary)})
