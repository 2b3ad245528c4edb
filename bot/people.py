"""Who is who: platform identities, time zones, and who counts as an IT agent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import AgentsConfig
from store.models import Person
from store.queries import upsert_insert


@dataclass(frozen=True)
class PersonRef:
    """A person as a platform adapter saw them; the service upserts it into ``people``."""

    platform: str
    user_id: str
    display_name: str | None = None
    """The directory's display name; when set it replaces the stored one."""
    timezone: str | None = None
    email: str | None = None
    fallback_name: str | None = None
    """A name to use only if the person is new and the directory gave none (e.g. a Slack handle from a click
    payload): it never replaces a stored display name."""

    @property
    def address(self) -> str:
        return f"{self.platform}:{self.user_id}"


class AgentRoster:
    """Agents from ``app.yaml`` plus members of configured Slack user groups (refreshed by the adapter)."""

    def __init__(self, config: AgentsConfig) -> None:
        self._static = {f"slack:{user}" for user in config.slack_users} | {
            f"teams:{user}" for user in config.teams_users
        }
        self._group_members: dict[str, set[str]] = {}
        self.leads = dict(config.leads)

    def is_agent(self, address: str) -> bool:
        return address in self._static or any(address in members for members in self._group_members.values())

    def set_group_members(self, group: str, addresses: set[str]) -> None:
        self._group_members[group] = set(addresses)

    def lead_of(self, address: str) -> str | None:
        return self.leads.get(address)


async def upsert_person(session: AsyncSession, ref: PersonRef, *, is_agent: bool, now: datetime) -> Person:
    """Find or create the person; refresh name/zone/agent flag when the platform told us something new."""
    query = select(Person).where(Person.platform == ref.platform, Person.platform_user_id == ref.user_id)
    person = (await session.execute(query)).scalar_one_or_none()
    if person is None:
        # Two replicas may meet a new person at the same moment: the insert that loses does nothing.
        insert = upsert_insert(session)
        await session.execute(insert(Person).values(
            platform=ref.platform, platform_user_id=ref.user_id,
            display_name=ref.display_name or ref.fallback_name or ref.user_id,
            timezone=ref.timezone, email=ref.email, is_agent=is_agent, created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["platform", "platform_user_id"]))
        person = (await session.execute(query)).scalar_one()
    changed = False
    for field, value in (("display_name", ref.display_name), ("timezone", ref.timezone), ("email", ref.email)):
        if value and getattr(person, field) != value:
            setattr(person, field, value)
            changed = True
    if person.is_agent != is_agent:
        person.is_agent = is_agent
        changed = True
    if changed:
        person.updated_at = now
    return person
