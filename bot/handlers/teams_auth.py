"""Checking the tokens Teams signs its requests with, without letting a forged one stall the bot.

botbuilder validates a request's JWT against the Bot Framework's published signing keys, which it fetches
with a blocking ``requests.get`` (no timeout) on the event loop, and it forgets a failed fetch: every forged
token then repeats the fetch while health checks and Slack wait behind it. The seam is botbuilder's
per-URL cache of key sets (``JwtTokenExtractor.metadataCache``): :func:`install_key_sets` puts an
:class:`AsyncKeySet` there for the metadata URLs the public-cloud validation reads, so botbuilder's own
validation (issuer, signature, expiry, audience, endorsements, service URL) runs unchanged on keys that
are fetched off the event loop's critical path, within a bounded time, once at a time, with failures
remembered for a while.

:class:`HeaderCheck` runs that validation on the ``Authorization`` header alone, before the body is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from botframework.connector.auth import (
    AuthenticationConfiguration,
    AuthenticationConstants,
    JwtTokenValidation,
    SimpleCredentialProvider,
)
from botframework.connector.auth.jwt_token_extractor import JwtTokenExtractor
from jwt.algorithms import RSAAlgorithm

from bot.clock import Clock
from bot.config import TeamsConfig

log = logging.getLogger("ithelp.teams")

REFRESH_EVERY = timedelta(days=1)
"""How long a fetched key set is used before it is fetched again (botbuilder's rule)."""
UNKNOWN_KEY_REFRESH = timedelta(hours=1)
"""A token naming a key we don't have refreshes the set, at most this often (botbuilder's rule)."""
FAILURE_MEMORY = timedelta(seconds=30)
"""After a failed fetch, this long passes before the next one is tried."""

_BEARER = re.compile(r"Bearer [A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class SigningKey:
    """One published key, in the shape botbuilder's ``JwtTokenExtractor`` reads (``public_key``, ``endorsements``)."""

    public_key: Any
    endorsements: list[str]


class AsyncKeySet:
    """The signing keys published at one OpenID metadata URL, for botbuilder's ``JwtTokenExtractor``.

    ``get`` never blocks the event loop: the fetch is aiohttp, bounded by ``timeout``, and concurrent callers
    share the one fetch in flight. A failed fetch keeps the keys we had (if any) and is not retried for
    :data:`FAILURE_MEMORY`. Time rules read ``clock``.
    """

    def __init__(self, url: str, *, clock: Clock, timeout: float) -> None:
        self.url = url
        self.clock = clock
        self.timeout = timeout
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: datetime | None = None
        self._failed_at: datetime | None = None
        self._fetch_in_flight: asyncio.Task[dict[str, SigningKey]] | None = None

    async def get(self, key_id: str | None) -> SigningKey:
        """The key ``key_id`` names; raises ``PermissionError`` when it isn't (or can't be) known."""
        now = self.clock.now()
        if self._fetched_at is None or now - self._fetched_at >= REFRESH_EVERY:
            await self._refresh()
        key = self._keys.get(key_id or "")
        if key is None and (self._fetched_at is None or self.clock.now() - self._fetched_at >= UNKNOWN_KEY_REFRESH):
            await self._refresh()
            key = self._keys.get(key_id or "")
        if key is None:
            raise PermissionError("the token is not signed by a Bot Framework key"
                                  if self._fetched_at else "the Bot Framework signing keys are unavailable")
        return key

    async def _refresh(self) -> None:
        now = self.clock.now()
        if self._failed_at is not None and now - self._failed_at < FAILURE_MEMORY:
            return
        loop = asyncio.get_running_loop()
        task = self._fetch_in_flight
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._fetch_in_flight = loop.create_task(self._fetch())
        try:
            # Shielded: a caller that gives up (its request was cancelled) leaves the fetch to the others.
            keys = await asyncio.shield(task)
        except Exception as exc:
            if self._failed_at is None or now - self._failed_at >= FAILURE_MEMORY:
                log.warning("could not fetch the Bot Framework signing keys from %s: %s; Teams requests are "
                            "refused until they can be fetched (next try in %ds)", self.url,
                            f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                            FAILURE_MEMORY.total_seconds())
            self._failed_at = now
            return
        self._keys, self._fetched_at, self._failed_at = keys, now, None

    async def _fetch(self) -> dict[str, SigningKey]:
        async with asyncio.timeout(self.timeout), aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout)) as http:
            async with http.get(self.url) as response:
                response.raise_for_status()
                keys_url = (await response.json(content_type=None))["jwks_uri"]
            async with http.get(keys_url) as response:
                response.raise_for_status()
                published = (await response.json(content_type=None))["keys"]
        keys: dict[str, SigningKey] = {}
        for jwk in published:
            try:
                keys[str(jwk["kid"])] = SigningKey(RSAAlgorithm.from_jwk(json.dumps(jwk)),
                                                   list(jwk.get("endorsements") or []))
            except (KeyError, TypeError, ValueError) as exc:  # a key type we can't use: the others still count
                log.debug("skipping a published key: %s", exc)
        return keys


def install_key_sets(teams: TeamsConfig, clock: Clock) -> None:
    """Make botbuilder's token validation use :class:`AsyncKeySet` for Teams and emulator tokens.

    botbuilder keys its cache by the metadata URL its validators read; the Teams one fetches from
    ``teams.openid_metadata_url`` (Microsoft's by default). The cache is botbuilder's, per process: the last
    server to start in a process sets it.
    """
    timeout = teams.openid_timeout.total_seconds()
    JwtTokenExtractor.metadataCache[AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL] = AsyncKeySet(
        teams.openid_metadata_url, clock=clock, timeout=timeout)
    emulator = AuthenticationConstants.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL
    JwtTokenExtractor.metadataCache[emulator] = AsyncKeySet(emulator, clock=clock, timeout=timeout)


class HeaderCheck:
    """Validates the ``Authorization`` header of a request before its body is read.

    Everything that needs only the token is checked by botbuilder's own validation: issuer, signing key,
    expiry, audience (our app id). What needs the activity (the channel's endorsement, the ``serviceurl``
    claim against the activity's ``serviceUrl``) is left to the full check once the body is parsed.
    """

    def __init__(self, teams: TeamsConfig) -> None:
        self.credentials = SimpleCredentialProvider(teams.app_id, teams.app_password)
        self.auth_configuration = AuthenticationConfiguration()

    async def check(self, authorization: str) -> None:
        """Return when the header carries a valid Bot Framework token for this bot; raise otherwise."""
        if not _BEARER.fullmatch(authorization):
            raise PermissionError("no bearer token")
        identity = await JwtTokenValidation.validate_auth_header(
            authorization, self.credentials, "", channel_id="", service_url=None,
            auth_configuration=self.auth_configuration)
        if identity is None or not identity.is_authenticated:
            raise PermissionError("the token was not accepted")
