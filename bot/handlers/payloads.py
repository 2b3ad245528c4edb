"""What no inbound payload may carry into the desk, whatever the platform."""

from __future__ import annotations

from typing import Any


def contains_nul(value: Any) -> bool:
    """Whether any string in ``value`` (nested dicts and lists) holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(item) for item in value)
    return False


def without_nul(value: Any) -> Any:
    """``value`` with every NUL character in its strings replaced by U+FFFD (the replacement character).

    No platform sends NUL in ids or text, and PostgreSQL refuses it in text columns: a forged one would
    otherwise turn a harmless request into a database error. Replaced, not removed, so ``"1\\x00"`` names no
    ticket and ``"U1\\x00"`` nobody (removing it would make them ``1`` and ``U1``).
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value
