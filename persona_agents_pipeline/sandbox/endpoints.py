"""The API's endpoints as ElevenLabs serves them, behind the gateway's limits and auth: agents (create, get,
patch, delete, duplicate, list) and voices. Faults tied to one endpoint strike here."""

from __future__ import annotations

import json
import secrets
import string
import threading
import time
from typing import Any

from . import data
from .agent_store import AgentStore, decode_cursor
from .faults import Dice, ListingLag, SandboxConfig
from .protocol import DROP, Query, QueryError, Reply, error_reply, internal_error_reply, unprocessable
from .validation import deep_merge, issue, validate_agent_body

_ID_ALPHABET = string.ascii_lowercase + string.digits


def _new_agent_id() -> str:
    return "agent_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(28))


def _json_body(body: bytes, *, required: bool) -> tuple[Any, Reply | None]:
    if not body.strip():
        if required:
            return None, unprocessable([issue("missing", ["body"], "Field required", None)])
        return {}, None
    try:
        return json.loads(body), None
    except ValueError as exc:
        return None, unprocessable([issue("json_invalid", ["body", 0], "JSON decode error", {},
                                          {"error": str(exc)})])


def _not_found(agent_id: str, request_id: str) -> Reply:
    return error_reply(404, "not_found", "agent_not_found", f"Agent with id {agent_id} not found", request_id)


def _new_agent(payload: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time())
    return {
        "agent_id": _new_agent_id(),
        "name": payload.get("name") or "",
        "conversation_config": deep_merge(data.CONVERSATION_CONFIG_DEFAULTS,
                                          payload.get("conversation_config") or {}),
        "platform_settings": deep_merge(data.PLATFORM_SETTINGS_DEFAULTS, payload.get("platform_settings") or {}),
        "workflow": payload.get("workflow"),
        "metadata": {"created_at_unix_secs": now, "updated_at_unix_secs": now},
        "tags": list(payload.get("tags") or []),
        "access_info": dict(data.ACCESS_INFO),
        "phone_numbers": [],
        "whatsapp_accounts": [],
        "version_id": None,
        "branch_id": None,
        "main_branch_id": None,
    }


class Endpoints:
    def __init__(self, store: AgentStore, config: SandboxConfig, dice: Dice) -> None:
        self.store = store
        self.config = config
        self._dice = dice
        self._listing_lag = ListingLag(config)
        self._answer_lock = threading.Lock()
        self._last_create_answer: str | None = None

    # ---- agents -------------------------------------------------------------------------

    def create(self, body: bytes, request_id: str) -> Reply:
        payload, problem = _json_body(body, required=True)
        if problem:
            return problem
        issues = validate_agent_body(payload, None)
        if issues:
            return unprocessable(issues)
        agent = _new_agent(payload)
        self.store.put(agent)
        self._listing_lag.created(agent["agent_id"])
        answer = self._create_answer(agent["agent_id"])
        if self.config.create_answer_delay_seconds > 0:
            time.sleep(self.config.create_answer_delay_seconds)
        if self._dice.roll(self.config.drop_after_create_rate):
            return DROP
        if self._dice.roll(self.config.error_after_create_rate):
            return internal_error_reply(request_id)
        return Reply(200, {"agent_id": answer})

    def _create_answer(self, agent_id: str) -> str:
        """The agent id a create is answered with: its own, or (replay fault) the previous answer's."""
        with self._answer_lock:
            replayed = self._last_create_answer and self._dice.roll(self.config.replay_create_answer_rate)
            self._last_create_answer = self._last_create_answer if replayed else agent_id
            return self._last_create_answer

    def create_directly(self, payload: dict[str, Any]) -> str:
        """Create as the dashboard would: validated, no limits, no faults."""
        issues = validate_agent_body(payload, None)
        if issues:
            raise ValueError(f"invalid agent payload: {issues}")
        agent = _new_agent(payload)
        self.store.put(agent)
        return agent["agent_id"]

    def get(self, agent_id: str, request_id: str) -> Reply:
        agent = self.store.get(agent_id)
        return Reply(200, agent) if agent else _not_found(agent_id, request_id)

    def _agent_and_options(self, agent_id: str, body: bytes, request_id: str) -> tuple[Any, Any, Reply | None]:
        """The stored agent and the optional JSON body of a PATCH or duplicate, or the refusal: a bad body is
        refused (422) before the agent is looked up, as FastAPI validates a body before the handler runs."""
        options, problem = _json_body(body, required=False)
        if problem:
            return None, None, problem
        agent = self.store.get(agent_id)
        if agent is None:
            return None, None, _not_found(agent_id, request_id)
        return agent, options, None

    def patch(self, agent_id: str, body: bytes, request_id: str) -> Reply:
        agent, patch, problem = self._agent_and_options(agent_id, body, request_id)
        if problem:
            return problem
        issues = validate_agent_body(patch, agent["conversation_config"])
        if issues:
            return unprocessable(issues)
        for key in ("conversation_config", "platform_settings"):
            if patch.get(key) is not None:
                agent[key] = deep_merge(agent[key], patch[key])
        for key in ("name", "tags", "workflow"):
            if patch.get(key) is not None:
                agent[key] = patch[key]
        agent["metadata"]["updated_at_unix_secs"] = int(time.time())
        self.store.put(agent)
        return Reply(200, agent)

    def delete(self, agent_id: str, request_id: str) -> Reply:
        deleted = self.store.delete(agent_id)
        if self._dice.roll(self.config.drop_delete_response_rate):
            return DROP  # done (or nothing to do), but the client never hears which
        return Reply(204) if deleted else _not_found(agent_id, request_id)

    def duplicate(self, agent_id: str, body: bytes, request_id: str) -> Reply:
        source, options, problem = self._agent_and_options(agent_id, body, request_id)
        if problem:
            return problem
        now = int(time.time())
        copy_ = dict(source, agent_id=_new_agent_id(), metadata={"created_at_unix_secs": now,
                                                                   "updated_at_unix_secs": now})
        if isinstance(options, dict) and options.get("name"):
            copy_["name"] = options["name"]
        self.store.put(copy_)
        return Reply(200, {"agent_id": copy_["agent_id"]})

    def list(self, query: Query) -> Reply:
        page_size = query.integer("page_size", 30, 1, 100)
        archived = query.boolean("archived", False)
        sort_by = query.choice("sort_by", "created_at", ("name", "created_at", "call_count_7d"))
        direction = query.choice("sort_direction", "desc", ("asc", "desc"))
        cursor_text = query.text("cursor")
        after = decode_cursor(cursor_text) if cursor_text else None
        if cursor_text and after is None:
            raise QueryError([issue("value_error", ["query", "cursor"], "Value error, invalid cursor",
                                    cursor_text, {"error": {}})])
        agents, next_cursor = self.store.page(search=query.text("search"), archived=archived, sort_by=sort_by,
                                              descending=direction == "desc", page_size=page_size, after=after)
        hidden = self._listing_lag.hidden()
        summaries = [{
            "agent_id": a["agent_id"], "name": a["name"], "tags": a["tags"],
            "created_at_unix_secs": a["metadata"]["created_at_unix_secs"], "access_info": a["access_info"],
            "last_call_time_unix_secs": None, "archived": bool(a["platform_settings"].get("archived")),
        } for a in agents if a["agent_id"] not in hidden]
        if after is None:
            summaries += self.config.malformed_list_items
        return Reply(200, {"agents": summaries, "next_cursor": next_cursor, "has_more": next_cursor is not None})

    # ---- voices -------------------------------------------------------------------------

    @staticmethod
    def voices(query: Query) -> Reply:
        show_legacy = query.boolean("show_legacy", False)
        voices = [v for v in data.VOICES if show_legacy or not v["is_legacy"]]
        return Reply(200, {"voices": voices})

    @staticmethod
    def voice(voice_id: str, request_id: str) -> Reply:
        for voice in data.VOICES:
            if voice["voice_id"] == voice_id:
                return Reply(200, voice)
        return error_reply(404, "not_found", "voice_not_found", f"A voice with the voice_id {voice_id} was not found.",
                           request_id)
