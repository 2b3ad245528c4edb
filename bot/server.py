"""``ithelp serve``: one aiohttp app with Slack, Teams, health and metrics, plus the engine."""

from __future__ import annotations

import asyncio
import gc
import hmac
import ipaddress
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from bot.clock import Clock, SystemClock
from bot.config import AppConfig
from bot.deadlines import SAVED_LATE, DeadlineExceeded, settle_abandoned, within
from bot.desk import Desk, build_desk
from bot.handlers.errors import OUTAGE
from bot.scheduler import EngineRunner
from store.db import REQUEST_DEADLINE, Database
from store.migrate import upgrade
from store.models import OutboxMessage, Timer

log = logging.getLogger("ithelp.server")
CHAT_CONCURRENCY = 64
"""Chat requests handled at once; the rest wait their turn in arrival order. Without turns a burst shares
the CPU among all of its requests, which then all finish late together, and past the deadline all fail
together; in turns the first are answered first, and only the last ones are told to try again."""
TURN_RESERVE = 0.2
"""The share of the request deadline a request must still have when its turn comes; past that it is told to try
again without waiting for a turn it could not use."""
HEALTH_DEADLINE = 1.0
"""Seconds /healthz waits for the database before it answers 503: a probe must not hang with the database."""


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


class Server:
    """The running bot: database, engine, platform adapters and the HTTP listener."""

    def __init__(
        self, config: AppConfig, *, clock: Clock | None = None, db: Database | None = None,
        host: str | None = None, port: int | None = None, replica: str | None = None, run_engine: bool = True,
        socket_mode: bool = False,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.db = db or Database(config.database.url, pool_size=config.database.pool_size,
                                 echo=config.database.echo, schema=config.database.schema_name)
        self.host = host if host is not None else config.server.host
        self.port = port if port is not None else config.server.port
        self.replica = replica
        self.run_engine = run_engine
        self.socket_mode = socket_mode
        self.desk: Desk | None = None
        self.engine: EngineRunner | None = None
        self.adapters: dict[str, Any] = {}
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._site_port: int | None = None
        self._metrics_port: int | None = None
        self._background: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._site_port or self.port}"

    @property
    def metrics_url(self) -> str:
        """Where ``GET /metrics`` answers: its own listener when ``server.metrics_port`` is set."""
        if self._metrics_runner is None:
            return f"{self.url}/metrics"
        return f"http://{self.config.server.metrics_host or self.host}:{self._metrics_port}/metrics"

    async def start(self) -> None:
        await upgrade(self.db)
        desk = build_desk(self.config, self.db, self.clock, replica=self.replica)
        self.desk = desk
        self.engine = EngineRunner(desk)
        desk.wake.connect(self.engine.kick)
        for job in desk.cron_jobs:
            self.engine.add_cron(job)
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_get("/healthz", self._healthz)
        off: list[str] = []
        await self._mount_slack(app, desk, off)
        self._mount_teams(app, desk, off)
        if off:
            log.info("platforms off: %s", "; ".join(off))
        server_config = self.config.server
        if server_config.metrics_port is None:
            app.router.add_get("/metrics", self._metrics)
        else:
            metrics_app = web.Application()
            metrics_app.router.add_get("/metrics", self._metrics)
            self._metrics_runner, self._metrics_port = await _listen(
                metrics_app, server_config.metrics_host or self.host, server_config.metrics_port)
        self._runner, self._site_port = await _listen(app, self.host, self.port)
        if self.run_engine:
            self.engine.start()
            if desk.config.knowledge.enabled:  # a fresh desk answers from its articles without waiting for the cron
                self._background.append(asyncio.get_running_loop().create_task(desk.knowledge.index_on_start()))
        log.info("ithelp listening on %s (database: %s, event loop: %s)", self.url, self.db.dialect,
                 type(asyncio.get_running_loop()).__module__.split(".")[0])

    async def _mount_slack(self, app: web.Application, desk: Desk, off: list[str]) -> None:
        slack = self.config.slack
        if not slack.enabled:
            off.append(f"Slack ({slack.disabled_reason})")
            return
        from bot.handlers.slack import SlackAdapter
        from bot.handlers.slack_filing import ACKNOWLEDGE, FILE_MENTION, FILE_MESSAGE

        adapter = SlackAdapter(desk)
        self.adapters["slack"] = adapter
        # What Slack's requests leave for after the ack: it reads Slack, then answers in the message's thread.
        desk.timers.register_task(FILE_MESSAGE, adapter.filing.file_message)
        desk.timers.register_task(FILE_MENTION, adapter.filing.file_mention)
        desk.timers.register_task(ACKNOWLEDGE, adapter.filing.acknowledge)
        app.router.add_post("/slack/events", _foreground(desk, adapter.handle, deadline=(
            self.config.server.request_deadline.total_seconds(), _slack_too_late)))
        if self.config.agents.slack_usergroups and self.engine is not None:
            self._background.append(asyncio.get_running_loop().create_task(adapter.refresh_agent_groups()))
            self.engine.scheduler.add_job(adapter.refresh_agent_groups, "interval", minutes=10,
                                          id="slack-agent-groups", replace_existing=True)
        if self.socket_mode:
            self._background.append(asyncio.get_running_loop().create_task(adapter.run_socket_mode()))

    def _mount_teams(self, app: web.Application, desk: Desk, off: list[str]) -> None:
        teams = self.config.teams
        if not teams.active:
            off.append("Teams (teams.enabled is false)" if teams.enabled is False
                       else "Teams (teams.app_id and teams.app_password not set)")
            return
        if not teams.authenticated and not is_loopback(self.host):
            log.warning("Teams is off: refusing /api/messages on %s without teams.app_id and teams.app_password "
                        "(requests could not be authenticated); set them or listen on 127.0.0.1", self.host)
            return
        from bot.handlers.teams import TeamsAdapter

        adapter = TeamsAdapter(desk)
        self.adapters["teams"] = adapter
        app.router.add_post("/api/messages", _foreground(desk, adapter.handle))
        if not teams.authenticated:
            log.warning("Teams requests are unauthenticated: teams.enabled is true without teams.app_id and "
                        "teams.app_password, so /api/messages on %s accepts anyone's activities (local testing "
                        "only)", self.host)

    async def _healthz(self, request: web.Request) -> web.Response:
        # Nothing about the database (not even its kind) for whoever can reach the port.
        try:
            await within(HEALTH_DEADLINE, self.db.ping())
        except Exception as exc:
            log.warning("health check: database unreachable: %s", "no answer within "
                        f"{HEALTH_DEADLINE:g}s" if isinstance(exc, DeadlineExceeded) else exc)
            return web.json_response({"status": "error"}, status=503)
        return web.json_response({"status": "ok"})

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self.desk is not None
        token = self.config.server.metrics_token
        if token and not hmac.compare_digest(request.headers.get("Authorization", "").encode(),
                                             f"Bearer {token}".encode()):
            return web.json_response({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        metrics = self.desk.metrics
        try:
            async with self.db.reading() as session:
                now = self.clock.now()
                metrics.timers_due.set(await session.scalar(select(func.count()).select_from(Timer).where(
                    Timer.done_at.is_(None), Timer.due_at <= now)) or 0)
                metrics.outbox_pending.set(await session.scalar(select(func.count()).select_from(OutboxMessage).where(
                    OutboxMessage.delivered_at.is_(None), OutboxMessage.dead_at.is_(None))) or 0)
                metrics.outbox_dead_current.set(await session.scalar(
                    select(func.count()).select_from(OutboxMessage).where(OutboxMessage.dead_at.is_not(None))) or 0)
        except Exception as exc:  # still serve the process metrics when the database is away
            log.warning("metrics: database unreachable: %s", exc)
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()
        for task in self._background:
            task.cancel()
        for adapter in self.adapters.values():
            close = getattr(adapter, "close", None)
            if close is not None:
                await close()
        if self.desk is not None:
            await self.desk.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await settle_abandoned(timeout=5)
        await self.db.dispose()


def freeze_startup_heap() -> None:
    """Once the server has started: everything loaded so far (modules, config, compiled statements) lives as
    long as the process, so keep it out of the garbage collector's full passes, which otherwise stall
    requests for tens of milliseconds."""
    gc.collect()
    gc.freeze()


async def serve_forever(server: Server) -> None:
    """Run until SIGTERM/SIGINT, then shut down cleanly (exit code 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    freeze_startup_heap()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await server.stop()


async def _listen(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port; returns its runner and the port it got (port 0: an ephemeral one)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else port


Handler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]
LateAnswer = Callable[[web.Request, bool], Coroutine[Any, Any, web.StreamResponse]]


class _Tally:
    """Logs a repeated warning once, then at most once a minute with how many times it happened since."""

    def __init__(self, desk: Desk) -> None:
        self.clock = desk.clock
        self.unlogged = 0
        self.logged_at: datetime | None = None

    def count(self, message: str) -> None:
        self.unlogged += 1
        now = self.clock.now()
        if self.logged_at is None or now - self.logged_at >= timedelta(minutes=1):
            log.warning("%s (%d time(s) since the last such line)", message, self.unlogged)
            self.unlogged, self.logged_at = 0, now


def _foreground(desk: Desk, handler: Handler, *, deadline: tuple[float, LateAnswer] | None = None) -> Handler:
    """Chat requests count as in flight so background work steps aside for them (RequestsFirst). With a
    ``deadline`` (seconds, and what to answer past them) a request whose handling outlives it, because the
    database hangs, is cancelled, nothing of it committed, and answered anyway; and requests take turns,
    at most :data:`CHAT_CONCURRENCY` at once, in the order they came."""
    turns = asyncio.Semaphore(CHAT_CONCURRENCY)
    late = _Tally(desk)
    seconds = deadline[0] if deadline is not None else 0.0

    async def in_turn(request: web.Request) -> web.StreamResponse:
        # One whose turn can't come with time left to be served is told at once (the CPU goes to the others).
        deadline = REQUEST_DEADLINE.get()
        wait = None if deadline is None else deadline.at - TURN_RESERVE * seconds - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(wait):
                await turns.acquire()
        except TimeoutError:
            raise DeadlineExceeded("no turn in time") from None
        try:
            return await handler(request)
        finally:
            turns.release()

    async def handle(request: web.Request) -> web.StreamResponse:
        with desk.requests.serving():
            if deadline is None:
                return await handler(request)
            too_late = deadline[1]
            await request.read()  # the upload is the client's time, not ours: the deadline starts after it
            try:
                return await within(seconds, in_turn(request))
            except DeadlineExceeded as exc:
                late.count(f"{request.method} {request.path}: not handled within {seconds:g}s (the database hangs, "
                           "or more requests came at once than it can write in that time); answered "
                           + ("that the ticket is on its way" if exc.saved else "that nothing was saved"))
                return await too_late(request, exc.saved)

    return handle


async def _slack_too_late(request: web.Request, saved: bool) -> web.StreamResponse:
    # A slash command shows its answer to the person: the usual outage sentence (or, when its ticket made it,
    # that it did). Events and clicks get a 503, as when the database is down: Slack retries events, and
    # their event-id dedup makes the retry safe.
    if "application/x-www-form-urlencoded" in (request.content_type or ""):
        fields = dict(parse_qsl((await request.read()).decode("utf-8", "replace")))
        if fields.get("command") and "payload" not in fields:
            return web.json_response({"response_type": "ephemeral", "text": SAVED_LATE if saved else OUTAGE})
    return web.Response(status=200 if saved else 503)
