"""Settings read from the environment, and the API key from the environment or a credentials file."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from .setting_values import (
    ConfigurationError,
    budget_url_setting,
    cron_setting,
    number_setting,
    optional_number_setting,
)
from .voice_policy import DEFAULT_TTS_MODEL, DEFAULT_VOICE_CATALOGUE, VOICE_PROFILES, AgentTemplate

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
PRODUCTION = "production"
DEVELOPMENT = "development"


def data_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("PERSONA_AGENTS_DATA_DIR") or Path.cwd() / ".persona-agents")


def default_database_url(env: Mapping[str, str] = os.environ) -> str:
    return f"sqlite:///{data_dir(env) / 'personas.db'}"


def database_url_origin(env: Mapping[str, str] = os.environ) -> str:
    """Where `Settings.database_url` came from, for messages that say where a database was looked for."""
    if env.get("PERSONAS_DATABASE_URL"):
        return "PERSONAS_DATABASE_URL"
    return f"the default for the current directory {Path.cwd()}; PERSONAS_DATABASE_URL or PERSONA_AGENTS_DATA_DIR moves it"


def credentials_path(env: Mapping[str, str] = os.environ) -> Path:
    explicit = env.get("PERSONA_AGENTS_CREDENTIALS_FILE")
    if explicit:
        return Path(explicit)
    return Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "persona-agents" / "credentials"


def clean_api_key(raw: str | None, source: str = "the ElevenLabs API key") -> str | None:
    """The key without surrounding whitespace (`echo key > file` and mounted secrets end in a newline);
    None when empty. A key with anything but printable ASCII inside is refused before any request is
    made with it, and the message never quotes it."""
    if raw is None:
        return None
    key = raw.strip()
    for position, character in enumerate(key, start=1):
        if not ("!" <= character <= "~"):
            kind = "whitespace" if character.isspace() else "a control or non-ASCII character"
            raise ConfigurationError(
                f"{source} contains {kind} at position {position}; API keys are printable ASCII without spaces. "
                "Copy the key again from the ElevenLabs dashboard"
            )
    return key or None


MAX_CREDENTIALS_BYTES = 64 * 1024  # a key file is a few lines; anything larger is the wrong file


def _read_regular_file(path: Path) -> bytes:
    """The file's bytes, refusing anything but a regular file. Opened without blocking and checked on the
    open descriptor: a FIFO would otherwise hang every command until something writes to it."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigurationError(f"credentials file {path} is a directory; point PERSONA_AGENTS_CREDENTIALS_FILE at a file")
        if not stat.S_ISREG(mode):
            raise ConfigurationError(
                f"credentials file {path} is not a regular file (a FIFO, socket or device); "
                "point PERSONA_AGENTS_CREDENTIALS_FILE at a file holding ELEVENLABS_API_KEY=..."
            )
        # Like ssh with private keys: a secret that others can read is refused, not silently used.
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"credentials file {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
                f"run `chmod 600 {path}` and try again"
            )
        with os.fdopen(descriptor, "rb", closefd=False) as file:
            content = file.read(MAX_CREDENTIALS_BYTES + 1)
    finally:
        os.close(descriptor)
    if len(content) > MAX_CREDENTIALS_BYTES:
        raise ConfigurationError(f"credentials file {path} is larger than {MAX_CREDENTIALS_BYTES // 1024} KiB; it is not a key file")
    return content


def _credentials_lines(path: Path) -> list[str]:
    try:
        # utf-8-sig: editors on Windows start the file with a byte order mark.
        return _read_regular_file(path).decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ConfigurationError(f"credentials file {path} is not a text file (expected ELEVENLABS_API_KEY=...)") from None


def _key_from_credentials_file(path: Path) -> str | None:
    if not path.exists():
        return None
    source = f"the key in {path}"
    for line in _credentials_lines(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()  # a file written to be `source`d by a shell
        key, sep, value = line.partition("=")
        if not sep:
            return clean_api_key(line, source)
        if key.strip() == "ELEVENLABS_API_KEY":
            return clean_api_key(value.strip().strip("'\""), source)
    return None


def load_api_key(env: Mapping[str, str] = os.environ) -> str | None:
    """The key from ELEVENLABS_API_KEY, else from the credentials file; None when neither has one."""
    from_env = clean_api_key(env.get("ELEVENLABS_API_KEY"), "ELEVENLABS_API_KEY")
    return from_env or _key_from_credentials_file(credentials_path(env))


def validate_base_url(url: str, source: str = "ELEVENLABS_BASE_URL") -> str:
    """The API base URL without a trailing slash. Anything but an http(s) URL with a host is refused up
    front, instead of failing later as a lost connection; so is a user name or password in it, which
    would be shown wherever the URL is."""
    try:
        parts = urlsplit(url.strip())
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        usable = False
    if not usable:
        raise ConfigurationError(
            f"{source} must be an http:// or https:// URL with a host, e.g. {DEFAULT_BASE_URL}; got {redact_url(url)!r}"
        )
    if parts.username or parts.password:
        raise ConfigurationError(
            f"{source} must not contain a user name or password ({redact_url(url)}); the API key authenticates"
        )
    return url.strip().rstrip("/")


def redact_url(url: str) -> str:
    """The URL with any user:password hidden, safe to print."""
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rsplit('@', 1)[1]}{slash}{path}"


def missing_key_message(env: Mapping[str, str] = os.environ) -> str:
    """Why there is no key, naming where it is read from; for callers that found load_api_key() empty."""
    path = credentials_path(env)
    found = "has no key" if path.exists() else "does not exist"
    return (
        f"No ElevenLabs API key is set. It is read from the environment variable ELEVENLABS_API_KEY (not set), "
        f"else from the credentials file {path} ({found}; PERSONA_AGENTS_CREDENTIALS_FILE moves it). "
        "Set either one; the local sandbox accepts 'sandbox-test-key'."
    )


def _voice_catalogue(env: Mapping[str, str]) -> dict[str, str]:
    catalogue = dict(DEFAULT_VOICE_CATALOGUE)
    raw = env.get("PERSONA_AGENTS_VOICES")
    if raw:
        try:
            overrides = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"PERSONA_AGENTS_VOICES is not valid JSON: {exc}") from None
        unknown = set(overrides) - set(VOICE_PROFILES) if isinstance(overrides, dict) else set()
        if not isinstance(overrides, dict) or unknown:
            raise ConfigurationError(
                f"PERSONA_AGENTS_VOICES must map voice names {sorted(VOICE_PROFILES)} to voice ids"
                + (f"; unknown names: {sorted(unknown)}" if unknown else "")
            )
        catalogue.update({name: str(voice_id) for name, voice_id in overrides.items()})
    return catalogue


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {value!r}")


# Threads of bulk commands when no concurrency is configured: the shared budget, not the thread count,
# decides how many requests are in flight, so this only needs to exceed the largest plan's limit.
DEFAULT_WORKER_THREADS = 32
BUDGET_OFF = "off"


@dataclass(frozen=True)
class Settings:
    database_url: str
    base_url: str = DEFAULT_BASE_URL
    environment: str = DEVELOPMENT
    auto_create: bool = False
    voice_catalogue: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_VOICE_CATALOGUE))
    tts_model: str = DEFAULT_TTS_MODEL
    # Ceilings the user may set. Unset, the account's concurrency is discovered (budget.py), and no rate
    # applies: ElevenLabs publishes no per-second limit for agent management and throttles on concurrency.
    rate_limit: float | None = None
    max_concurrent: int | None = None
    # Where the one API budget of all processes lives: None means the personas database; redis://... ;
    # "off" gives each process its own limiter (only for comparison: processes then oversubscribe).
    budget_url: str | None = None
    # Names the account's budget, so processes with different keys (or spellings of the base URL) of one
    # account share it; unset, the budget is named by the base URL and the key.
    budget_account: str | None = None
    # A killed process's in-flight slots come back after this; longer than any request (connect + read).
    budget_lease_seconds: float = 45.0
    # How long a Redis budget that does not answer (a restart, an outage) is waited for before the run stops.
    budget_outage_seconds: float = 30.0
    interactive_reserve: float = 0.1
    # Connections per process to a PostgreSQL personas database, shared by the store and the budget.
    database_pool_size: int = 4
    dashboard_url: str = "https://elevenlabs.io/app/agents/agents"
    # How long a claim outlives a crashed process; live processes renew theirs.
    claim_lease_seconds: float = 60.0
    # How long the API's agent list and search may lag behind its creates: a create whose answer was lost
    # is looked for until then before another is sent.
    listing_lag_seconds: float = 2.0
    # Dagster automation: partitions per run (why 500: defs/partitions.py), sensor tick, schedules.
    run_batch_size: int = 500
    sensor_interval_seconds: int = 30
    backfill_cron: str = "0 3 * * *"  # backfill_missing_agents: daily
    verify_cron: str = "0 4 * * 0"  # verify_agents: weekly (off until turned on)
    detect_cron: str = "30 * * * *"  # detect_gone_agents: hourly, in every environment

    @property
    def worker_threads(self) -> int:
        return self.max_concurrent or DEFAULT_WORKER_THREADS

    def agent_template(self) -> AgentTemplate:
        return AgentTemplate(self.voice_catalogue, self.tts_model)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        environment = env.get("PERSONA_AGENTS_ENV", DEVELOPMENT).strip().lower()
        if environment not in {DEVELOPMENT, PRODUCTION}:
            raise ConfigurationError(f"PERSONA_AGENTS_ENV must be {DEVELOPMENT} or {PRODUCTION}, got {environment!r}")
        auto_raw = env.get("AUTO_CREATE_ELEVENLABS_AGENTS")
        auto_create = (
            _flag(auto_raw, "AUTO_CREATE_ELEVENLABS_AGENTS") if auto_raw not in (None, "") else environment == PRODUCTION
        )
        numbers = {attribute: number_setting(env, name, getattr(cls, attribute), low, high)
                   for attribute, (name, low, high) in NUMBER_SETTINGS.items()}
        return cls(
            database_url=env.get("PERSONAS_DATABASE_URL") or default_database_url(env),
            base_url=validate_base_url(env.get("ELEVENLABS_BASE_URL") or DEFAULT_BASE_URL),
            environment=environment,
            auto_create=auto_create,
            voice_catalogue=_voice_catalogue(env),
            tts_model=env.get("PERSONA_AGENTS_TTS_MODEL") or DEFAULT_TTS_MODEL,
            rate_limit=optional_number_setting(env, "ELEVENLABS_RATE_LIMIT", 0.01, 10_000, whole=False),
            max_concurrent=optional_number_setting(env, "ELEVENLABS_MAX_CONCURRENT", 1, 1_000, whole=True),
            budget_url=budget_url_setting(env, "PERSONA_AGENTS_BUDGET_URL"),
            budget_account=_budget_account(env),
            backfill_cron=cron_setting(env, "PERSONA_AGENTS_BACKFILL_CRON", cls.backfill_cron),
            verify_cron=cron_setting(env, "PERSONA_AGENTS_VERIFY_CRON", cls.verify_cron),
            detect_cron=cron_setting(env, "PERSONA_AGENTS_DETECT_CRON", cls.detect_cron),
            **numbers,
        )


# Settings attribute -> (variable, lowest, highest accepted value); the default is the attribute's.
NUMBER_SETTINGS = {
    "budget_lease_seconds": ("PERSONA_AGENTS_BUDGET_LEASE_SECONDS", 5, 3_600),
    "budget_outage_seconds": ("PERSONA_AGENTS_BUDGET_OUTAGE_SECONDS", 0, 3_600),
    "claim_lease_seconds": ("PERSONA_AGENTS_CLAIM_LEASE_SECONDS", 1, 86_400),
    "database_pool_size": ("PERSONA_AGENTS_DB_POOL_SIZE", 1, 50),
    "interactive_reserve": ("PERSONA_AGENTS_INTERACTIVE_RESERVE", 0, 0.9),
    "listing_lag_seconds": ("ELEVENLABS_LISTING_LAG_SECONDS", 0, 60),
    "run_batch_size": ("PERSONA_AGENTS_RUN_BATCH_SIZE", 1, 10_000),
    "sensor_interval_seconds": ("PERSONA_AGENTS_SENSOR_INTERVAL", 1, 86_400),
}


def database_pool_size(env: Mapping[str, str] = os.environ) -> int:
    """PERSONA_AGENTS_DB_POOL_SIZE, checked: for the store's engine, built where no Settings is at hand."""
    name, low, high = NUMBER_SETTINGS["database_pool_size"]
    return number_setting(env, name, Settings.database_pool_size, low, high)


def _budget_account(env: Mapping[str, str]) -> str | None:
    raw = (env.get("PERSONA_AGENTS_BUDGET_ACCOUNT") or "").strip()
    if raw and not (len(raw) <= 100 and all("!" <= character <= "~" for character in raw)):
        raise ConfigurationError(
            "PERSONA_AGENTS_BUDGET_ACCOUNT must be a name of 1 to 100 printable ASCII characters without spaces "
            "(the same on every process using the account)"
        )
    return raw or None
