"""Fast intake: the ticket row is committed and acknowledged first; its "opened" setup follows once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, func, select

from bot.people import PersonRef
from bot.scheduler import EngineRunner
from bot.text import plain
from bot.tickets import Origin
from store.models import OutboxMessage, Ticket, TicketEvent, Timer

RITA = PersonRef("slack", "UREQ1", display_name="Rita Requester", timezone="Asia/Kolkata")
ALICE = PersonRef("slack", "UAGENT1", display_name="Alice")
SLACK = Origin("slack", conversation="C0GENERAL")


async def intake(desk: Any, summary: str = "VPN drops every ten minutes", *, priority: str | None = None,
                 dedup: tuple[str, str] | None = None, who: PersonRef = RITA) -> Any:
    return await desk.tickets.open(who, summary, origin=SLACK, priority=priority, dedup=dedup, defer_setup=True)


async def a_ticket_row(desk: Any) -> dict[str, Any]:
    """The columns of a real intake row (a ticket Rita opened), to hand an IntakeWriter again."""
    opened = await intake(desk, dedup=("slack-command", "warm"))
    async with desk.db.reading() as session:
        ticket = await session.get(Ticket, opened.ticket.id)
        return {c.name: getattr(ticket, c.name) for c in Ticket.__table__.columns if c.name not in ("id", "intake_key")}


async def opening_of(desk: Any, ticket_id: int) -> dict[str, Any]:
    """What a ticket's opening left behind: events, pending timers (kind, due) and outbox rows."""
    async with desk.db.reading() as session:
        ticket = await session.get(Ticket, ticket_id)
        events = list((await session.execute(select(TicketEvent.kind, TicketEvent.at).where(
            TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id))).all())
        timers = sorted((kind, due) for kind, due in (await session.execute(select(Timer.kind, Timer.due_at).where(
            Timer.ticket_id == ticket_id, Timer.done_at.is_(None)))).all())
        outbox = sorted((await session.execute(select(OutboxMessage.kind, OutboxMessage.target).where(
            OutboxMessage.ticket_id == ticket_id))).all())
    assert ticket is not None
    return {"ticket": ticket, "events": events, "timers": timers, "outbox": outbox}


@contextmanager
def counting_statements(desk: Any) -> Iterator[list[str]]:
    """The first word of every statement sent, plus "COMMIT" for every commit: what SQLAlchemy sends,
    and on PostgreSQL what goes straight down an asyncpg connection (the intake batch does)."""
    seen: list[str] = []
    drivers: list[Any] = []

    def first_word(statement: str) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        first_word(statement)

    def commit(_conn: Any) -> None:
        seen.append("COMMIT")

    def logged(query: Any) -> None:
        first_word(query.query)

    def checkout(dbapi_connection: Any, *_: Any) -> None:
        driver = getattr(dbapi_connection, "_connection", None)
        if hasattr(driver, "add_query_logger"):  # asyncpg
            driver.add_query_logger(logged)
            drivers.append(driver)

    engine = desk.db.engine.sync_engine
    listeners = [("before_cursor_execute", record), ("commit", commit), ("checkout", checkout)]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        yield seen
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)
        for driver in drivers:
            driver.remove_query_logger(logged)


async def test_requester_is_acknowledged_with_number_and_sla_before_the_setup_runs(desk: Any, clock: Any) -> None:
    result = await intake(desk, priority="P2")
    ticket = result.ticket
    assert result.created and ticket.number == f"IT-{ticket.id}"
    # Monday 09:00 London + 1 business hour; quoted in Rita's own zone by the ack text.
    assert ticket.first_response_due == clock.now() + timedelta(hours=1)
    assert ticket.requester_timezone == "Asia/Kolkata"
    assert "15:30 (your time)" in plain(desk.acknowledgement(ticket))  # 10:00 London is 15:30 in Kolkata
    before = await opening_of(desk, ticket.id)
    assert before["ticket"].setup_pending is True
    assert before["events"] == [] and before["timers"] == [] and before["outbox"] == []

    clock.advance(timedelta(seconds=3))  # the engine gets to it a moment later
    assert await desk.tickets.finish_setup() == 1
    after = await opening_of(desk, ticket.id)
    assert after["ticket"].setup_pending is False
    assert after["events"] == [("opened", ticket.created_at)]  # dated when Rita asked, not when set up
    assert after["ticket"].first_response_due == ticket.first_response_due
    assert after["ticket"].resolution_due == ticket.resolution_due
    assert after["ticket"].next_update_due == ticket.next_update_due
    assert await desk.tickets.finish_setup() == 0


@pytest.mark.parametrize("priority", ["P1", "P2", "P3", "P4"])
async def test_fast_intake_ends_exactly_where_the_one_transaction_open_does(desk: Any, priority: str) -> None:
    slow = await desk.tickets.open(RITA, "Outlook crashes on start", origin=SLACK, priority=priority)
    fast = await intake(desk, "Outlook crashes on start", priority=priority)
    await desk.tickets.finish_setup()
    slow_opening, fast_opening = await opening_of(desk, slow.ticket.id), await opening_of(desk, fast.ticket.id)
    assert fast_opening["timers"] == slow_opening["timers"] and fast_opening["timers"]
    assert [kind for kind, _ in fast_opening["outbox"]] == [kind for kind, _ in slow_opening["outbox"]]
    assert fast_opening["events"] == slow_opening["events"]
    for field in ("first_response_due", "resolution_due", "next_update_due", "calendar", "status"):
        assert getattr(fast_opening["ticket"], field) == getattr(slow_opening["ticket"], field), field
        if field.endswith("_due"):
            assert getattr(fast.ticket, field) == getattr(slow.ticket, field), field


async def test_known_requester_costs_one_round_trip_on_postgresql_and_a_short_transaction_on_sqlite(
        desk: Any) -> None:
    await intake(desk, dedup=("slack-command", "trigger-1"))  # first time: Rita is stored
    with counting_statements(desk) as statements:
        await intake(desk, "Second problem", dedup=("slack-command", "trigger-2"))
    if desk.db.is_postgres:
        assert statements == ["WITH"]  # dedup mark + ticket row in one statement that commits by itself
    else:
        assert [s for s in statements if s != "BEGIN"] == ["INSERT", "INSERT", "COMMIT"]


async def test_a_retried_intake_returns_the_ticket_it_already_opened(desk: Any) -> None:
    first = await intake(desk, dedup=("slack-command", "trigger-9"))
    again = await intake(desk, dedup=("slack-command", "trigger-9"))
    assert not again.created and again.ticket.id == first.ticket.id
    async with desk.db.reading() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 1


async def test_a_renamed_requester_is_stored_again_not_served_from_memory(desk: Any) -> None:
    await intake(desk)
    moved = PersonRef("slack", "UREQ1", display_name="Rita Requester", timezone="America/New_York")
    ticket = (await intake(desk, "Monitor flickers", who=moved)).ticket
    assert ticket.requester_timezone == "America/New_York"


async def test_claim_before_setup_still_records_opened_first(desk: Any) -> None:
    ticket = (await intake(desk)).ticket
    claimed = await desk.tickets.claim(ticket.id, ALICE)
    assert claimed.status == "claimed"
    kinds = [kind for kind, _ in (await opening_of(desk, ticket.id))["events"] if not kind.startswith("sla_")]
    assert kinds == ["opened", "claimed"]
    assert await desk.tickets.finish_setup() == 0


async def test_comment_before_setup_still_records_opened_first(desk: Any) -> None:
    ticket = (await intake(desk)).ticket
    await desk.tickets.comment(ticket.id, RITA, "It happens on Wi-Fi only")
    kinds = [kind for kind, _ in (await opening_of(desk, ticket.id))["events"]]
    assert kinds[:2] == ["opened", "commented"]
    assert await desk.tickets.finish_setup() == 0


async def test_three_replicas_set_up_each_pending_ticket_exactly_once(make_desk: Any) -> None:
    replicas = [make_desk(replica=f"r{i}") for i in range(3)]
    ids = [(await intake(replicas[i % 3], f"Problem {i}")).ticket.id for i in range(60)]

    async def drain(desk: Any) -> int:
        done = 0
        while count := await desk.tickets.finish_setup(limit=7):
            done += count
        return done

    assert sum(await asyncio.gather(*(drain(desk) for desk in replicas))) == 60
    async with replicas[0].db.reading() as session:
        opened = (await session.execute(select(TicketEvent.ticket_id, func.count()).where(
            TicketEvent.kind == "opened").group_by(TicketEvent.ticket_id))).all()
        pending = await session.scalar(select(func.count()).select_from(Ticket).where(Ticket.setup_pending))
    assert sorted(opened) == [(ticket_id, 1) for ticket_id in ids]
    assert pending == 0


async def test_a_crashed_replicas_pending_tickets_are_set_up_by_the_next_engine_tick(make_desk: Any) -> None:
    crashed, survivor = make_desk(replica="crashed"), make_desk(replica="survivor")
    ticket = (await intake(crashed)).ticket  # acked, then the process died before its engine ran
    await EngineRunner(survivor).tick()
    opening = await opening_of(survivor, ticket.id)
    assert [kind for kind, _ in opening["events"]] == ["opened"]
    assert opening["ticket"].setup_pending is False
    assert opening["outbox"]  # the triage and requester cards were written (and delivery attempted)


async def test_a_burst_of_intakes_shares_a_few_transactions_not_one_each(desk: Any) -> None:
    await intake(desk, dedup=("slack-command", "warm"))  # Rita is known from here on
    with counting_statements(desk) as statements:
        results = await asyncio.gather(*(intake(desk, f"Outage report {i}", dedup=("slack-command", f"burst-{i}"))
                                         for i in range(20)))
    assert len({r.ticket.id for r in results}) == 20 and all(r.created for r in results)
    # One batch for the request that started the writer, one for the 19 that queued behind it.
    if desk.db.is_postgres:
        assert statements.count("WITH") <= 2 and "COMMIT" not in statements  # one statement per batch
    else:
        assert statements.count("COMMIT") <= 2
        assert statements.count("INSERT") <= 21  # SQLite: one row per INSERT


async def test_a_retry_racing_its_original_in_the_same_batch_opens_one_ticket(desk: Any) -> None:
    await intake(desk, dedup=("slack-command", "warm"))
    first, retry = await asyncio.gather(intake(desk, "Printer offline", dedup=("slack-command", "same")),
                                        intake(desk, "Printer offline", dedup=("slack-command", "same")))
    assert {first.created, retry.created} == {True, False}
    assert first.ticket.id == retry.ticket.id


async def test_retries_racing_their_originals_into_the_next_batch_open_each_ticket_once(
        desk: Any, clock: Any) -> None:
    from store.intake import IntakeWriter

    row = await a_ticket_row(desk)
    writer = IntakeWriter(desk.db, max_batch=5)

    def mark(n: int) -> dict[str, Any]:
        return {"source": "slack-command", "key": f"race-{n}", "expires_at": clock.now() + timedelta(days=1)}

    originals = [asyncio.ensure_future(writer.write(row, mark(n))) for n in range(5)]
    for _ in range(3):
        await asyncio.sleep(0)  # the writer takes its batch of five and sends it
    retries = [asyncio.ensure_future(writer.write(row, mark(n))) for n in range(5)]
    await asyncio.sleep(0)  # the retries queue up while the originals' batch is out
    queued_behind = len(writer._queue)
    outcomes = await asyncio.gather(*originals, *retries)
    assert queued_behind == 5  # so the retries went in the next batch, after their originals committed
    assert all(isinstance(ticket_id, int) for ticket_id in outcomes[:5])
    assert outcomes[5:] == [None] * 5  # each retry told it is a repeat, writing nothing
    async with desk.db.reading() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 1 + 5


async def test_a_request_that_comes_while_the_writer_gives_its_connection_back_is_still_written(
        desk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from store import held_connection
    from store import intake as intake_module

    row = await a_ticket_row(desk)
    leaving = asyncio.Event()
    go_on = asyncio.Event()
    give_back = held_connection.HeldConnection.release

    async def slow_release(self: Any, **how: Any) -> None:  # the window: a PostgreSQL connection's close() awaits
        leaving.set()
        await go_on.wait()
        await give_back(self, **how)

    monkeypatch.setattr(held_connection.HeldConnection, "release", slow_release)
    writer = intake_module.IntakeWriter(desk.db)
    first = await writer.write(row, None)
    await asyncio.wait_for(leaving.wait(), 5)  # the only writer is on its way out
    second = asyncio.ensure_future(writer.write(row, None))
    await asyncio.sleep(0)
    go_on.set()
    assert isinstance(await asyncio.wait_for(second, 5), int) and first is not None


async def test_a_requester_who_hangs_up_mid_batch_does_not_cost_the_others_their_tickets(desk: Any) -> None:
    from store.intake import IntakeWriter

    row = await a_ticket_row(desk)
    writer = IntakeWriter(desk.db)
    callers = [asyncio.ensure_future(writer.write(row, None)) for _ in range(3)]
    for _ in range(3):
        await asyncio.sleep(0)  # all three queued and their batch on its way
    assert writer._writer is not None
    callers[1].cancel()  # e.g. Slack closed the connection on one of them
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert isinstance(outcomes[0], int) and isinstance(outcomes[2], int)
    async with desk.db.reading() as session:  # the hung-up one was written too: its batch went in whole
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 1 + 3


async def test_one_bad_row_does_not_cost_its_batch_neighbours_their_tickets(desk: Any, clock: Any) -> None:
    from sqlalchemy.exc import IntegrityError

    from store.intake import IntakeWriter

    row = await a_ticket_row(desk)
    writer = IntakeWriter(desk.db)
    broken = {**row, "requester_id": 987_654}  # no such person: the foreign key refuses it
    outcomes = await asyncio.gather(writer.write(row, None), writer.write(broken, None), writer.write(row, None),
                                    return_exceptions=True)
    assert isinstance(outcomes[1], IntegrityError)
    assert isinstance(outcomes[0], int) and isinstance(outcomes[2], int) and outcomes[0] != outcomes[2]


async def test_a_connection_the_database_dropped_fails_its_batch_as_an_outage_and_the_next_batch_reconnects(
        desk: Any) -> None:
    if not desk.db.is_postgres:
        pytest.skip("SQLite has no server to drop a connection")
    from bot.handlers.errors import is_database_outage
    from store.intake import IntakeWriter

    row = await a_ticket_row(desk)
    admin = await asyncpg.connect(str(desk.db.url.set(drivername="postgresql").render_as_string(False)))
    try:
        await desk.db.engine.dispose()  # from here on, the pool's sessions are the ones started after this
        started = await admin.fetchval("SELECT clock_timestamp()")
        writer = IntakeWriter(desk.db)
        assert isinstance(await writer.write(row, None), int)  # its connection is back in the pool, idle
        # As a database restart would: the idle sessions die under the pool.
        killed = await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                                      "backend_start >= $1 AND pid <> pg_backend_pid() AND state = 'idle'", started)
        assert killed >= 1
    finally:
        await admin.close()
    with pytest.raises(Exception) as lost:
        await writer.write(row, None)
    assert is_database_outage(lost.value), repr(lost.value)  # "the database is unavailable", not "a bug"
    assert isinstance(await writer.write(row, None), int)  # a fresh connection, no restart needed


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


async def test_a_setup_that_collides_with_another_replica_is_left_for_the_next_pass(
    desk: Any, mocker: Any, caplog: Any,
) -> None:
    from sqlalchemy.exc import DBAPIError

    ticket = (await intake(desk)).ticket
    collide = mocker.patch.object(desk.tickets, "_finish_setup",
                                  side_effect=DBAPIError("INSERT …", {}, _PgError("40P01")))
    assert await desk.tickets.finish_setup() == 0
    assert "collided with another replica" in caplog.text
    collide.side_effect = DBAPIError("INSERT …", {}, _PgError("23502"))  # anything else is a real error
    with pytest.raises(DBAPIError):
        await desk.tickets.finish_setup()
    mocker.stopall()
    assert await desk.tickets.finish_setup() == 1  # still pending, set up on the next pass
    assert [kind for kind, _ in (await opening_of(desk, ticket.id))["events"]] == ["opened"]


async def test_a_due_page_is_not_held_back_by_a_flood_of_new_tickets_being_set_up(desk: Any, clock: Any) -> None:
    from bot.engine import TimerRun
    from store.queries import schedule_timer

    pending_when_paged: list[int] = []

    async def page(run: TimerRun) -> None:
        pending_when_paged.append(int(await run.session.scalar(
            select(func.count()).select_from(Ticket).where(Ticket.setup_pending)) or 0))

    desk.timers.register("test.page", page)
    for n in range(30):
        await intake(desk, f"Outage report {n}")
    async with desk.db.transaction() as session:
        await schedule_timer(session, kind="test.page", due_at=clock.now(), now=clock.now())
    runner = EngineRunner(desk)
    with desk.requests.serving():  # a burst of chat requests is in flight the whole time
        ticking = asyncio.ensure_future(runner.tick())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if pending_when_paged:
                break
    await asyncio.wait_for(ticking, 10)
    assert pending_when_paged and pending_when_paged[0] >= 20  # paged after the first small batch, not the last
    async with desk.db.reading() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket).where(Ticket.setup_pending)) == 0


async def test_looking_for_tickets_to_set_up_probes_the_index_instead_of_reading_every_ticket(desk: Any) -> None:
    # Every engine tick asks. With "setup_pending IS true" neither engine matched the partial index
    # ("WHERE setup_pending"): PostgreSQL read all 100,000 tickets of the breach bench, 50 ms a tick.
    from sqlalchemy import insert, text
    from sqlalchemy.dialects import postgresql, sqlite

    from store.queries import claim_pending_setup_statement

    row = {**await a_ticket_row(desk), "setup_pending": False}
    settled = 3000
    async with desk.db.transaction() as session:
        await session.execute(insert(Ticket), [row] * settled)
    dialect = postgresql.dialect() if desk.db.is_postgres else sqlite.dialect()
    sql = str(claim_pending_setup_statement(dialect.name, limit=50).compile(
        dialect=dialect, compile_kwargs={"literal_binds": True}))
    async with desk.db.transaction() as session:
        if desk.db.is_postgres:
            await session.execute(text("ANALYZE tickets"))
            plan = (await session.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))).scalar_one()

            def rows_read_and_dropped(node: dict[str, Any]) -> float:
                dropped = float(node.get("Rows Removed by Filter", 0)) * node.get("Actual Loops", 1)
                return dropped + sum(rows_read_and_dropped(child) for child in node.get("Plans", []))

            assert rows_read_and_dropped(plan[0]["Plan"]) < 100  # a scan drops all 3,000 settled tickets
        else:
            steps = [detail for *_, detail in (await session.execute(text(f"EXPLAIN QUERY PLAN {sql}"))).all()]
            assert any("ix_tickets_setup_pending" in step for step in steps), steps
            assert "SCAN tickets" not in steps, steps
        await session.rollback()
    assert await desk.tickets.finish_setup(limit=50) == 1  # the one ticket a_ticket_row opened is still found
