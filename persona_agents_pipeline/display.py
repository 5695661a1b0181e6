"""Making data safe to show: persona names, reasons and server messages reach terminals and CSV files.

Data never becomes rich markup (`[/]` would crash a print, `[red]` would vanish), never moves the cursor
or retitles the terminal (ESC/OSC sequences), and never starts a spreadsheet formula.
"""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape

# C0 and C1 controls and DEL: ESC starts ANSI/OSC sequences, CR rewrites the line, BEL rings.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# A spreadsheet treats a cell starting with one of these as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _visible(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def plain(value: Any) -> str:
    """The value as one line of inert text: control characters are shown as \\xNN escapes."""
    return _CONTROL.sub(_visible, "" if value is None else str(value))


def markup_safe(value: Any) -> str:
    """For interpolation into a rich markup string: inert text whose brackets print as brackets."""
    return escape(plain(value))


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula; numbers stay numbers."""
    if not isinstance(value, str):
        return value
    return "'" + plain(value) if value.startswith(_FORMULA_START) else plain(value)
