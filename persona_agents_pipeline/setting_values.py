"""Parsing and checking of single setting values: every refusal names the variable and the accepted range."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit


class ConfigurationError(RuntimeError):
    """Settings that cannot work; the message says what to change."""


def number_setting(env: Mapping[str, str], name: str, default, low, high):
    """`env[name]` as a number in [low, high] (a whole number when `default` is an int); `default` when unset.
    nan, inf and values outside the range are refused: they hang or flood the store instead of failing."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    whole = isinstance(default, int)
    kind = "a whole number" if whole else "a number"
    try:
        value = int(raw.strip()) if whole else float(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be {kind} from {low} to {high}, got {raw!r}")
    return value


def optional_number_setting(env: Mapping[str, str], name: str, low, high, *, whole: bool):
    """As number_setting, None when unset."""
    return number_setting(env, name, 0 if whole else 0.0, low, high) if (env.get(name) or "").strip() else None


# Five fields: minute, hour, day of month, month, day of week (0 and 7 are Sunday).
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_NAMES = (
    {},
    {},
    {},
    {name: number for number, name in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)},
    {name: number for number, name in enumerate("sun mon tue wed thu fri sat".split())},
)
_CRON_ALIASES = {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}
_CRON_ITEM = re.compile(r"^(\*|(\w+)(?:-(\w+))?)(?:/(\d+))?$")


def _cron_field_valid(field: str, position: int) -> bool:
    low, high = _CRON_RANGES[position]
    names = _CRON_NAMES[position]

    def value(token: str | None) -> int | None:
        if token is None:
            return None
        number = names.get(token.lower(), int(token) if token.isdigit() else -1)
        return number if low <= number <= high else -1

    for item in field.split(","):
        match = _CRON_ITEM.match(item)
        if not match:
            return False
        first, last, step = value(match.group(2)), value(match.group(3)), match.group(4)
        if -1 in (first, last) or (step is not None and int(step) < 1):
            return False
        if first is not None and last is not None and first > last:
            return False
    return True


def cron_setting(env: Mapping[str, str], name: str, default: str) -> str:
    """A standard five-field cron expression (or an alias such as @daily); checked here so a typo is a clear
    error instead of a Dagster code location that does not load."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    fields = raw.split()
    if raw.lower() in _CRON_ALIASES or (
        len(fields) == 5 and all(_cron_field_valid(field, position) for position, field in enumerate(fields))
        and not (fields[2] in ("30", "31") and fields[3].lower() in ("2", "feb"))  # a day February never has
    ):
        return raw
    raise ConfigurationError(
        f"{name} must be a cron expression of five fields (minute 0-59, hour 0-23, day of month 1-31, "
        f"month 1-12, day of week 0-7; e.g. '0 3 * * *') or @hourly/@daily/@weekly/@monthly, got {raw!r}"
    )


def budget_url_setting(env: Mapping[str, str], name: str) -> str | None:
    """The shared budget's store URL, refused where it would silently give this process a private budget:
    a SQLite file in a directory that does not exist, or a Redis database that is not a number."""
    raw = (env.get(name) or "").strip()
    if not raw or raw == "off":
        return raw or None
    parts = urlsplit(raw)
    if parts.scheme in ("redis", "rediss"):
        database = parts.path.strip("/")
        if database and not (database.isdigit() and int(database) <= 15):
            raise ConfigurationError(
                f"{name}: the Redis database must be a number from 0 to 15 (redis://host:6379/0), got {database!r}"
            )
    elif parts.scheme.startswith("sqlite"):
        path = raw.split(":///", 1)[1].split("?", 1)[0] if ":///" in raw else ""
        if not path or path == ":memory:":
            raise ConfigurationError(
                f"{name}: an in-memory SQLite budget is private to one process; name a file, sqlite:///path/budget.db"
            )
        if not Path(path).parent.is_dir():
            raise ConfigurationError(
                f"{name}: the directory {Path(path).parent} does not exist; create it or point the URL at an existing "
                "one (every process sharing the budget must name the same file)"
            )
    elif not parts.scheme.startswith(("postgresql", "postgres", "unix")):
        raise ConfigurationError(
            f"{name} must be off, redis://host:port/db, postgresql://... or sqlite:///path, got scheme {parts.scheme!r}"
        )
    return raw
