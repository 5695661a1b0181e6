"""Resources: the persona store and the ElevenLabs API, and the provisioning service built from both."""


import dataclasses
import functools
import logging
import threading

import dagster as dg
from pydantic import Field

from ..client_factory import build_client
from ..config import ConfigurationError, Settings
from ..elevenlabs.client import ElevenLabsClient
from ..provisioning import ProvisioningService
from ..schema_errors import SchemaError
from ..store import PersonaStore
from ..voice_policy import AgentTemplate

log = logging.getLogger(__name__)

_stores: dict[str, PersonaStore] = {}
_stores_lock = threading.Lock()


def _shared_store(database_url: str) -> PersonaStore:
    # One engine (and connection pool) per database per process: sensors tick every few seconds in the
    # same code server, and a fresh engine per tick would leak pools.
    with _stores_lock:
        store = _stores.get(database_url)
        if store is None:
            store = _stores[database_url] = PersonaStore(database_url)
        return store


class PersonaStoreResource(dg.ConfigurableResource):
    """The application database holding `personas` (SQLite or PostgreSQL)."""

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the persona database; empty means PERSONAS_DATABASE_URL (or the local default).",
    )

    def resolved_url(self) -> str:
        return self.database_url or Settings.from_env().database_url

    def get_store(self) -> PersonaStore:
        return _shared_store(self.resolved_url())


class ElevenLabsResource(dg.ConfigurableResource):
    """The ElevenLabs agents API. Give `api_key` as `EnvVar("ELEVENLABS_API_KEY")` so it never shows in the UI."""

    api_key: str = Field(description="ElevenLabs API key; set it through an environment variable.")
    base_url: str | None = Field(
        default=None, description="API base URL; empty means ELEVENLABS_BASE_URL or https://api.elevenlabs.io."
    )
    rate_limit: float | None = Field(
        default=None,
        description="Requests per second for the whole account (a ceiling); empty means ELEVENLABS_RATE_LIMIT (none).",
    )
    max_concurrent: int | None = Field(
        default=None,
        description="Requests in flight for the whole account (a ceiling); empty means ELEVENLABS_MAX_CONCURRENT, "
        "else the account's discovered limit.",
    )

    def settings(self) -> Settings:
        settings = Settings.from_env()
        return dataclasses.replace(
            settings,
            base_url=(self.base_url or settings.base_url).rstrip("/"),
            rate_limit=self.rate_limit or settings.rate_limit,
            max_concurrent=self.max_concurrent or settings.max_concurrent,
        )

    def concurrency(self) -> int:
        """Threads per step; the shared budget decides how many of them have a request in flight."""
        return self.settings().worker_threads

    def build_client(self) -> ElevenLabsClient:
        return build_client(self.settings(), api_key=self.api_key)


def provisioning_service(persona_store: PersonaStoreResource, elevenlabs: ElevenLabsResource) -> ProvisioningService:
    """The service for a step; settings that cannot work (a damaged key, a database without `db upgrade`)
    fail it at once, unretried."""
    store = persona_store.get_store()
    try:
        store.installation_id()  # a database that was never upgraded fails here, not in every partition
        return ProvisioningService.from_settings(elevenlabs.settings(), store=store, client=elevenlabs.build_client())
    except (ConfigurationError, SchemaError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


@functools.cache
def definition_settings() -> Settings:
    """The settings the definitions are built with (batch size, tick interval, crons, automation default).

    A misconfigured environment must not stop the code location from loading, or the UI could not show
    what is wrong: it loads with the defaults (automation off), and every run and tick, which read the
    settings again, fails with the error."""
    try:
        return Settings.from_env()
    except ConfigurationError as exc:
        log.warning("persona-agents definitions load with default settings: %s", exc)
        return Settings.from_env({})


def agent_template() -> AgentTemplate:
    """The desired agent config from settings alone: sensors and observations that compare traits with
    recorded agents need no API key and make no API call."""
    return Settings.from_env().agent_template()


def dashboard_url(agent_id: str) -> str:
    return f"{Settings.from_env().dashboard_url.rstrip('/')}/{agent_id}"
