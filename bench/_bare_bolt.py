"""The floor: a bare slack-bolt AsyncApp on aiohttp whose /ithelp listener only acks.

argv: port, signing secret, Slack API base URL (the bench's fake Slack, for Bolt's one auth.test),
event loop ("asyncio" or "uvloop": the floor runs on the same loop as ithelp serve).
"""

from __future__ import annotations

import sys

from slack_bolt.app.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

app = AsyncApp(signing_secret=sys.argv[2], client=AsyncWebClient(token="xoxb-bench", base_url=sys.argv[3]),
               process_before_response=True)


@app.command("/ithelp")
async def ithelp(ack):  # type: ignore[no-untyped-def]
    await ack(response_type="ephemeral", text="ok")


if __name__ == "__main__":
    if sys.argv[4:] == ["uvloop"]:
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # Bolt's app.start() makes its own loop
    app.start(port=int(sys.argv[1]), path="/slack/events", host="127.0.0.1")
