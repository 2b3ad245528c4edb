"""What every Web API method of the fake Slack workspace shares: the ids of the workspace and its bot, the error a
method raises to answer ``{"ok": false, "error": ...}``, and the check of required arguments."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

BOT_USER_ID = "UBOT"
BOT_ID = "B0001"
TEAM_ID = "T0001"
APP_ID = "A0001"
BOT_NAME = "ithelp"


class MethodError(Exception):
    """Raised by a method implementation to answer ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def require(args: Json, *names: str) -> None:
    """Raise ``invalid_arguments`` unless every one of ``names`` is given (and not empty)."""
    for name in names:
        if not args.get(name):
            raise MethodError("invalid_arguments")
