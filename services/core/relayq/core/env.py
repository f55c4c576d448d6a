"""Reading settings from environment variables: one parser for every member.

Each function returns the default when the variable is unset or empty, and
raises SettingsError (a ValueError) naming the variable and the rule it broke.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


class SettingsError(ValueError):
    """An environment variable holds a value relayq cannot use."""


def number(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float,
    maximum: float = math.inf,
) -> float:
    """A finite number within [minimum, maximum]."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r} is not a finite number")
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} is below its minimum {minimum:g}")
    if value > maximum:
        raise SettingsError(f"{name}={raw!r} is above its maximum {maximum:g}")
    return value


def integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A whole number within [low, high]."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw!r} is outside {low}..{high}")
    return value


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """true/false, 1/0, yes/no, on/off (any case)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not one of true, false, 1, 0, yes, no, on, off")
