"""Outages in Slack, over real HTTP: declaring an incident, linking tickets to it, the suggestion card for a
cluster of similar reports, and new reports linked at intake (issue #20)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bot.clock import ManualClock
from bot.routing import Action, Form
from bot.simulators import slack_requests as rq
from store.db import Database
from tests.incident_helpers import INCIDENTS, dumps, incidents, links, slack_buttons, suggestions
from tests.slack_harness import ALICE, MALLORY, REQUESTER, SECRET, TRIAGE, SlackBot

PEOPLE = [f"UPERSON{n}" for n in range(6)]


@pytest.fixture
def slack_extra_config() -> str:
    return INCIDENTS


def triage_posts(bot: SlackBot) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == TRIAGE]


def incident_cards(bot: SlackBot) -> list[dict[str, Any]]:
    return [c for c in triage_posts(bot) if "Incident:" in c["text"]]


def incident_updates(bot: SlackBot) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls_to("chat.update") if "Incident:" in c["text"]]


async def report(bot: SlackBot, user: str, text: str) -> None:
    status, _ = await bot.command(text, user=user)
    assert status == 200
    await bot.settle()


def add_people(bot: SlackBot) -> None:
    for n, user in enumerate(PEOPLE):
        bot.slack.add_user(user, name=f"person{n}", real_name=f"Person {n}", tz="Asia/Kolkata")


async def test_an_agent_makes_an_incident_from_a_ticket_card_and_links_another_ticket_to_it(
    bot: SlackBot, db: Database
) -> None:
    add_people(bot)
    await report(bot, PEOPLE[0], "Email is down in Pune")
    await report(bot, PEOPLE[1], "Outlook won't connect")
    first, second = await bot.tickets()
    card = triage_posts(bot)[0]
    assert (Action.INCIDENT_DECLARE.value, str(first.id)) in slack_buttons(card["blocks"])

    status, _ = await bot.click(Action.INCIDENT_DECLARE, str(first.id), ALICE)
    assert status == 200
    await bot.settle()
    [incident] = await incidents(db)
    assert (incident.title, incident.priority, incident.status) == ("Email is down in Pune", first.priority, "open")
    [posted] = incident_cards(bot)
    assert "INC-1" in posted["text"] and "Affected" in dumps(posted["blocks"]) and "1 report" in dumps(posted["blocks"])

    declared_card = [c for c in bot.slack.calls_to("chat.update")
                     if c["channel"] == TRIAGE and first.number in c["text"]][-1]
    assert "Carries INC-1" in dumps(declared_card["blocks"])
    assert Action.INCIDENT_DECLARE.value not in dumps(declared_card["blocks"])

    await bot.click(Action.INCIDENT_LINK, f"{second.id}:{incident.id}", ALICE, action_type="static_select")
    await bot.settle()
    assert await links(db) == {first.id: incident.id, second.id: incident.id}
    assert "2 reports" in dumps(incident_updates(bot)[-1]["blocks"])
    assert len(incident_cards(bot)) == 1  # edited in place, never a second card
    linked_card = [c for c in bot.slack.calls_to("chat.update")
                   if c["channel"] == TRIAGE and second.number in c["text"]][-1]
    assert "Linked to INC-1" in dumps(linked_card["blocks"])

    await bot.click(Action.INCIDENT_UNLINK, str(second.id), ALICE)
    await bot.settle()
    assert await links(db) == {first.id: incident.id}


async def test_someone_who_is_not_an_agent_cannot_make_an_incident(bot: SlackBot, db: Database) -> None:
    await report(bot, REQUESTER, "Email is down")
    [ticket] = await bot.tickets()
    await bot.click(Action.INCIDENT_DECLARE, str(ticket.id), MALLORY)
    await bot.settle()
    assert await incidents(db) == []
    refusals = [c for c in bot.slack.calls_to("chat.postEphemeral") if c["user"] == MALLORY]
    assert refusals and refusals[-1]["text"] == "Only IT agents can declare incidents."


async def test_an_agent_declares_an_incident_with_the_slash_command(bot: SlackBot, db: Database) -> None:
    status, body = await bot.command("incident VPN gateway down", user=ALICE)
    assert status == 200 and body["text"] == "INC-1 declared; its card is in the triage channel."
    await bot.settle()
    [incident] = await incidents(db)
    assert incident.title == "VPN gateway down" and incident.priority == "P1"
    assert len(incident_cards(bot)) == 1

    status, body = await bot.command("incident VPN gateway down", user=MALLORY)
    assert body["text"] == "Only IT agents can declare incidents."
    assert len(await incidents(db)) == 1


async def test_three_similar_reports_raise_one_suggestion_card_which_becomes_an_incident(
    bot: SlackBot, db: Database, clock: ManualClock
) -> None:
    add_people(bot)
    await report(bot, PEOPLE[0], "email down")
    await report(bot, PEOPLE[1], "Printer on floor 3 jams")
    await report(bot, PEOPLE[2], "Email is down")
    assert await suggestions(db) == []
    clock.advance(timedelta(minutes=2))
    await report(bot, PEOPLE[3], "email down again")
    [suggestion] = await suggestions(db)
    assert suggestion.count == 3
    [card] = [c for c in triage_posts(bot) if "similar reports" in c["text"]]
    assert "3 similar reports: 'email down again'" in card["text"]
    assert [a for a, _ in slack_buttons(card["blocks"])] == [Action.INCIDENT_ACCEPT.value,
                                                              Action.INCIDENT_DISMISS.value]

    clock.advance(timedelta(minutes=1))
    await report(bot, PEOPLE[4], "EMAIL DOWN")
    assert [c for c in triage_posts(bot) if "similar reports" in c["text"]] == [card]  # never a second card
    updated = [c for c in bot.slack.calls_to("chat.update") if "similar reports" in c["text"]]
    assert "4 similar reports" in updated[-1]["text"]

    value = slack_buttons(card["blocks"])[0][1]
    await bot.click(Action.INCIDENT_ACCEPT, value, ALICE)
    await bot.settle()
    [incident] = await incidents(db)
    tickets = await bot.tickets()
    email = [t.id for t in tickets if "mail" in t.summary.lower()]
    assert sorted(t for t, i in (await links(db)).items() if i == incident.id) == email
    answered = [c for c in bot.slack.calls_to("chat.update") if "similar reports" in c["text"]][-1]
    assert "Made into an incident." in dumps(answered["blocks"]) and slack_buttons(answered["blocks"]) == []
    [incident_card] = incident_cards(bot)
    assert "4 reports" in dumps(incident_card["blocks"])


async def test_not_related_keeps_the_cluster_quiet(bot: SlackBot, db: Database) -> None:
    add_people(bot)
    for person in PEOPLE[:3]:
        await report(bot, person, "wifi drops")
    [card] = [c for c in triage_posts(bot) if "similar reports" in c["text"]]
    await bot.click(Action.INCIDENT_DISMISS, slack_buttons(card["blocks"])[1][1], ALICE)
    await bot.settle()
    await report(bot, PEOPLE[3], "wifi drops")
    [suggestion] = await suggestions(db)
    assert suggestion.status == "dismissed"
    assert len([c for c in triage_posts(bot) if "similar reports" in c["text"]]) == 1
    assert await incidents(db) == []


async def test_a_new_report_matching_an_open_incident_is_linked_at_once_and_told_so(
    bot: SlackBot, db: Database
) -> None:
    add_people(bot)
    await bot.command("incident Email down in Pune", user=ALICE)
    await bot.settle()
    cards_before = len(triage_posts(bot))

    await report(bot, PEOPLE[0], "email is down in pune")
    [incident] = await incidents(db)
    ticket = (await bot.tickets())[-1]
    assert (await links(db))[ticket.id] == incident.id
    assert len(triage_posts(bot)) == cards_before  # no triage card of its own: it collapses under the incident
    told = [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == f"D{PEOPLE[0]}"
            and "known issue" in c["text"]]
    [notice] = told
    assert "This looks like a known issue: Email down in Pune (since" in notice["text"]
    assert "We're on it; you'll hear every update." in dumps(notice["blocks"])
    assert notice.get("thread_ts")  # threaded under the requester's own ticket
    assert [a for a, _ in slack_buttons(notice["blocks"])] == [Action.INCIDENT_MINE.value,
                                                                Action.INCIDENT_NOT_MINE.value]
    assert "2 reports" in dumps(incident_updates(bot)[-1]["blocks"])

    # "Something else": it becomes a normal ticket, with its own triage card.
    await bot.click(Action.INCIDENT_NOT_MINE, str(ticket.id), PEOPLE[0], channel_id=f"D{PEOPLE[0]}")
    await bot.settle()
    assert ticket.id not in await links(db)
    assert len(triage_posts(bot)) == cards_before + 1
    # Someone else can't unlink another person's report.
    await report(bot, PEOPLE[1], "Email down in Pune")
    other = (await bot.tickets())[-1]
    await bot.click(Action.INCIDENT_NOT_MINE, str(other.id), PEOPLE[2], channel_id=f"D{PEOPLE[2]}")
    await bot.settle()
    assert (await links(db))[other.id] == incident.id


async def test_open_incidents_show_as_known_issues_in_status_and_app_home(bot: SlackBot, db: Database) -> None:
    await bot.command("incident Email down in Pune <!channel>", user=ALICE)
    await bot.settle()
    status, body = await bot.command("status", user=REQUESTER)
    assert status == 200
    assert body["text"].startswith("Known issue INC-1: Email down in Pune")
    assert "<!channel>" not in body["text"]  # a mass mention in a title stays text
    assert "You have no open tickets." in body["text"]

    await bot.event({"type": "app_home_opened", "user": REQUESTER, "channel": f"D{REQUESTER}", "tab": "home"})
    [home] = await bot.slack.wait_for_calls("views.publish", 1)
    assert "Known issue INC-1: Email down in Pune" in dumps(home["view"])

    [incident] = await incidents(db)
    await bot.send(rq.view_submission(Form.INCIDENT_RESOLVE.value, {"incident_note": {"input": "Fixed"}}, ALICE,
                                      SECRET, private_metadata=str(incident.id)))
    await bot.settle()
    _, body = await bot.command("status", user=REQUESTER)
    assert "Known issue" not in body["text"]


async def test_an_outage_worded_many_ways_raises_one_suggestion_and_every_report_joins_its_incident(
    bot: SlackBot, db: Database
) -> None:
    people = [f"UWORDING{n}" for n in range(8)]
    for n, user in enumerate(people):
        bot.slack.add_user(user, name=f"wording{n}", real_name=f"Wording {n}", tz="Asia/Kolkata")
    # The first three word it one way; "email not working" and "Email down in Pune" are not alike, but each is
    # alike to "email is down", which counts towards the suggestion.
    for user, text in zip(people, ("email not working, down", "email not working down", "Email not working - down",
                                   "email is down", "Email down in Pune", "email down in pune office",
                                   "Pune email down"), strict=False):
        await report(bot, user, text)
    [suggestion] = await suggestions(db)
    assert suggestion.count == 7
    [card] = [c for c in triage_posts(bot) if "similar reports" in c["text"]]

    await bot.click(Action.INCIDENT_ACCEPT, slack_buttons(card["blocks"])[0][1], ALICE)
    await bot.settle()
    [incident] = await incidents(db)
    assert sorted((await links(db)).values()) == [incident.id] * 7
    await report(bot, people[7], "pune email is down!!")  # unlike the title, like the Pune reports linked
    assert len(await links(db)) == 8
    assert len(await suggestions(db)) == 1
