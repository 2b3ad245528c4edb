"""Naming a person in a privacy request (``slack:U123``), finding them, and recognising one already erased."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import Person
from store.privacy_models import PrivacyLog

PLATFORMS = ("slack", "teams")
ERASED = "privacy.erase"


class RequestError(Exception):
    """A privacy request that can't be carried out; ``str()`` says why and what to do, in a sentence or two."""


class PersonNotFound(RequestError):
    pass


def parse_address(address: str) -> tuple[str, str]:
    """``slack:U123`` (or ``slack:user:U123``, as targets are written) → ``("slack", "U123")``."""
    platform, _, rest = address.strip().partition(":")
    user_id = rest.removeprefix("user:") if rest.startswith("user:") else rest
    if platform not in PLATFORMS or not user_id or any(c.isspace() for c in user_id):
        raise RequestError(f'"{address}" is not a person; write slack:<member id> (e.g. slack:U012ABCDEF) or '
                           "teams:<Entra object id>")
    return platform, user_id


def not_found(address: str) -> PersonNotFound:
    return PersonNotFound(
        f"No one is known as {address}. Check the id: a Slack member id looks like U012ABCDEF (profile → ⋮ → "
        "Copy member ID); a Teams id is the user's Entra object id. Nothing was changed.")


async def find_person(session: AsyncSession, platform: str, user_id: str, *, lock: bool = False) -> Person | None:
    query = select(Person).where(Person.platform == platform, Person.platform_user_id == user_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


def fingerprint(address: str, salt: bytes | None = None) -> str:
    """A salted SHA-256 of a canonical address: enough to recognise a repeated request, not to recover the id."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    return f"sha256${salt.hex()}${hashlib.sha256(salt + address.encode()).hexdigest()}"


def fingerprint_matches(stored: str | None, address: str) -> bool:
    scheme, _, rest = (stored or "").partition("$")
    salt, _, _ = rest.partition("$")
    if scheme != "sha256" or not salt:
        return False
    try:
        return hmac.compare_digest(stored or "", fingerprint(address, bytes.fromhex(salt)))
    except ValueError:
        return False


async def erased_on(session: AsyncSession, address: str) -> datetime | None:
    """When the person at ``address`` was erased, if they were (from the privacy log's fingerprints)."""
    rows = await session.execute(select(PrivacyLog.at, PrivacyLog.subject).where(PrivacyLog.action == ERASED)
                                 .order_by(PrivacyLog.at))
    return next((at for at, subject in rows if fingerprint_matches(subject, address)), None)
