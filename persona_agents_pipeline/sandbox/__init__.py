"""Local fake of the ElevenLabs agents API; see `server` for options."""

from .faults import SandboxConfig
from .gateway import RequestRecord
from .server import DEFAULT_API_KEYS, DEFAULT_PORT, SandboxServer, run_sandbox

__all__ = ["DEFAULT_API_KEYS", "DEFAULT_PORT", "RequestRecord", "SandboxConfig", "SandboxServer", "run_sandbox"]
