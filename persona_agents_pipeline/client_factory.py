"""The one place an ElevenLabs client is built, with the account's shared budget: the CLI, the Python API,
the Dagster resource and the benchmarks all call `build_client` (`test-connection` calls
`build_connection_test_client`)."""

from __future__ import annotations

import hashlib
import threading
import time
from urllib.parse import urlsplit

from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError

from .config import BUDGET_OFF, ConfigurationError, Settings, load_api_key, redact_url
from .elevenlabs.budget import BudgetBackend, Priority, SharedBudget
from .elevenlabs.client import ElevenLabsClient
from .elevenlabs.rate_limit import RequestLimiter
from .engines import shared_engine
from .migrations.change_log import VERSION_TABLE
from .schema_errors import SchemaError
from .store import PersonaStore

_backends: dict[str, BudgetBackend] = {}
_backends_lock = threading.Lock()


def budget_backend(url: str, *, outage_seconds: float = Settings.budget_outage_seconds) -> BudgetBackend:
    """One backend (engine or Redis connection pool) per URL per process; one that does not answer is a
    configuration error naming the setting (the URL is shown without its password)."""
    with _backends_lock:
        if url not in _backends:
            _backends[url] = _open_backend(url, outage_seconds)
        return _backends[url]


def close_budget_backends() -> None:
    """Release every budget connection of this process (tests open one store per test)."""
    with _backends_lock:
        for backend in _backends.values():
            backend.close()
        _backends.clear()


def _open_backend(url: str, outage_seconds: float) -> BudgetBackend:
    try:
        if url.startswith(("redis://", "rediss://", "unix://")):
            from .elevenlabs.budget_redis import RedisBudgetBackend

            backend = RedisBudgetBackend(url, outage_seconds=outage_seconds)
            backend.client.ping()
            return backend
        return _open_sql_backend(url)
    except SchemaError:
        raise  # says what to run
    except Exception as exc:  # any driver's failure to connect or parse: say which setting to fix
        raise ConfigurationError(
            f"the API budget store {redact_url(url)} cannot be used ({type(exc).__name__}); check "
            "PERSONA_AGENTS_BUDGET_URL (or PERSONAS_DATABASE_URL, where the budget lives by default)"
        ) from None


def _open_sql_backend(url: str) -> BudgetBackend:
    from .elevenlabs.budget_sql import SqlBudgetBackend, missing_tables

    # The store's own engine when the budget lives in the personas database: one pool per process.
    engine = shared_engine(url)
    if missing_tables(engine):
        tables = set(inspect(engine).get_table_names())
        if "personas" in tables and VERSION_TABLE not in tables:
            # An application's `personas` table the project never migrated: its first upgrade alters that
            # table and may stop to ask for a decision, so it is the operator's to run, never a side effect.
            raise SchemaError(
                f"the API budget's tables are missing from {redact_url(url)}, whose `personas` table persona-agents has "
                "not set up yet: run `persona-agents db upgrade` with PERSONAS_DATABASE_URL set to this database, "
                "or point PERSONA_AGENTS_BUDGET_URL at another one"
            )
        # The budget's own database, or one the project set up at an earlier revision: the project's migrations
        # make the tables, the same wherever the budget lives, with nothing to run by hand.
        _upgrade_beside_other_processes(url, engine, missing_tables)
    return SqlBudgetBackend(engine)


def _upgrade_beside_other_processes(url: str, engine, missing_tables, attempts: int = 5) -> None:
    """Run the project's migrations on the budget's database while other processes may run them too: a
    failure is fine once the tables exist (another process made them), and is retried while one may be midway
    (SQLite's DDL is not transactional, so its half-made schema is visible)."""
    for attempt in range(attempts):
        try:
            PersonaStore(url).upgrade()
            return
        except DBAPIError:
            if not missing_tables(engine):
                return
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)


def account_id(base_url: str, api_key: str | None, account_name: str | None = None) -> str:
    """Names the account's budget without storing anything that reveals the key: by the account's name
    (PERSONA_AGENTS_BUDGET_ACCOUNT) when given, so every key of the account shares one budget, else by the key;
    either with the base URL as the API sees it (`HTTPS://API.x:443/` is `https://api.x`)."""
    who = f"account:{account_name}" if account_name else (api_key or "")
    return hashlib.sha256(f"{_normalised_base_url(base_url)}\0{who}".encode()).hexdigest()[:32]


def _normalised_base_url(base_url: str) -> str:
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    port = parts.port if parts.port not in (None, {"http": 80, "https": 443}.get(scheme)) else None
    host = (parts.hostname or "") + (f":{port}" if port else "")
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def build_limiter(settings: Settings, api_key: str | None, priority: Priority) -> SharedBudget | RequestLimiter:
    if settings.budget_url == BUDGET_OFF:
        return RequestLimiter(settings.rate_limit, settings.max_concurrent)
    return SharedBudget(
        budget_backend(settings.budget_url or settings.database_url, outage_seconds=settings.budget_outage_seconds),
        account_id(settings.base_url, api_key, settings.budget_account),
        priority=priority,
        concurrency_ceiling=settings.max_concurrent,
        rate_per_second=settings.rate_limit,
        lease_seconds=settings.budget_lease_seconds,
        interactive_reserve=settings.interactive_reserve,
    )


def build_client(
    settings: Settings,
    *,
    api_key: str | None = None,
    priority: Priority = Priority.BATCH,
    **client_options,
) -> ElevenLabsClient:
    """A client for `settings.base_url` whose every request draws on the account's shared budget."""
    key = api_key if api_key is not None else load_api_key()
    return ElevenLabsClient(key, settings.base_url, limiter=build_limiter(settings, key, priority), **client_options)



def build_connection_test_client(settings: Settings, api_key: str) -> ElevenLabsClient:
    """A client outside the shared budget, for `test-connection`: its few requests must work where no
    persona database (the budget's default home) exists yet."""
    return ElevenLabsClient(api_key, settings.base_url)
