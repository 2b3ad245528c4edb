"""Tables owned by the escalation feature (kept apart so features migrate independently)."""

from __future__ import annotations
