"""Settings read from the environment, and the API key from the environment or a credentials file."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from .voice_policy import DEFAULT_TTS_MODEL, DEFAULT_VOICE_CATALOGUE, VOICE_PROFILES, AgentTemplate

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
PRODUCTION = "production"
DEVELOPMENT = "development"


class ConfigurationError(RuntimeError):
    """Settings that cannot work; the message says what to change."""


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


def _credentials_lines(path: Path) -> list[str]:
    if path.is_dir():
        raise ConfigurationError(f"credentials file {path} is a directory; point PERSONA_AGENTS_CREDENTIALS_FILE at a file")
    mode = path.stat().st_mode
    # Like ssh with private keys: a secret that others can read is refused, not silently used.
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"credentials file {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}` and try again"
        )
    try:
        # utf-8-sig: editors on Windows start the file with a byte order mark.
        return path.read_bytes().decode("utf-8-sig").splitlines()
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


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, got {raw!r}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigurationError(f"{name} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


def _optional_positive_float(env: Mapping[str, str], name: str) -> float | None:
    return _positive_float(env, name, 0.0) if env.get(name) else None


def _reserve(env: Mapping[str, str]) -> float:
    raw = env.get("PERSONA_AGENTS_INTERACTIVE_RESERVE") or "0.1"
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise ConfigurationError(f"PERSONA_AGENTS_INTERACTIVE_RESERVE must be a fraction in [0, 1), got {raw!r}")
    return value


def _optional_int(value: float | None) -> int | None:
    return max(1, int(value)) if value is not None else None


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
    # A killed process's in-flight slots come back after this; longer than any request (connect + read).
    budget_lease_seconds: float = 45.0
    interactive_reserve: float = 0.1
    dashboard_url: str = "https://elevenlabs.io/app/agents/agents"
    # How long a claim outlives a crashed process; live processes renew theirs.
    claim_lease_seconds: float = 60.0
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
        return cls(
            database_url=env.get("PERSONAS_DATABASE_URL") or default_database_url(env),
            base_url=validate_base_url(env.get("ELEVENLABS_BASE_URL") or DEFAULT_BASE_URL),
            environment=environment,
            auto_create=auto_create,
            voice_catalogue=_voice_catalogue(env),
            tts_model=env.get("PERSONA_AGENTS_TTS_MODEL") or DEFAULT_TTS_MODEL,
            rate_limit=_optional_positive_float(env, "ELEVENLABS_RATE_LIMIT"),
            max_concurrent=_optional_int(_optional_positive_float(env, "ELEVENLABS_MAX_CONCURRENT")),
            budget_url=env.get("PERSONA_AGENTS_BUDGET_URL") or None,
            budget_lease_seconds=_positive_float(env, "PERSONA_AGENTS_BUDGET_LEASE_SECONDS", 45.0),
            interactive_reserve=_reserve(env),
            claim_lease_seconds=_positive_float(env, "PERSONA_AGENTS_CLAIM_LEASE_SECONDS", 60.0),
            run_batch_size=_positive_int(env, "PERSONA_AGENTS_RUN_BATCH_SIZE", 500),
            sensor_interval_seconds=_positive_int(env, "PERSONA_AGENTS_SENSOR_INTERVAL", 30),
            backfill_cron=env.get("PERSONA_AGENTS_BACKFILL_CRON") or "0 3 * * *",
            verify_cron=env.get("PERSONA_AGENTS_VERIFY_CRON") or "0 4 * * 0",
            detect_cron=env.get("PERSONA_AGENTS_DETECT_CRON") or "30 * * * *",
        )
