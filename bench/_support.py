"""Shared bench plumbing: start processes, sign Slack requests, fire load, summarise latencies."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.simulators import slack_requests as rq  # noqa: E402

POSTGRES_URL = os.environ.get("ITHELP_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Result:
    name: str
    count: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


class _KeepAliveConnection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection of the load generator: writes a prepared request, reads the
    status of the answer (Content-Length framed, as aiohttp answers) and is ready for the next."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._answer: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self._buffer[:head_end]).lower()
        length_at = head.find(b"\r\ncontent-length:")
        if length_at < 0:
            self._fail(RuntimeError(f"an answer without Content-Length: {head[:200]!r}"))
            return
        line_end = head.find(b"\r\n", length_at + 2)
        length = int(head[length_at + 17: line_end if line_end > 0 else None])
        if len(self._buffer) < head_end + 4 + length:
            return
        del self._buffer[: head_end + 4 + length]
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("the server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)

    async def send(self, request: bytes) -> int:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._answer


def _http_request(url: str, request: rq.SignedRequest) -> bytes:
    parts = urlsplit(url)
    headers = {"Host": parts.netloc, "Content-Length": str(len(request.body)), **request.headers}
    head = f"POST {parts.path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (head + "\r\n").encode() + request.body


async def fire(url: str, make: Callable[[int], rq.SignedRequest], total: int, concurrency: int, name: str) -> Result:
    """``total`` requests over ``concurrency`` keep-alive connections, each sending its next request as
    soon as the last is answered.

    The load generator shares the machine with the servers under test, so it stays light: every
    request is built and signed before the clock starts, and the connections write those bytes and
    read only the status line and length of each answer. (aiohttp's client cost ~0.4 ms of CPU per
    request here, as much as the bare Bolt app it was measuring; this costs ~0.2.)
    """
    requests = [_http_request(url, make(index)) for index in range(total)]
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    connections: list[_KeepAliveConnection] = []
    latencies: list[float] = []
    errors = 0
    pending = iter(requests)

    async def worker(connection: _KeepAliveConnection) -> None:
        nonlocal errors
        for request in pending:
            started = time.perf_counter()
            if await connection.send(request) != 200:
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    try:
        for _ in range(concurrency):
            connections.append((await loop.create_connection(_KeepAliveConnection, host, port))[1])
        started = time.perf_counter()
        await asyncio.gather(*(worker(connection) for connection in connections))
        seconds = time.perf_counter() - started
    finally:
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
    return Result(name, total, errors, seconds, latencies)


def client_cpu() -> float:
    """CPU seconds this (load-generating) process has used so far."""
    times = os.times()
    return times.user + times.system


def start_process(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    # The log goes to a file: an unread pipe fills up and stalls the server mid-benchmark.
    log = (cwd / f"process-{len(list(cwd.glob('process-*.log')))}.log").open("wb")
    return subprocess.Popen(args, env={**os.environ, **env}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}; see its log in the bench work dir")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers: up
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


async def make_schema(prefix: str) -> str:
    import uuid

    import asyncpg

    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return schema


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
