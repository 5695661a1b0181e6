"""What a provisioning operation did for one persona: its outcome and result (shared by the service and the
exactly-once steps)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Outcome(str, Enum):
    CREATED = "created"
    ADOPTED = "adopted"
    PRESENT = "present"
    RECREATED = "recreated"
    REPLACED = "replaced"
    UPDATED = "updated"
    VERIFIED = "verified"
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    FAILED = "failed"
    NOT_STARTED = "not_started"  # the batch was stopped before this persona's turn
    INTERRUPTED = "interrupted"  # in flight when the batch stopped; the next run settles it


@dataclass(frozen=True)
class ProvisionResult:
    persona_id: int
    outcome: Outcome
    agent_id: str | None = None
    voice_name: str | None = None
    voice_id: str | None = None
    voice_settings: dict[str, Any] | None = None
    # Why it failed; on a successful result, what was left undone (an old or duplicate agent not deleted).
    error: str | None = None
    # converge: the fields found different on ElevenLabs (dotted payload paths) and repaired.
    differences: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome in {
            Outcome.CREATED, Outcome.ADOPTED, Outcome.PRESENT, Outcome.RECREATED, Outcome.REPLACED, Outcome.UPDATED,
            Outcome.VERIFIED,
        }
