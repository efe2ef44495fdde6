"""Times after programming, as a certificate names them: '1d' <-> 86400 s."""
from __future__ import annotations

import math
import re

from ..errors import UsageError

DEFAULT_TIMES = ("1s", "1h", "1d", "1y")  # certify's time grid, and the recipe's device times

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365 * 86400.0}


def parse_time(text: str | float | int) -> tuple[str, float]:
    """'1d' -> ('1d', 86400.0); '3600' -> ('3600s', 3600.0). Units: s, m/min, h, d, w, y (365 d)."""
    if isinstance(text, (int, float)):
        text = f"{text:g}"
    t = str(text).strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(s|min|m|h|d|w|y)?", t)
    if not m:
        raise UsageError(f"bad time {text!r}", "write times like 1s, 10min, 1h, 1d, 1w, 1y or plain seconds: `times=1s,1h,1d,1y`")
    value, unit = float(m.group(1)), m.group(2) or "s"
    seconds = value * _UNITS[unit]
    if not math.isfinite(seconds):  # '1e400' parses as inf
        raise UsageError(f"time {text!r} is too large", "write times like 1s, 1h, 1d, 1y or plain seconds")
    if seconds <= 0:
        raise UsageError(f"time {text!r} must be after programming (> 0 s)")
    return _label(seconds), seconds


def _label(seconds: float) -> str:
    """The largest unit that divides `seconds` exactly: 86400 -> '1d', 5400 -> '90min', 1.5 -> '1.5s'."""
    for unit in ("y", "d", "h", "min"):
        n = seconds / _UNITS[unit]
        if n >= 1 and abs(n - round(n)) < 1e-9:
            return f"{round(n)}{unit}"
    return f"{seconds:g}s"


def parse_times(times: str | list | tuple) -> list[tuple[str, float]]:
    """Several times (comma-separated or a sequence), each once, earliest first."""
    items = [t for t in times.split(",") if t.strip()] if isinstance(times, str) else list(times)
    if not items:
        raise UsageError("no times given", "e.g. `times=1s,1h,1d,1y`")
    return sorted({parse_time(t)[1]: parse_time(t) for t in items}.values(), key=lambda p: p[1])
