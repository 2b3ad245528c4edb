"""How every ``ithelp`` command finds and loads app.yaml, and how it says what is wrong with it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bot.config import AppConfig, ConfigError, load_config


def config_path(value: str | None) -> Path:
    """``--config`` if given, else ``$ITHELP_CONFIG``, else ``app.yaml`` in the working folder."""
    return Path(value or os.environ.get("ITHELP_CONFIG", "app.yaml"))


def load_or_complain(value: str | Path | None) -> AppConfig | None:
    """The configuration, or None after printing each problem with its key (never a secret's value)."""
    path = value if isinstance(value, Path) else config_path(value)
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: the configuration has problems:", file=sys.stderr)
        for where, message in exc.problems:
            print(f"  {where}: {message}", file=sys.stderr)
        return None
