"""The ticket state machine, on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.people import PersonRef
from bot.tickets import AlreadyClaimed, IllegalTransition, InvalidInput, NotAllowed, Origin
from store.models import OutboxMessage, TicketEvent
from tests.outbox_views import headline

ALICE = PersonRef("slack", "UAGENT1", display_name="Alice")
BOB = PersonRef("slack", "UAGENT2", display_name="Bob")
MALLORY = PersonRef("slack", "UNOTAGENT", display_name="Mallory")
REQUESTER = PersonRef("slack", "UREQ1", display_name="Person UREQ1")


async def events_of(desk: Any, ticket_id: int) -> list[str]:
    """The lifecycle events (the SLA clock's own sla_* audit events are tested in test_sla)."""
    async with desk.db.transaction() as session:
        rows = await session.execute(
            select(TicketEvent.kind).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id))
        return [kind for kind in rows.scalars() if not kind.startswith("sla_")]


async def test_ticket_walks_the_happy_path_and_every_step_is_an_event(desk: Any, make_ticket: Any) -> None:
    ticket = await make_ticket()
    assert ticket.number == f"IT-{ticket.id}" and ticket.status == "new"
    assert (await desk.tickets.claim(ticket.id, ALICE)).status == "claimed"
    assert (await desk.tickets.set_status(ticket.id, ALICE, "in_progress")).status == "in_progress"
    assert (await desk.tickets.set_status(ticket.id, ALICE, "waiting_on_requester")).status == "waiting_on_requester"
    # The requester's reply puts the ball back with IT.
    assert (await desk.tickets.comment(ticket.id, REQUESTER, "It's the one by the window")).status == "in_progress"
    assert (await desk.tickets.resolve(ticket.id, ALICE, "Cleared the jam")).status == "resolved"
    assert (await desk.tickets.reopen(ticket.id, REQUESTER, "Jammed again")).status == "reopened"
    assert (await desk.tickets.claim(ticket.id, BOB)).status == "claimed"
    assert (await desk.tickets.resolve(ticket.id, BOB, "Replaced the roller")).status == "resolved"
    assert (await desk.tickets.close(ticket.id, REQUESTER)).status == "closed"
    assert await events_of(desk, ticket.id) == [
        "opened", "claimed", "status_changed", "status_changed", "commented", "resolved", "reopened", "claimed",
        "resolved", "closed",
    ]


@pytest.mark.parametrize(
    ("steps", "illegal"),
    [
        ([], ("close", None)),
        ([("claim", None), ("resolve", "done")], ("set_status", "in_progress")),
        ([("claim", None), ("resolve", "done"), ("close", None)], ("set_status", "waiting_on_requester")),
        ([("claim", None), ("resolve", "done"), ("close", None)], ("resolve", "again")),
        ([("claim", None)], ("reopen", "why")),
    ],
)
async def test_illegal_transitions_are_refused_with_a_human_message(
    desk: Any, make_ticket: Any, steps: list[tuple[str, Any]], illegal: tuple[str, Any]
) -> None:
    ticket = await make_ticket()
    for name, arg in steps:
        await _step(desk, ticket.id, name, arg)
    before = await events_of(desk, ticket.id)
    with pytest.raises(IllegalTransition) as refused:
        await _step(desk, ticket.id, *illegal)
    assert ticket.number in str(refused.value) and "can't" in str(refused.value)
    assert await events_of(desk, ticket.id) == before


async def _step(desk: Any, ticket_id: int, name: str, arg: Any) -> Any:
    if name == "claim":
        return await desk.tickets.claim(ticket_id, ALICE)
    if name == "resolve":
        return await desk.tickets.resolve(ticket_id, ALICE, arg)
    if name == "close":
        return await desk.tickets.close(ticket_id, ALICE)
    if name == "reopen":
        return await desk.tickets.reopen(ticket_id, ALICE, arg)
    return await desk.tickets.set_status(ticket_id, ALICE, arg)


async def test_two_agents_claiming_at_once_one_wins_the_other_hears_who(
    databases: Any, db: Any, make_desk: Any, make_ticket: Any
) -> None:
    ticket = await make_ticket()
    # Two replicas, each with its own engine/pool, as in production.
    desk_a, desk_b = make_desk(), make_desk(database=databases.another_handle(db))
    results = await asyncio.gather(desk_a.tickets.claim(ticket.id, ALICE), desk_b.tickets.claim(ticket.id, BOB),
                                   return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, AlreadyClaimed)]
    assert len(winners) == 1 and len(losers) == 1
    winner_name = winners[0].assignee_name
    assert str(losers[0]) == f"{ticket.number} is already claimed by {winner_name}."
    assert (await events_of(desk_a, ticket.id)).count("claimed") == 1


async def test_double_click_on_claim_changes_nothing(desk: Any, make_ticket: Any) -> None:
    ticket = await make_ticket()
    await desk.tickets.claim(ticket.id, ALICE)
    again = await desk.tickets.claim(ticket.id, ALICE)
    assert again.assignee_name == "Alice"
    assert (await events_of(desk, ticket.id)).count("claimed") == 1


async def test_only_agents_can_claim_or_resolve(desk: Any, make_ticket: Any) -> None:
    ticket = await make_ticket()
    with pytest.raises(NotAllowed, match="Only IT agents can claim"):
        await desk.tickets.claim(ticket.id, MALLORY)
    with pytest.raises(NotAllowed, match="Only IT agents can resolve"):
        await desk.tickets.resolve(ticket.id, MALLORY, "fixed it myself")
    assert await events_of(desk, ticket.id) == ["opened"]


async def test_every_change_writes_outbox_rows_in_the_same_transaction(desk: Any, make_ticket: Any) -> None:
    ticket = await make_ticket()
    await desk.tickets.claim(ticket.id, ALICE)
    async with desk.db.transaction() as session:
        rows = (await session.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars().all()
    kinds = [(row.target, row.kind) for row in rows]
    # opened: triage card + requester card; claimed: the same two + "Alice is on it".
    assert kinds.count(("slack:channel:C0TRIAGE", "ticket_card")) == 2
    assert kinds.count(("slack:user:UREQ1", "ticket_card")) == 2
    notices = [row for row in rows if row.kind == "notice"]
    assert [headline(n) for n in notices] == ["Alice is on it."]


async def test_a_failing_subscriber_rolls_back_the_change(desk: Any, make_ticket: Any) -> None:
    ticket = await make_ticket()

    async def explode(change: Any) -> None:
        raise RuntimeError("disk full")

    desk.tickets.subscribe(explode)
    with pytest.raises(RuntimeError):
        await desk.tickets.claim(ticket.id, ALICE)
    assert (await desk.tickets.get(ticket.id)).status == "new"
    assert await events_of(desk, ticket.id) == ["opened"]


async def test_same_inbound_event_twice_opens_one_ticket(desk: Any) -> None:
    first = await desk.tickets.open(REQUESTER, "VPN down", origin=Origin("slack"), dedup=("slack", "Ev1"))
    second = await desk.tickets.open(REQUESTER, "VPN down", origin=Origin("slack"), dedup=("slack", "Ev1"))
    assert first.created and not second.created and first.ticket.id == second.ticket.id
    async with desk.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(TicketEvent)) == 1


async def test_long_text_is_kept_whole_and_empty_text_is_refused(desk: Any) -> None:
    text = "Laptop will not boot " * 40
    result = await desk.tickets.open(REQUESTER, text, origin=Origin("slack"))
    assert len(result.ticket.summary) <= 300
    async with desk.db.transaction() as session:
        from store.models import Ticket

        stored = await session.get(Ticket, result.ticket.id)
        assert stored is not None and text.strip() in stored.description
    with pytest.raises(InvalidInput, match="describe the problem"):
        await desk.tickets.open(REQUESTER, "   ", origin=Origin("slack"))
