"""Exactly one agent per persona: the claim, the create marker, adoption, duplicate clean-up.

The guarantee, step by step (`ExactlyOnce._provision_under_heartbeat` below runs them in this order, and
`claim_released_unless_saved` is the one place a claim is given back when the steps stop short of a save):

1. **Claim.** Before any API call the persona is claimed in the database (`_claim`; the compare-and-set
   is `PersonaStore.try_claim`). A claim is a lease: `ClaimHeartbeat` renews it while work is in flight,
   so a slow create keeps it, while a crashed process's claim expires and is taken over.
2. **Marker.** Before a create is sent, the persona's create marker is set (`CreateMarker`, saved as
   `agent_create_attempted_at` when the claim is released). Once a create may have been sent, the persona
   stays "a create may exist" until a successful search has settled it. A failing search (throttled,
   rejected, garbled, timed out) settles nothing: it leaves the marker set and no create follows it.
3. **Adoption.** While the marker is set (after an ambiguous failure, or a crash after the marker), the
   agent is looked up by the persona's identity tag (`_find_existing`) and recorded instead of creating
   another (`_adopt_or_create`). Of several carrying one identity the oldest that still exists is kept
   (`oldest_first`, `_first_alive`); an agent another persona records is never adopted. The listing
   lags behind creates, so an empty search settles a create only if it started `listing_lag` after the
   create was sent (`_search_until_settled`, `CreateMarker.visible_from`).
4. **Record.** The agent is saved only while our claim holds (`PersonaStore.record_agent` refuses a
   caller that lost it, and an agent another persona records); a lost claim keeps what the persona
   records and deletes ours (`_settle_lost_claim`).
5. **Clean-up.** Duplicates found by adoption and a replaced agent are deleted after the save
   (`_delete_leftovers`); a DELETE whose answer was lost is settled by looking the agent up. An agent any
   persona records is never deleted for another (`delete_remote_agent`), and a planned duplicate is
   deleted only under its persona's claim (`delete_duplicate`), so a running recreate finishes first.

`tests/test_exactly_once.py` injects the faults that would break each step (concurrent processes,
dropped answers, 5xx/429, SIGKILL mid-run, failing searches). The store keeps only the persistence:
the claim columns and their SQL (`store.py`, `models.Persona`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator

from .elevenlabs.client import ElevenLabsClient
from .elevenlabs.errors import ElevenLabsError, NotFoundError, RateLimitedError
from .models import Persona, utc_from_unix, utcnow
from .outcomes import Outcome, ProvisionResult
from .store import AgentRecordedElsewhereError, Claim, PersonaNotFoundError, PersonaStore
from .identity import identity_marker
from .persona_validation import PersonaSpec
from .voice_policy import config_hash, voice_settings

log = logging.getLogger(__name__)


class ClaimTimeoutError(RuntimeError):
    """Another caller held the persona's claim longer than we wait, or ours ran out before the save."""


class UnsettledCreateError(RuntimeError):
    """A create for the persona may have made an agent, and the search that would find it failed."""

    def __init__(self, persona_id: int, cause: Exception):
        super().__init__(
            f"persona {persona_id}: a create may have made an agent nobody records, and the search that would "
            f"find it failed ({cause}); could not look up its agents, so nothing was deleted; try again later"
        )


@dataclass
class CreateMarker:
    """Mirrors the persona's create marker during one provisioning: True while a create may have made an
    agent that nobody recorded. The claim is released with this value."""

    may_exist: bool
    # time.monotonic() from which a search shows every create that may exist: the API's listing lags
    # behind its creates, so an empty search started earlier settles nothing.
    visible_from: float = 0.0

    def create_sent(self, listing_lag: timedelta) -> None:
        self.may_exist = True
        self.visible_from = time.monotonic() + listing_lag.total_seconds()

    @classmethod
    def inherited(cls, before: Persona, listing_lag: timedelta) -> "CreateMarker":
        """The marker as an earlier caller left it. Its last create was sent before it released the claim
        (the marker's time) or before its lease ran out, whichever is later."""
        if before.agent_create_attempted_at is None:
            return cls(False)
        last_send = max(filter(None, (before.agent_create_attempted_at, before.agent_claim_expires_at)))
        still_hidden = listing_lag - (utcnow() - last_send)
        return cls(True, time.monotonic() + min(max(still_hidden, timedelta(0)), listing_lag).total_seconds())


def _outcome_of(found: dict[str, Any], *, force: bool, replaces: str | None) -> tuple[Outcome, str]:
    """What recording `found` (adopted, or just created) means for the persona, and the history's reason."""
    if found.get("adopted"):
        return Outcome.ADOPTED, "recreate requested" if force else "agent found by persona identity"
    if force:
        return Outcome.RECREATED, "recreate requested"
    if replaces:
        return Outcome.REPLACED, f"replaces agent {replaces}, gone from ElevenLabs"
    return Outcome.CREATED, "persona had no agent"


def default_owner() -> str:
    """The claim owner naming this service: host, process and a random suffix (one per service)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def oldest_first(agents: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Agents in adoption order: of several carrying one identity, the oldest is the one to keep."""
    return sorted(agents, key=lambda agent: (agent.get("created_at_unix_secs") or 0, agent["agent_id"]))


class ClaimHeartbeat:
    """Renews every claim this service holds while any work is in flight, so a slow create keeps its
    claim, while a crashed process's claims expire within one lease and are taken over."""

    def __init__(self, store: PersonaStore, owner: str, lease: timedelta):
        self._store, self._owner, self._lease = store, owner, lease
        self._lock = threading.Lock()
        self._in_flight = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
            if self._thread is None:
                self._stop = threading.Event()  # a fresh event: a stopping predecessor keeps its own
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name="claim-heartbeat", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                if self._in_flight == 0 and self._thread is not None:
                    self._stop.set()
                    self._thread = None

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self._lease.total_seconds() / 3):
            try:
                self._store.renew_claims(self._owner, self._lease)
            except Exception:  # a missed renewal only shortens the lease; the next one may succeed
                log.warning("could not renew claims of %s", self._owner, exc_info=True)


class ExactlyOnce:
    """The exactly-once steps of `ProvisioningService` (its base class), kept here so that one module
    holds the whole guarantee; the service supplies the attributes below, `owns`, `payload_for` and
    `_result`."""

    store: PersonaStore
    client: ElevenLabsClient
    owner: str
    claim_lease: timedelta
    claim_wait: timedelta
    max_create_attempts: int
    listing_lag: timedelta
    _heartbeat: ClaimHeartbeat
    owns: Callable[[dict[str, Any], int], bool]
    payload_for: Callable[[PersonaSpec], dict[str, Any]]
    _result: Callable[[PersonaSpec, Outcome, str], ProvisionResult]

    def _provision_claimed(self, spec: PersonaSpec, **options: Any) -> ProvisionResult:
        with self._heartbeat.held():
            return self._provision_under_heartbeat(spec, **options)

    def _provision_under_heartbeat(
        self, spec: PersonaSpec, *, force: bool, adopt_existing: bool = False, replaces: str | None = None
    ) -> ProvisionResult:
        """The five steps of the module docstring, in order, for one persona."""
        persona_id = spec.persona_id
        claim = self._claim(persona_id, replacing=force)  # 1. claim
        before = claim.persona
        if not claim.acquired:
            return self._result(spec, Outcome.PRESENT, before.elevenlabs_agent_id)
        old_agent = before.elevenlabs_agent_id if force else None
        payload = self.payload_for(spec)
        marker = CreateMarker.inherited(before, self.listing_lag)  # 2. marker
        with self.claim_released_unless_saved(persona_id, marker):
            # 3. adoption, or a create
            found, duplicates = self._adopt_or_create(spec, payload, marker, exclude=old_agent, search_first=adopt_existing)
            outcome, reason = _outcome_of(found, force=force, replaces=replaces)
            created_at = utc_from_unix(found.get("created_at_unix_secs")) or utcnow()
            saved = self._record(spec, payload, found["agent_id"], outcome, reason, created_at=created_at)  # 4. record
        agent_id = found["agent_id"]
        if not saved:
            return self._result(spec, Outcome.PRESENT, self._settle_lost_claim(spec, agent_id))
        problems = self._delete_leftovers(persona_id, agent_id, duplicates, old_agent)  # 5. clean-up
        log.info("persona %s: %s agent %s", persona_id, outcome.value, agent_id)
        result = self._result(spec, outcome, agent_id)
        return dataclasses.replace(result, error="; ".join(problems)) if problems else result

    @contextmanager
    def claim_released_unless_saved(self, persona_id: int, marker: CreateMarker) -> Iterator[None]:
        """Gives our claim back when the steps inside stop before the save, keeping the create marker as it
        stands: a search or create that failed, an interrupt, or a create answer naming an agent another
        persona records (the marker stays set, so the next run looks for what our create really made). A
        save releases the claim itself; a lost claim is no longer ours to release."""
        try:
            yield
        except BaseException:
            self.store.release_claim(persona_id, self.owner, create_may_have_happened=marker.may_exist)
            raise

    def _record(
        self, spec: PersonaSpec, payload: dict[str, Any], agent_id: str, outcome: Outcome, reason: str, **extra: Any
    ) -> bool:
        """Save the agent built from `payload` and release our claim; False when the claim was lost."""
        return self.store.record_agent(
            spec.persona_id,
            self.owner,
            agent_id=agent_id,
            voice_id=payload["conversation_config"]["tts"]["voice_id"],
            conversation_prompt=payload["conversation_config"]["agent"]["prompt"]["prompt"],
            voice_settings=voice_settings(spec),
            config_hash=config_hash(payload),
            action=outcome.value,
            reason=reason,
            **extra,
        )

    def _claim(self, persona_id: int, *, replacing: bool, for_create: bool = True) -> Claim:
        """Claim the persona, waiting (bounded) while another caller's live claim holds it.

        Returns an unacquired claim only when another caller finished the agent while we waited.
        """
        deadline = time.monotonic() + self.claim_wait.total_seconds()
        delay = 0.05
        while True:
            claim = self.store.try_claim(
                persona_id, self.owner, self.claim_lease, replacing=replacing, for_create=for_create
            )
            if claim.persona is None:
                raise PersonaNotFoundError(persona_id)
            if claim.acquired or (claim.persona.elevenlabs_agent_id and not replacing):
                return claim
            if time.monotonic() >= deadline:
                raise ClaimTimeoutError(
                    f"persona {persona_id} is being provisioned by {claim.persona.agent_claim_owner}; "
                    f"gave up waiting after {self.claim_wait.total_seconds():.0f}s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _adopt_or_create(
        self, spec: PersonaSpec, payload: dict[str, Any], marker: CreateMarker, *, exclude: str | None, search_first: bool
    ) -> tuple[dict[str, Any], list[str]]:
        """The agent to record (adopted ones flagged `adopted`) and the duplicates of it to delete afterwards.

        Never creates while a create may exist unsettled: a search must succeed first. Its errors
        propagate with the marker untouched; a create's unambiguous failure proves it made nothing.
        """
        last_error: ElevenLabsError | None = None
        for attempt in range(self.max_create_attempts):
            if marker.may_exist or search_first:
                update = payload if search_first else None
                found = self._search_until_settled(
                    spec.persona_id, marker, exclude, lambda matches: self._first_alive(matches, update)
                )
                if found:
                    marker.may_exist = True  # an agent exists until it is recorded
                    return found
                marker.may_exist = search_first = False
            if last_error is not None:  # back off before creating again, not before the search above
                wait = last_error.retry_after if isinstance(last_error, RateLimitedError) else None
                time.sleep(wait or random.uniform(0, min(30.0, 0.5 * 2 ** (attempt - 1))))
            marker.create_sent(self.listing_lag)  # from here on the create may reach the server
            try:
                return {"agent_id": self.client.create_agent(payload)}, []
            except ElevenLabsError as exc:
                if not exc.ambiguous:
                    marker.may_exist = False  # nothing was created, and earlier creates were settled above
                    if not isinstance(exc, RateLimitedError):
                        raise
                last_error = exc
                log.warning("persona %s: create attempt %d failed (%s)", spec.persona_id, attempt + 1, exc)
        assert last_error is not None
        raise last_error

    def _search_until_settled(
        self, persona_id: int, marker: CreateMarker, exclude: str | None, accept: Callable[[list[dict[str, Any]]], Any]
    ) -> Any:
        """What `accept` makes of the agents a search finds (oldest first), or None once a search that can
        see every create that may exist found nothing acceptable: an empty search started before the
        listing caught up is repeated, once."""
        while True:
            started = time.monotonic()
            found = accept(self._find_existing(persona_id, exclude=exclude))
            if found:
                return found
            if not marker.may_exist or started >= marker.visible_from:
                return None
            log.info("persona %s: no agent found yet; searching again once the listing shows recent creates", persona_id)
            time.sleep(max(0.0, marker.visible_from - time.monotonic()))

    def _first_alive(
        self, matches: list[dict[str, Any]], payload: dict[str, Any] | None
    ) -> tuple[dict[str, Any], list[str]] | None:
        """The oldest listed agent that still exists (a listing may show deleted agents), and the ones
        after it as its duplicates. With `payload` the agent is brought to it (it may have been built
        from older traits), which also proves it exists; otherwise a GET does."""
        for position, candidate in enumerate(matches):
            try:
                if payload is not None:
                    self.client.update_agent(candidate["agent_id"], payload)
                else:
                    self.client.get_agent(candidate["agent_id"])
            except NotFoundError:
                continue
            return candidate | {"adopted": True}, [agent["agent_id"] for agent in matches[position + 1 :]]
        return None

    def _find_existing(self, persona_id: int, *, exclude: str | None) -> list[dict[str, Any]]:
        """This installation's agents carrying the persona's identity (other than `exclude`), oldest first.

        Raises whatever the search raises: an unanswered search proves nothing either way.
        """
        earlier = {agent_id for _, agent_id in self.store.agents_of_earlier_personas(persona_id)}  # not this persona's
        matches = [
            agent
            for agent in self.client.list_agents(search=identity_marker(persona_id))
            if self.owns(agent, persona_id) and agent.get("agent_id") not in {exclude, *earlier}
        ]
        # An agent another persona records is that persona's, whatever tag it carries now.
        recorded = self.store.personas_recording(agent["agent_id"] for agent in matches)
        matches = [agent for agent in matches if recorded.get(agent["agent_id"], persona_id) == persona_id]
        if len(matches) > 1:
            log.warning("persona %s: %d agents carry its identity; keeping the oldest", persona_id, len(matches))
        return oldest_first(matches)

    def _settle_lost_claim(self, spec: PersonaSpec, agent_id: str) -> str:
        """Our lease ran out and another caller took over, or the persona was deleted meanwhile; keep what
        the persona records (its agent id is returned), remove ours so nothing is orphaned."""
        current = self.store.get(spec.persona_id)
        if current is None:
            self.delete_remote_agent(spec.persona_id, agent_id, reason="persona deleted while its agent was made")
            raise PersonaNotFoundError(spec.persona_id)
        if current.elevenlabs_agent_id == agent_id:
            return agent_id  # the caller that took over adopted ours
        if current.elevenlabs_agent_id:
            # Under the persona's claim: whoever holds it now may be adopting ours.
            self.delete_duplicate(spec.persona_id, agent_id, reason="duplicate after a lost claim")
            latest = self.store.get(spec.persona_id) or current
            return latest.elevenlabs_agent_id or current.elevenlabs_agent_id
        raise ClaimTimeoutError(f"persona {spec.persona_id}: claim lost before agent {agent_id} could be saved")

    def delete_remote_agent(self, persona_id: int, agent_id: str, *, reason: str) -> None:
        """Delete the agent and record it in the persona's history; one already gone is left unrecorded
        (whoever removed it recorded it, e.g. an adoption that deleted a planned duplicate).

        A DELETE whose answer was lost is settled by looking the agent up: gone means deleted. An agent
        another persona records is that persona's, whatever tag it carries: AgentRecordedElsewhereError.
        """
        other = self.store.personas_recording([agent_id]).get(agent_id, persona_id)
        if other != persona_id:
            raise AgentRecordedElsewhereError(agent_id, other)
        try:
            self.client.delete_agent(agent_id)
        except NotFoundError:
            return
        except ElevenLabsError as exc:
            if not exc.ambiguous or self._exists_remotely(agent_id):
                raise
            log.info("persona %s: DELETE of %s went unanswered; the agent is gone", persona_id, agent_id)
        self.store.record_event(persona_id, agent_id, "deleted", reason)

    def _delete_quietly(self, persona_id: int, agent_id: str, reason: str) -> str | None:
        """Delete an agent the persona no longer needs; a failure is reported, not raised (the agent is
        saved already, and `persona-agents plan` lists what is left)."""
        try:
            self.delete_remote_agent(persona_id, agent_id, reason=reason)
        except (ElevenLabsError, AgentRecordedElsewhereError) as exc:
            log.warning("persona %s: could not delete agent %s (%s): %s", persona_id, agent_id, reason, exc)
            return f"agent {agent_id} ({reason}) could not be deleted: {exc}"
        return None

    def _delete_leftovers(self, persona_id: int, agent_id: str, duplicates: list[str], old_agent: str | None) -> list[str]:
        """After `agent_id` is saved: delete its duplicates and the agent it replaced; what could not be
        deleted is returned, for the result to report."""
        problems = [self._delete_quietly(persona_id, extra, f"duplicate: persona {persona_id} keeps agent {agent_id}")
                    for extra in duplicates]
        if old_agent and old_agent != agent_id:
            problems.append(self._delete_quietly(persona_id, old_agent, f"replaced by {agent_id}"))
        return [problem for problem in problems if problem]

    def _exists_remotely(self, agent_id: str) -> bool:
        try:
            self.client.get_agent(agent_id)
        except NotFoundError:
            return False
        return True

    def delete_duplicate(self, persona_id: int, agent_id: str, *, reason: str) -> str | None:
        """Delete an agent planned as a duplicate of the persona's (or of a persona that no longer exists),
        unless the persona records it now or records none (it may be the one to keep); returns why it was
        kept, or None once deleted.

        Decided under the persona's claim, so a caller creating or replacing its agent right now (whose
        new agent is not recorded yet) finishes first.
        """
        try:
            with self._heartbeat.held():
                claim = self._claim(persona_id, replacing=True, for_create=False)
                try:
                    if claim.persona.elevenlabs_agent_id in (None, agent_id):
                        return f"persona {persona_id} may still need it"
                    self.delete_remote_agent(persona_id, agent_id, reason=reason)
                finally:
                    self.store.release_claim(persona_id, self.owner, create_may_have_happened=None)
        except PersonaNotFoundError:  # deleted (perhaps meanwhile): its agents are nobody's
            self.delete_remote_agent(persona_id, agent_id, reason=reason)
        return None

    def delete_persona(self, persona_id: int, *, reason: str) -> list[str]:
        """Delete the persona and its agents (returned): the recorded one and, while a create is unsettled,
        those a search finds, as adoption would. All under the persona's claim. A failing search raises
        UnsettledCreateError and leaves the persona as it was, so no agent is orphaned."""
        with self._heartbeat.held():
            claim = self._claim(persona_id, replacing=True, for_create=False)
            try:
                agents = self._agents_to_delete_with(claim.persona)
                for agent_id in agents:
                    self.delete_remote_agent(persona_id, agent_id, reason=reason)
                self.store.delete_persona(persona_id)
            finally:
                self.store.release_claim(persona_id, self.owner, create_may_have_happened=None)
        return agents

    def _agents_to_delete_with(self, persona: Persona) -> list[str]:
        recorded = [persona.elevenlabs_agent_id] if persona.elevenlabs_agent_id else []
        if persona.agent_create_attempted_at is None:
            return recorded
        marker = CreateMarker.inherited(persona, self.listing_lag)
        try:
            found = self._search_until_settled(persona.id, marker, persona.elevenlabs_agent_id, lambda matches: matches)
        except ElevenLabsError as exc:
            raise UnsettledCreateError(persona.id, exc) from exc
        return recorded + [agent["agent_id"] for agent in found or []]
