"""`make run`'s stack, for real: embedded PostgreSQL and Redis, migrations, demo, worker, web server."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest
from celery import Celery

from config.settings.base import redis_url_for_celery

BASE_DIR = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningStack:
    def __init__(self, var_dir: Path, log: Path) -> None:
        self.var_dir = var_dir
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # The test process points DATABASE_URL at its own throw-away cluster: the stack must not see it.
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        env.update(HEMALOOP_VAR_DIR=str(var_dir), HEMALOOP_PORT=str(self.port))
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "config.launcher"],
            cwd=BASE_DIR,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"launcher exited early:\n{self.log.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(self.base + "/accounts/login/", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError(f"no HTTP 200 within {timeout}s:\n{self.log.read_text()[-4000:]}")

    def all_pids(self) -> set[int]:
        pids = {self.process.pid} | {p.pid for p in psutil.Process(self.process.pid).children(recursive=True)}
        postmaster = self.var_dir / "pg" / "postmaster.pid"
        pids.add(int(postmaster.read_text().split()[0]))
        return pids

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(timeout=120) == 0, self.log.read_text()[-4000:]


def _login(base: str, username: str, password: str) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = opener.open(base + "/accounts/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
    response = opener.open(base + "/accounts/login/", data=data.encode())
    assert response.url.rstrip("/") == base, "login did not redirect to the home page"
    return opener


def _active_model(base: str, opener) -> dict:
    versions = json.loads(opener.open(base + "/api/training/models/").read())
    active = [version for version in versions if version["status"] == "active"]
    assert len(active) == 1, versions
    return active[0]


def _assert_opinion_shown(base: str, admin, adjudicator, head: dict) -> None:
    """The model's top-3 on an unlabeled cell's image page and its Grad-CAM, as an adjudicator sees them."""
    cells = json.loads(admin.open(base + "/api/annotation/images/?status=unlabeled").read())["results"]
    cell = cells[0]["id"]
    page = adjudicator.open(f"{base}/annotation/images/{cell}/").read().decode()
    assert "Model opinion" in page
    assert page.count('opinion-class">') == 3
    opinion = json.loads(adjudicator.open(f"{base}/api/inference/images/{cell}/opinion/").read())
    assert opinion["state"] == "ready"
    assert opinion["model_version"]["id"] == head["id"]
    with adjudicator.open(base + opinion["heatmap_url"]) as heatmap:
        assert heatmap.read().startswith(b"\x89PNG")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def run_dir():
    """A folder outside pytest's basetemp: PostgreSQL runs as its own system user and needs to traverse the
    path, and another pytest process on the machine resets /tmp/pytest-of-<user> to mode 0700 at any time."""
    path = Path(tempfile.mkdtemp(prefix="hl-run-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_run_serves_demo_answers_worker_ping_stops_cleanly_and_restarts(run_dir):
    tmp_path = run_dir
    var_dir = tmp_path / "var"
    stack = RunningStack(var_dir, tmp_path / "run.log")
    try:
        stack.wait_ready()
        credentials = json.loads((var_dir / "demo-users.json").read_text())
        assert set(credentials) == {"admin", "annotator1", "annotator2", "adjudicator", "researcher"}
        assert (var_dir / "demo-users.json").stat().st_mode & 0o077 == 0, "passwords file readable by others"
        assert credentials["admin"] in stack.log.read_text(), "admin password not printed on the console"

        admin = _login(stack.base, "admin", credentials["admin"])
        images = json.loads(admin.open(stack.base + "/api/annotation/images/").read())
        assert images["count"] >= 100, "demo images missing"
        page = admin.open(stack.base + "/annotation/images/").read().decode()
        assert "/thumb" in page
        # The demo starts with a model: a head trained on the trusted third, from weights never downloaded.
        head = _active_model(stack.base, admin)
        assert head["kind"] == "head"
        assert head["macro_f1"] is not None
        adjudicator = _login(stack.base, "adjudicator", credentials["adjudicator"])
        _assert_opinion_shown(stack.base, admin, adjudicator, head)

        services = json.loads((var_dir / "services.json").read_text())
        broker = redis_url_for_celery(services["redis_url"])
        app = Celery(broker=broker, backend=broker)
        assert app.send_task("config.ping", queue="default").get(timeout=120) == "pong"

        pids = stack.all_pids()
        assert len(pids) >= 4  # launcher, postgres, redis, worker, web
    finally:
        if stack.process.poll() is None:
            stack.stop()
    assert all(_gone(pid) for pid in pids), f"left behind: {[p for p in pids if not _gone(p)]}"

    # A second start reuses the database, the demo and the passwords.
    again = RunningStack(var_dir, tmp_path / "run2.log")
    try:
        again.wait_ready()
        assert json.loads((var_dir / "demo-users.json").read_text()) == credentials
        admin = _login(again.base, "admin", credentials["admin"])
        second = json.loads(admin.open(again.base + "/api/annotation/images/").read())
        assert second["count"] == images["count"], "demo loaded twice"
        # The head is reused, not trained again.
        assert _active_model(again.base, admin)["id"] == head["id"]
        assert len(json.loads(admin.open(again.base + "/api/training/models/").read())) == 1
        assert "demo model already trained" in again.log.read_text()
    finally:
        if again.process.poll() is None:
            again.stop()
