"""Sending a request into the bot the way Slack or Teams would: raw bytes, the answer parsed."""

from __future__ import annotations

from typing import Any

import aiohttp


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST raw bytes; returns (status, parsed JSON or text)."""
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        text = await response.text()
        try:
            return response.status, await response.json(content_type=None) if text else None
        except ValueError:
            return response.status, text


__all__ = ["post"]
