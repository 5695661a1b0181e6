"""The one provisioning service behind the CLI, the Python API and the Dagster assets.

How it keeps exactly one agent per persona (claim, create marker, adoption, duplicate clean-up) is told
and implemented in `exactly_once.py`; this module holds the operations and what their results say.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator

from .agent_comparison import differing_fields, foreign_tags
from .batch import NOT_STARTED, BatchStop, run_batch
from .client_factory import Priority, build_client
from .config import Settings
from .elevenlabs.budget_backend import BudgetUnavailableError
from .elevenlabs.client import ElevenLabsClient
from .elevenlabs.errors import (
    AuthenticationError,
    ElevenLabsError,
    NotFoundError,
    PermissionDeniedError,
    RedirectRefusedError,
)
from .exactly_once import (
    ClaimHeartbeat,
    ClaimTimeoutError,
    ExactlyOnce,
    default_owner,
)
from .outcomes import Outcome, ProvisionResult
from .store import AgentRecordedElsewhereError, PersonaNotFoundError, PersonaStore
from .identity import identity_of
from .persona_validation import InvalidPersonaError, PersonaSpec
from .voice_policy import DEFAULT_TTS_MODEL, AgentTemplate, choose_voice, config_hash, voice_settings

log = logging.getLogger(__name__)

VOICE_FIELD = "conversation_config.tts.voice_id"
PROMPT_FIELD = "conversation_config.agent.prompt.prompt"


@dataclass(frozen=True)
class AgentCheck:
    """How a persona's remote agent compares with what its current traits produce (agent_comparison.py)."""

    persona_id: int
    agent_id: str | None
    exists: bool
    voice_matches: bool
    prompt_matches: bool
    problems: tuple[str, ...] = field(default_factory=tuple)
    differences: tuple[str, ...] = ()  # dotted paths of the fields that differ
    foreign_tags: tuple[str, ...] = ()  # tags someone else gave the agent, kept on repair

    @property
    def passed(self) -> bool:
        return not self.problems


class AgentGoneError(RuntimeError):
    """The persona's recorded agent no longer exists on ElevenLabs and auto-creation is off."""

    def __init__(self, persona_id: int, agent_id: str):
        self.persona_id, self.agent_id = persona_id, agent_id
        super().__init__(
            f"persona {persona_id}: agent {agent_id} is gone from ElevenLabs; run `persona-agents apply` "
            "(or turn on AUTO_CREATE_ELEVENLABS_AGENTS) to replace it"
        )


class ProvisioningService(ExactlyOnce):
    def __init__(
        self,
        store: PersonaStore,
        client: ElevenLabsClient,
        voice_catalogue: dict[str, str],
        *,
        tts_model: str = DEFAULT_TTS_MODEL,
        owner: str | None = None,
        claim_lease: timedelta = timedelta(seconds=Settings.claim_lease_seconds),
        claim_wait: timedelta | None = None,
        max_create_attempts: int = 6,
        replace_lost_agents: bool = False,
        installation_id: str | None = None,
        listing_lag: timedelta = timedelta(seconds=Settings.listing_lag_seconds),
    ):
        self.store = store
        self.client = client
        self.voice_catalogue = dict(voice_catalogue)
        self.tts_model = tts_model
        self._installation_id = installation_id
        self.owner = owner or default_owner()
        self.claim_lease = claim_lease
        # Long enough for a crashed caller's claim to expire and be taken over.
        self.claim_wait = claim_wait or max(timedelta(minutes=2), 2 * claim_lease)
        self._heartbeat = ClaimHeartbeat(store, self.owner, claim_lease)
        self.max_create_attempts = max_create_attempts
        # How long the API's list and search may lag behind its creates.
        self.listing_lag = listing_lag
        # Auto-creation on: an agent deleted upstream is replaced when found gone; off: it is reported.
        self.replace_lost_agents = replace_lost_agents

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        api_key: str | None = None,
        store: PersonaStore | None = None,
        client: ElevenLabsClient | None = None,
        priority: Priority = Priority.BATCH,
    ) -> "ProvisioningService":
        """`priority`: INTERACTIVE where someone waits for the answer (the Python API), else BATCH."""
        store = store or PersonaStore(settings.database_url)
        # Read first: a database that cannot say which installation it is (a copy) is refused before any work.
        installation_id = store.installation_id()
        if client is None:
            client = build_client(settings, api_key=api_key, priority=priority)
        return cls(
            store,
            client,
            settings.voice_catalogue,
            tts_model=settings.tts_model,
            claim_lease=timedelta(seconds=settings.claim_lease_seconds),
            replace_lost_agents=settings.auto_create,
            installation_id=installation_id,
            listing_lag=timedelta(seconds=settings.listing_lag_seconds),
        )

    # ---- desired state --------------------------------------------------------------------------

    @property
    def installation_id(self) -> str:
        """The id naming this database's agents in their identity tags (read once, when first needed)."""
        if self._installation_id is None:
            self._installation_id = self.store.installation_id()
        return self._installation_id

    @functools.cached_property
    def template(self) -> AgentTemplate:
        return AgentTemplate(self.voice_catalogue, self.tts_model, self.installation_id)

    def owns(self, agent: dict[str, Any], persona_id: int) -> bool:
        """Whether the agent carries this installation's identity tag for the persona."""
        return identity_of(agent, self.installation_id) == persona_id

    def payload_for(self, spec: PersonaSpec) -> dict[str, Any]:
        return self.template.payload(spec)

    def _result(self, spec: PersonaSpec, outcome: Outcome, agent_id: str) -> ProvisionResult:
        voice = choose_voice(spec)
        return ProvisionResult(
            persona_id=spec.persona_id,
            outcome=outcome,
            agent_id=agent_id,
            voice_name=voice.name,
            voice_id=self.voice_catalogue[voice.name],
            voice_settings=voice_settings(spec),
        )

    # ---- public operations ----------------------------------------------------------------------

    def ensure_agent(
        self, persona_id: int, *, force: bool = False, adopt_existing: bool = False, verify_remote: bool = False
    ) -> ProvisionResult:
        """Make sure the persona has an agent (a new one when `force`); idempotent and safe across processes.

        `adopt_existing`: first look for an unrecorded agent carrying the persona's identity and adopt it.
        `verify_remote`: also check that the recorded agent still exists; one gone from ElevenLabs is
        replaced where auto-creation is on, and raises AgentGoneError otherwise.
        Raises PersonaNotFoundError, InvalidPersonaError (before any API call) or ElevenLabsError.
        """
        persona = self.store.require(persona_id)
        spec = persona.spec()
        if persona.elevenlabs_agent_id and not force:
            if verify_remote and not self._exists_remotely(persona.elevenlabs_agent_id):
                log.warning("persona %s: agent %s is gone from ElevenLabs", persona_id, persona.elevenlabs_agent_id)
                if not self.replace_lost_agents:
                    raise AgentGoneError(persona_id, persona.elevenlabs_agent_id)
                return self.replace_lost_agent(persona_id, persona.elevenlabs_agent_id)
            return self._result(spec, Outcome.PRESENT, persona.elevenlabs_agent_id)
        return self._provision_claimed(spec, force=force, adopt_existing=adopt_existing)

    def replace_lost_agent(self, persona_id: int, lost_agent_id: str, *, adopt_existing: bool = False) -> ProvisionResult:
        """The recorded agent is gone from ElevenLabs: forget it, then give the persona a new (or adopted) one."""
        spec = self.store.require(persona_id).spec()
        if self._exists_remotely(lost_agent_id):
            # The caller's view was stale (the list hides archived agents): the agent is there, keep it.
            return self._result(spec, Outcome.PRESENT, lost_agent_id)
        self.store.forget_agent(persona_id, lost_agent_id, reason="agent is gone from ElevenLabs")
        return self._provision_claimed(spec, force=False, adopt_existing=adopt_existing, replaces=lost_agent_id)

    def converge_agent(self, persona_id: int) -> ProvisionResult:
        """Bring the persona's agent to the truth on ElevenLabs, not just in the database.

        No recorded agent: ensure_agent (no lookup, so bulk creation keeps its cost). A recorded agent: one
        GET; gone -> replaced (the caller asked for this persona, so even where auto-creation is off);
        any field the project sets differs remotely, or the recorded config is outdated -> PATCHed in place,
        the differing fields named in the result and the history; VERIFIED (a no-op) only when the remote
        agent is really current.
        """
        persona = self.store.require(persona_id)
        payload = self.payload_for(persona.spec())  # invalid traits fail here, before any call
        agent_id = persona.elevenlabs_agent_id
        if not agent_id:
            return self.ensure_agent(persona_id)
        check = self.check_agent(persona_id)
        if not check.exists:
            return self.replace_lost_agent(persona_id, agent_id)
        if check.passed and persona.agent_config_hash == config_hash(payload):
            return self._result(persona.spec(), Outcome.VERIFIED, agent_id)
        reason = f"differs on ElevenLabs: {', '.join(check.differences)}" if check.differences else "traits changed"
        result = self.update_agent(persona_id, reason=reason, even_if_recorded_current=True,
                                   keep_tags=check.foreign_tags)
        return dataclasses.replace(result, differences=check.differences)

    def update_agent(
        self, persona_id: int, *, reason: str = "traits changed", even_if_recorded_current: bool = False,
        keep_tags: Iterable[str] = (),
    ) -> ProvisionResult:
        """Bring the recorded agent to the config the persona's traits produce now, in place (same agent id).

        No call when the recorded config hash already matches (unless `even_if_recorded_current`: the remote
        agent was edited behind our back). Without a recorded agent it provisions one; when the agent turns
        out to be gone it is replaced. `keep_tags`: tags outside the project's that the agent keeps.
        """
        persona = self.store.require(persona_id)
        spec = persona.spec()
        payload = self.payload_for(spec)
        payload["tags"] += [tag for tag in keep_tags if tag not in payload["tags"]]
        if not persona.elevenlabs_agent_id:
            return self.ensure_agent(persona_id)
        if persona.agent_config_hash == config_hash(payload) and not even_if_recorded_current:
            return self._result(spec, Outcome.PRESENT, persona.elevenlabs_agent_id)
        with self._heartbeat.held():
            agent_id = self._claim(persona_id, replacing=True).persona.elevenlabs_agent_id
            if not agent_id:  # forgotten by another caller while we waited for the claim
                self.store.release_claim(persona_id, self.owner, create_may_have_happened=False)
                return self.ensure_agent(persona_id)
            try:
                # The API deep-merges a PATCH into the agent: every field we manage is sent, so each is overwritten.
                self.client.update_agent(agent_id, payload)
            except NotFoundError:
                self.store.release_claim(persona_id, self.owner, create_may_have_happened=False)
                return self.replace_lost_agent(persona_id, agent_id)
            except BaseException:
                self.store.release_claim(persona_id, self.owner, create_may_have_happened=False)
                raise
            saved = self._record(spec, payload, agent_id, Outcome.UPDATED, reason)
        if not saved:
            raise ClaimTimeoutError(f"persona {persona_id}: claim lost before the update of {agent_id} could be saved")
        log.info("persona %s: updated agent %s (%s)", persona_id, agent_id, reason)
        return self._result(spec, Outcome.UPDATED, agent_id)

    def recreate_agent(self, persona_id: int) -> ProvisionResult:
        return self.ensure_agent(persona_id, force=True)

    def provision_many(
        self,
        persona_ids: Iterable[int],
        *,
        concurrency: int = 5,
        force: bool = False,
        on_result: Callable[[ProvisionResult], None] | None = None,
        operation: Callable[[int], ProvisionResult] | None = None,
    ) -> list[ProvisionResult]:
        """iter_provision's results in the order of `persona_ids`; `on_result` sees each as it arrives."""
        ids = list(persona_ids)
        results: dict[int, ProvisionResult] = {}
        for result in self.iter_provision(ids, concurrency=concurrency, force=force, operation=operation):
            results[result.persona_id] = result
            if on_result:
                on_result(result)
        return [results[persona_id] for persona_id in ids]

    def iter_provision(
        self,
        persona_ids: Iterable[int],
        *,
        concurrency: int = 5,
        force: bool = False,
        operation: Callable[[int], ProvisionResult] | None = None,
    ) -> Iterator[ProvisionResult]:
        """Provision many personas concurrently (`operation` instead of ensure_agent when given), yielding
        each result as it arrives; one persona's failure never stops the others.

        An authentication, permission or refused-redirect error, or a budget store out of reach, stops the
        batch (every further call would fail the same way), and so does `self.stop.request()` (Ctrl-C; see
        batch.py)."""
        operation = operation or functools.partial(self.ensure_agent, force=force)
        fatal: list[ElevenLabsError] = []

        def one(persona_id: int) -> ProvisionResult:
            if fatal:
                return ProvisionResult(persona_id, Outcome.FAILED, error=f"not attempted: {fatal[0]}")
            try:
                return operation(persona_id)
            except PersonaNotFoundError as exc:
                return ProvisionResult(persona_id, Outcome.NOT_FOUND, error=str(exc))
            except InvalidPersonaError as exc:
                return ProvisionResult(persona_id, Outcome.INVALID, error=str(exc))
            except (AuthenticationError, PermissionDeniedError, RedirectRefusedError, BudgetUnavailableError) as exc:
                fatal.append(exc)
                return ProvisionResult(persona_id, Outcome.FAILED, error=str(exc))
            except (ElevenLabsError, ClaimTimeoutError, AgentRecordedElsewhereError) as exc:
                return ProvisionResult(persona_id, Outcome.FAILED, error=f"{type(exc).__name__}: {exc}")

        def skipped(persona_id: int, why: str) -> ProvisionResult:
            return ProvisionResult(persona_id, Outcome.NOT_STARTED if why == NOT_STARTED else Outcome.INTERRUPTED, error=why)

        yield from run_batch(persona_ids, one, skipped, concurrency=concurrency, stop=self.stop)

    @functools.cached_property
    def stop(self) -> BatchStop:
        """Stops this service's batches (the CLI requests it on Ctrl-C). Requests end within a claim lease, so
        waiting that long lets every request in flight settle."""
        return BatchStop(settle_seconds=self.claim_lease.total_seconds())

    def check_many(self, persona_ids: Iterable[int], *, concurrency: int = 5) -> list[AgentCheck]:
        """check_agent for many personas concurrently, in the order given; a persona deleted meanwhile
        checks as an agent that does not exist."""

        def one(persona_id: int) -> AgentCheck:
            try:
                return self.check_agent(persona_id)
            except PersonaNotFoundError as exc:
                return AgentCheck(persona_id, None, False, False, False, (str(exc),))

        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="check") as pool:
            return list(pool.map(one, persona_ids))

    def check_agent(self, persona_id: int) -> AgentCheck:
        """Compare the persona's remote agent with every field its current traits produce."""
        persona = self.store.require(persona_id)
        agent_id = persona.elevenlabs_agent_id
        if not agent_id:
            return AgentCheck(persona_id, None, False, False, False, ("persona has no agent recorded",))
        try:
            remote = self.client.get_agent(agent_id)
        except NotFoundError:
            return AgentCheck(persona_id, agent_id, False, False, False, (f"agent {agent_id} is gone from ElevenLabs",))
        try:
            wanted = self.payload_for(persona.spec())
        except InvalidPersonaError as exc:
            return AgentCheck(persona_id, agent_id, True, False, False, (str(exc),))
        differences = tuple(differing_fields(wanted, remote))
        problems = (f"differs on ElevenLabs from what the traits produce: {', '.join(differences)}",) if differences else ()
        return AgentCheck(persona_id, agent_id, True, VOICE_FIELD not in differences, PROMPT_FIELD not in differences,
                          problems, differences, tuple(foreign_tags(remote)))
