"""The App Home tab and the once-per-person welcome."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.handlers.slack_part import SlackListeners
from bot.renderers import slack_ticket_blocks

log = logging.getLogger("ithelp.slack")


class SlackHome(SlackListeners):
    """The App Home tab and the once-per-person welcome."""

    async def on_home_opened(self, event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("tab", "home") != "home":
            return
        user_id = event["user"]
        await self.publish_home(user_id, client)
        await self._welcome(user_id, client)

    async def _welcome(self, user_id: str, client: AsyncWebClient) -> None:
        """The first App Home open greets the person in the app's Messages tab, once (Slack retries events)."""
        person = await self.person(user_id)
        if not await self.desk.welcomes.first_time(person):
            return
        view = await self.desk.welcomes.view(
            person, "Message me here (or type `/ithelp <what's wrong>` anywhere), or press New ticket.")
        try:
            await client.chat_postMessage(channel=user_id, text=slack_ticket_blocks.ticket_list_text(view),
                                          blocks=slack_ticket_blocks.ticket_list_blocks(view))
        except SlackApiError as exc:
            log.warning("could not welcome %s: %s", user_id, exc)
            await self.desk.welcomes.forget(person)

    async def publish_home(self, user_id: str, client: AsyncWebClient | None = None) -> None:
        person_ref = await self.person(user_id)
        async with self.desk.db.transaction() as session:
            person = await self.desk.tickets.record_person(session, person_ref)
            listing = await self.cards.requester_list(session, person, self.desk.clock.now(),
                                                      include_agent_sections=person.is_agent)
        listing = dataclasses.replace(listing, intro=(*await self.desk.incidents.known_issues(person.timezone),
                                                      *listing.intro))
        await (client or self.client).views_publish(user_id=user_id, view=slack_ticket_blocks.home_view(listing))


__all__ = ["SlackHome"]
