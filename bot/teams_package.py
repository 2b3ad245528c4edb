"""Build the Teams app package (the zip uploaded to Teams Admin Center or the Developer Portal)."""

from __future__ import annotations

import json
import re
import zipfile
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

APP_ID_PLACEHOLDER = "{{APP_ID}}"
BOT_DOMAIN_PLACEHOLDER = "{{BOT_DOMAIN}}"
FALLBACK_DOMAIN = "example.com"
"""Used in the developer URLs when no bot domain is given (Teams only checks that they are https URLs)."""

_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DOMAIN = re.compile(
    r"(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_PLACEHOLDER = re.compile(r"\{\{[A-Z_]+\}\}")
_ICONS = ("color.png", "outline.png")


def default_manifest_dir() -> Traversable:
    """The app files shipped as package data (``bot/teams_app``): manifest.json and the two icons."""
    return resources.files("bot.teams_app")


def build_teams_package(
    app_id: str,
    output: Path,
    manifest_dir: Path | Traversable | None = None,
    *,
    bot_domain: str | None = None,
) -> Path:
    """Write the Teams app zip (manifest.json, color.png, outline.png at its root) to ``output``.

    ``app_id`` is the bot's Microsoft App ID (a GUID); it becomes both the app ``id`` and the ``botId``.
    ``bot_domain`` (e.g. ``ithelp.example.org``) fills ``validDomains`` and the developer URLs; without it
    ``validDomains`` is empty and the developer URLs point at example.com. Returns ``output``.
    Raises ValueError with a plain explanation when an argument or the manifest folder is not usable.
    """
    if not _GUID.fullmatch(app_id):
        raise ValueError(
            f"The Teams app id must be the bot's Microsoft App ID, a GUID like "
            f"12345678-abcd-1234-abcd-1234567890ab; got {app_id!r}."
        )
    if bot_domain is not None and not _DOMAIN.fullmatch(bot_domain):
        raise ValueError(
            f"The bot domain must be a host name like ithelp.example.org, without https:// or a path; "
            f"got {bot_domain!r}."
        )
    source = manifest_dir or default_manifest_dir()
    missing = [name for name in ("manifest.json", *_ICONS) if not source.joinpath(name).is_file()]
    if missing:
        raise ValueError(f"The Teams app folder {source} is missing {', '.join(missing)}.")

    manifest = json.loads(source.joinpath("manifest.json").read_text(encoding="utf-8"))
    if bot_domain is None:
        manifest["validDomains"] = [d for d in manifest.get("validDomains", []) if BOT_DOMAIN_PLACEHOLDER not in d]
    values = {APP_ID_PLACEHOLDER: app_id, BOT_DOMAIN_PLACEHOLDER: bot_domain or FALLBACK_DOMAIN}
    text = json.dumps(_fill(manifest, values), indent=2, ensure_ascii=False)
    leftover = sorted(set(_PLACEHOLDER.findall(text)))
    if leftover:
        raise ValueError(f"The Teams manifest still has placeholders nobody fills in: {', '.join(leftover)}.")

    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as package:
        package.writestr("manifest.json", text)
        for name in _ICONS:
            package.writestr(name, source.joinpath(name).read_bytes())
    return output


def _fill(node: Any, values: dict[str, str]) -> Any:
    """Replace placeholders in every string of a decoded JSON document."""
    if isinstance(node, str):
        for placeholder, value in values.items():
            node = node.replace(placeholder, value)
        return node
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    if isinstance(node, dict):
        return {key: _fill(item, values) for key, item in node.items()}
    return node
