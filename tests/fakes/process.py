"""Real ``ithelp serve`` processes and a private PostgreSQL cluster, for reliability tests.

Everything here is async-friendly: the fakes the servers talk to (``FakeSlackApi``…) run in the test's event
loop, so waiting must never block it. Process output goes to a log file (never a pipe that could fill up).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two config mappings; ``extra`` wins, nested mappings are merged key by key."""
    out: dict[str, Any] = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def write_config(path: Path, base_yaml: str, overrides: Mapping[str, Any] | None = None) -> Path:
    """Write ``base_yaml`` deep-merged with ``overrides`` to ``path`` (an ``app.yaml`` for ``ithelp serve``)."""
    data = merge(yaml.safe_load(base_yaml) or {}, overrides or {})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class ServeProcess:
    """One ``python -m bot serve`` subprocess on 127.0.0.1:``port``."""

    def __init__(self, config: Path, *, port: int | None = None, replica: str | None = None,
                 log_dir: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.port = port or free_port()
        self.replica = replica
        self.log_path = (log_dir or config.parent) / f"serve-{replica or self.port}-{self.port}.log"
        self._env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        command = [sys.executable, "-m", "bot", "serve", "--config", str(self.config), "--port", str(self.port)]
        if self.replica:
            command += ["--replica", self.replica]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self._env or {})}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=self.config.parent, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_healthy(self, timeout: float = 60) -> None:  # noqa: ASYNC109 - polling a starting process
        """Poll ``/healthz`` until it answers 200; fail with the log if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            while time.monotonic() < deadline:
                if not self.running:
                    raise AssertionError(f"ithelp serve ({self.replica}) exited early:\n{self.log()[-4000:]}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.url}/healthz did not answer 200 within {timeout}s:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no lease release, exactly like a crashed pod."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    async def stop(self, timeout: float = 20) -> int | None:  # noqa: ASYNC109
        """SIGTERM and wait for a clean exit (SIGKILL after ``timeout``); returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)
            except TimeoutError:
                self.kill()
        return process.returncode


async def start_servers(servers: list[ServeProcess], timeout: float = 90) -> None:  # noqa: ASYNC109
    """Start several servers at once and wait until every one is healthy."""
    try:
        for server in servers:
            server.start()
        await asyncio.gather(*(server.wait_healthy(timeout) for server in servers))
    except BaseException:
        for server in servers:
            server.kill()
        raise


async def stop_servers(servers: list[ServeProcess]) -> None:
    await asyncio.gather(*(server.stop() for server in servers), return_exceptions=True)


# -- a private PostgreSQL cluster ------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """Where ``initdb``/``pg_ctl`` live (Debian's versioned dir, else $PATH); None when not installed."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def private_postgres_unavailable() -> str | None:
    """Why a private cluster can't be made here, or None when it can."""
    if postgres_bin_dir() is None:
        return "initdb/pg_ctl not found (install postgresql, e.g. apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' OS user to run initdb/pg_ctl as"
        if not shutil.which("runuser"):
            return "running as root and runuser is not available to drop to the 'postgres' user"
    return None


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in a temp dir, on its own port, that a test may stop and restart.

    Never touches the shared server. Use as a context manager: the cluster is stopped (immediate mode) and
    its directory removed on exit, even when the test fails.
    """

    def __init__(self, port: int | None = None) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL binaries not found")
        self.bin = bin_dir
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ithelp-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.dir, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
                               f"\n{self.log()[-2000:]}")
        return result

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except (FileNotFoundError, PermissionError):
            return ""

    def init(self) -> None:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=60 -c shared_buffers=16MB")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "30",
                  "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "-m", mode, "stop")

    @property
    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        """Stop the cluster (immediate) if it runs and delete its directory."""
        try:
            if self.is_running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.init()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = [
    "PrivatePostgres",
    "ServeProcess",
    "free_port",
    "merge",
    "private_postgres_unavailable",
    "start_servers",
    "stop_servers",
    "write_config",
]
