"""The Teams app an admin uploads: what ``ithelp teams-package`` builds must pass Microsoft's manifest schema for
its ``manifestVersion``, declare what the bot needs (personal chat, files, team channel), and list commands
the bot really answers."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match

from bot.chat_commands import read_command
from bot.cli import main

SCHEMAS = Path(__file__).parent / "data" / "teams"
APP_ID = "11111111-2222-3333-4444-555555555555"


def built_package(tmp_path: Path, *extra: str) -> zipfile.ZipFile:
    out = tmp_path / "ithelp-teams.zip"
    assert main(["teams-package", "--app-id", APP_ID, "--output", str(out), *extra]) == 0
    return zipfile.ZipFile(out)


def manifest_of(package: zipfile.ZipFile) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(package.read("manifest.json"))
    return manifest


def schema_for(manifest: dict[str, Any]) -> dict[str, Any]:
    path = SCHEMAS / f"v{manifest['manifestVersion']}" / "MicrosoftTeams.schema.json"
    assert path.is_file(), f"no vendored schema for manifestVersion {manifest['manifestVersion']}"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


@pytest.mark.parametrize("domain", [("--domain", "ithelp.example.org"), ()], ids=["with-domain", "without"])
def test_the_built_package_passes_the_teams_manifest_schema(tmp_path: Path, domain: tuple[str, ...]) -> None:
    manifest = manifest_of(built_package(tmp_path, *domain))
    schema = schema_for(manifest)
    Draft4Validator.check_schema(schema)
    error = best_match(Draft4Validator(schema).iter_errors(manifest))
    assert error is None, f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
    assert manifest["manifestVersion"] == "1.16" and manifest["id"] == APP_ID


def test_the_schema_check_refuses_a_broken_manifest(tmp_path: Path) -> None:
    manifest = manifest_of(built_package(tmp_path))
    manifest["bots"][0]["commandLists"][0]["commands"].append({"title": "x" * 40, "description": "too long a title"})
    manifest["accentColor"] = "blue"
    errors = list(Draft4Validator(schema_for(manifest)).iter_errors(manifest))
    assert {tuple(e.absolute_path)[:1] for e in errors} == {("bots",), ("accentColor",)}


def test_the_bot_declares_personal_chat_team_channels_and_files(tmp_path: Path) -> None:
    bot = manifest_of(built_package(tmp_path))["bots"][0]
    assert bot["botId"] == APP_ID
    assert {"personal", "team"} <= set(bot["scopes"])
    assert bot.get("supportsFiles") is True, "screenshots sent in the personal chat need supportsFiles"


def test_every_listed_command_is_answered_not_filed(tmp_path: Path) -> None:
    bot = manifest_of(built_package(tmp_path))["bots"][0]
    titles = [command["title"] for listing in bot["commandLists"] for command in listing["commands"]]
    assert titles
    answered_elsewhere = {"new ticket", "escalate"}  # the form, and the escalation command (tests of their own)
    for title in titles:
        example = f"{title} 42" if title == "status" else title
        assert title in answered_elsewhere or read_command(example) is not None, title


def test_the_icons_are_the_sizes_teams_asks_for(tmp_path: Path) -> None:
    package = built_package(tmp_path)

    def png_size(name: str) -> tuple[int, int]:
        header = io.BytesIO(package.read(name)).read(24)
        assert header[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = struct.unpack(">II", header[16:24])
        return width, height

    assert png_size("color.png") == (192, 192)
    assert png_size("outline.png") == (32, 32)
