"""Tables owned by the survey feature (kept apart so features migrate independently)."""

from __future__ import annotations
