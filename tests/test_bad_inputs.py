"""A catalogue of bad inputs: each gets a clear error, a non-zero exit, and leaves the database as it was."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from persona_agents_pipeline.cli import main
from persona_agents_pipeline.sandbox import SandboxServer

CANARY_KEY = "sk_canary_5f0e1d2c3b4a"


class _WrongShapeHandler(BaseHTTPRequestHandler):
    """An HTTP server that answers 200 with JSON of the wrong shape, like a misconfigured proxy."""

    def do_GET(self):
        body = json.dumps({"unexpected": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def wrong_shape_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WrongShapeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def env(monkeypatch, sqlite_url, sandbox, tmp_path):
    values = {
        "PERSONAS_DATABASE_URL": sqlite_url,
        "ELEVENLABS_BASE_URL": sandbox.url,
        "ELEVENLABS_API_KEY": "sandbox-test-key",
        "PERSONA_AGENTS_CREDENTIALS_FILE": str(tmp_path / "credentials"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    assert CliRunner().invoke(main, ["demo-data", "3"]).exit_code == 0
    return values


def _snapshot(url):
    from persona_agents_pipeline.store import PersonaStore

    store = PersonaStore(url)
    with store.engine.connect() as connection:
        rows = [tuple(row) for row in connection.execute(text("SELECT * FROM personas ORDER BY id"))]
        events = connection.execute(text("SELECT count(*) FROM persona_agents_events")).scalar()
    store.engine.dispose()
    return rows, events


def _world_readable_credentials(tmp_path, monkeypatch):
    path = tmp_path / "credentials"
    path.write_text("ELEVENLABS_API_KEY=sandbox-test-key\n")
    path.chmod(0o644)
    monkeypatch.delenv("ELEVENLABS_API_KEY")


def _no_key(tmp_path, monkeypatch):
    monkeypatch.delenv("ELEVENLABS_API_KEY")


def _credentials(content: bytes | None):
    """A credentials file with this content (None: a directory in its place), and no key in the environment."""

    def prepare(tmp_path, monkeypatch):
        path = tmp_path / "credentials"
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
            path.chmod(0o600)
        monkeypatch.delenv("ELEVENLABS_API_KEY")

    return prepare


def _not_a_database(tmp_path, monkeypatch):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 50)
    monkeypatch.setenv("PERSONAS_DATABASE_URL", f"sqlite:///{path}")


def _env(name, value):
    return lambda tmp, mp: mp.setenv(name, value)


ADD = ["personas", "add", "--temper-level", "0.5", "--chattiness", "0.5", "--emotional-attachment", "0.5"]
CASES = {
    "trait above 1": (lambda tmp, mp: None, ["personas", "add", "--name", "X", "--temper-level", "1.2", "--chattiness", "0.5", "--emotional-attachment", "0.5"], "temper_level is 1.2, outside 0..1"),
    "negative trait": (lambda tmp, mp: None, ["personas", "add", "--name", "X", "--temper-level", "0.2", "--chattiness", "-0.5", "--emotional-attachment", "0.5"], "chattiness is -0.5, outside 0..1"),
    "NaN trait": (lambda tmp, mp: None, ["personas", "add", "--name", "X", "--temper-level", "0.2", "--chattiness", "0.5", "--emotional-attachment", "nan"], "emotional_attachment is NaN"),
    "empty name": (lambda tmp, mp: None, ADD + ["--name", ""], "name is empty"),
    "10,000-character name": (lambda tmp, mp: None, ADD + ["--name", "n" * 10_000], "name is 10000 characters long"),
    "control characters in name": (lambda tmp, mp: None, ADD + ["--name", "Eve\x07\x1b[2J"], "name contains control characters"),
    "over-long description": (lambda tmp, mp: None, ADD + ["--name", "Ok", "--description", "d" * 3000], "description is 3000 characters long"),
    "text trait in CSV": (None, "name,temper_level,chattiness,emotional_attachment\nA,0.5,0.5,0.5\nB,loud,0.5,0.5\n", "row 2 (B): temper_level must be a number"),
    "missing trait in CSV": (None, "name,temper_level,chattiness,emotional_attachment\nA,0.5,,0.5\n", "row 1 (A): chattiness is missing"),
    "missing CSV column": (None, "name,temper_level,chattiness\nA,0.5,0.5\n", "lacks column(s) emotional_attachment"),
    "unknown persona id": (lambda tmp, mp: None, ["recreate-agent", "999999"], "persona 999999 does not exist"),
    "missing key": (_no_key, ["create-missing-agents", "--yes"], "No ElevenLabs API key"),
    "wrong key": (lambda tmp, mp: mp.setenv("ELEVENLABS_API_KEY", "wrong-key-123"), ["create-missing-agents", "--yes"], "Invalid API key"),
    "world-readable credentials file": (_world_readable_credentials, ["create-missing-agents", "--yes"], "chmod 600"),
    "unreachable base URL": (lambda tmp, mp: mp.setenv("ELEVENLABS_BASE_URL", "http://127.0.0.1:9"), ["create-missing-agents", "--yes"], "127.0.0.1:9"),
    "malformed API response": ("wrong_shape", ["create-missing-agents", "--yes"], "unexpected response"),
    "invalid voice catalogue": (lambda tmp, mp: mp.setenv("PERSONA_AGENTS_VOICES", "{not json"), ["create-missing-agents", "--yes"], "PERSONA_AGENTS_VOICES is not valid JSON"),
    "unknown environment": (lambda tmp, mp: mp.setenv("PERSONA_AGENTS_ENV", "staging"), ["create-missing-agents", "--yes"], "PERSONA_AGENTS_ENV must be"),
    "unusable database URL": (lambda tmp, mp: mp.setenv("PERSONAS_DATABASE_URL", "nosuchdb://x"), ["list-agent-status"], "check PERSONAS_DATABASE_URL"),
    "bad rate limit": (lambda tmp, mp: mp.setenv("ELEVENLABS_RATE_LIMIT", "-3"), ["create-missing-agents", "--yes"], "ELEVENLABS_RATE_LIMIT must be a number from 0.01"),
    # files, names, ids, credentials and URLs that are malformed or hostile
    "rich markup in an import path": ("markup_path", "name,temper_level,chattiness,emotional_attachment\nA,0.5,0.5,0.5\nB,x,0.5,0.5\n", "temper_level must be a number"),
    "empty CSV": (None, "", "is empty"),
    "Latin-1 CSV": (None, "name,temper_level,chattiness,emotional_attachment\nRen\u00e9e,0.5,0.5,0.5\n".encode("latin-1"), "is not UTF-8 text"),
    "UTF-16 CSV": (None, "name,temper_level,chattiness,emotional_attachment\nA,0.5,0.5,0.5\n".encode("utf-16"), "is not UTF-8 text"),
    "binary CSV": (None, b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "contains NUL bytes"),
    "misspelt CSV column with --strict": ("strict", "name,temper_level,chattiness,emotional_attachment,descripton\nA,0.5,0.5,0.5,x\n", "unknown column(s) descripton"),
    "invisible name": (lambda tmp, mp: None, ADD + ["--name", "\u200b\u200d\ufeff\u3164"], "name is empty"),
    "database file that is not SQLite": (_not_a_database, ["list-agent-status"], "file is not a database"),
    "MySQL URL": (_env("PERSONAS_DATABASE_URL", "mysql://app@127.0.0.1/app"), ["list-agent-status"], "mysql is not supported"),
    "persona id beyond the integer range": (lambda tmp, mp: None, ["recreate-agent", "99999999999999999999"], "persona 99999999999999999999 does not exist"),
    "history of a persona id beyond the integer range": (lambda tmp, mp: None, ["history", "99999999999999999999"], "persona 99999999999999999999 does not exist"),
    "credentials file is a directory": (_credentials(None), ["create-missing-agents", "--yes"], "is a directory"),
    "binary credentials file": (_credentials(b"\xff\xfe\x00\x01binary"), ["create-missing-agents", "--yes"], "is not a text file"),
    "key with inner whitespace": (_env("ELEVENLABS_API_KEY", "sandbox test-key"), ["create-missing-agents", "--yes"], "ELEVENLABS_API_KEY contains whitespace"),
    "base URL that is no URL": (_env("ELEVENLABS_BASE_URL", "not a url"), ["create-missing-agents", "--yes"], "must be an http:// or https:// URL"),
    "base URL without scheme": (_env("ELEVENLABS_BASE_URL", "127.0.0.1:8765"), ["test-connection"], "must be an http:// or https:// URL"),
    "ftp base URL": (_env("ELEVENLABS_BASE_URL", "ftp://api.elevenlabs.io"), ["create-missing-agents", "--yes"], "must be an http:// or https:// URL"),
    "base URL with user:password": (_env("ELEVENLABS_BASE_URL", "http://admin:hunter2@127.0.0.1:9"), ["test-connection"], "must not contain a user name or password"),
    "https against a plain-HTTP server": ("https_sandbox", ["create-missing-agents", "--yes"], "TLS handshake"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_error_and_changes_nothing(case, env, sqlite_url, sandbox, tmp_path, monkeypatch, request):
    prepare, args, message = CASES[case]
    if prepare in (None, "strict", "markup_path"):  # a CSV import; `args` holds the file's content
        path = tmp_path / ("[/d]" if prepare == "markup_path" else ".") / "import.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(args if isinstance(args, bytes) else args.encode())
        args = ["personas", "import", str(path)] + (["--strict"] if prepare == "strict" else [])
    elif prepare == "https_sandbox":
        monkeypatch.setenv("ELEVENLABS_BASE_URL", sandbox.url.replace("http://", "https://"))
    elif prepare == "wrong_shape":
        monkeypatch.setenv("ELEVENLABS_BASE_URL", request.getfixturevalue("wrong_shape_server"))
    else:
        prepare(tmp_path, monkeypatch)
    before = _snapshot(sqlite_url)
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), f"uncaught: {result.exception!r}"
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and "hunter2" not in result.output
    assert _snapshot(sqlite_url) == before
    assert sandbox.agents() == []


def test_the_key_never_reaches_logs_output_or_errors(monkeypatch, sqlite_url, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with SandboxServer(api_keys=[CANARY_KEY], drop_after_create_rate=0.3, error_rate=0.1, seed=3) as sandbox:
        for key, value in {
            "PERSONAS_DATABASE_URL": sqlite_url,
            "ELEVENLABS_BASE_URL": sandbox.url,
            "ELEVENLABS_API_KEY": CANARY_KEY,
            "ELEVENLABS_RATE_LIMIT": "100",
        }.items():
            monkeypatch.setenv(key, value)
        runner = CliRunner()
        outputs = [runner.invoke(main, ["db", "upgrade"]).output, runner.invoke(main, ["demo-data", "20"]).output]
        created = runner.invoke(main, ["create-missing-agents", "--yes"])
        outputs += [created.output, runner.invoke(main, ["recreate-agent", "1"]).output]
        outputs += [runner.invoke(main, ["test-connection"]).output, runner.invoke(main, ["list-agent-status"]).output]
        monkeypatch.setenv("ELEVENLABS_API_KEY", CANARY_KEY + "-wrong")
        outputs.append(runner.invoke(main, ["create-missing-agents", "--yes"]).output)
        assert len(sandbox.agents()) == 20
    everything = "\n".join(outputs) + "\n".join(record.getMessage() for record in caplog.records)
    everything += "\n".join(str(record.exc_info) + repr(record.args) for record in caplog.records)
    assert caplog.records, "the run should have logged something"
    assert CANARY_KEY not in everything
