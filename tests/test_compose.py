"""docker/compose.yml as Docker Compose reads it (`docker compose config`, or Debian's docker-compose): every
service, no volume shared by web and workers, the queues per worker, and the topology test's variables."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.production_env import APP_VARIABLES

BASE_DIR = Path(__file__).resolve().parent.parent
COMPOSE_FILE = BASE_DIR / "docker" / "compose.yml"
SECRETS = {"SECRET_KEY": "k" * 50, "POSTGRES_PASSWORD": "pg-secret", "MINIO_ROOT_PASSWORD": "minio-secret"}
APP_SERVICES = ("web", "worker", "beat", "gpu-worker")


def _compose_command() -> list[str] | None:
    """`docker compose` (the plugin) when it answers, else `docker-compose` (Debian's package), else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


COMPOSE = _compose_command()
pytestmark = pytest.mark.skipif(
    COMPOSE is None,
    reason="neither `docker compose` nor `docker-compose` is installed (make test installs Debian's docker-compose "
    "when run as root: scripts/ensure-docker-compose.sh)",
)


def _config(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith(("AWS_", "HEMALOOP_"))}
    return subprocess.run(
        [*COMPOSE, "-f", str(COMPOSE_FILE), "config"],
        env={**clean, **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config() -> dict:
    result = _config(SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_the_compose_file_has_every_service(config):
    assert set(config["services"]) == {"postgres", "redis", "minio", "bucket", *APP_SERVICES}


def test_web_and_workers_share_no_volume_and_see_the_topology_tests_variables(config):
    for name in APP_SERVICES:
        service = config["services"][name]
        assert not service.get("volumes"), f"{name} mounts a volume: files must go through the bucket"
        missing = APP_VARIABLES - set(service["environment"])
        assert missing == set(), f"{name} lacks {sorted(missing)}"
        assert service["environment"]["AWS_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert service["environment"]["DATABASE_URL"] == "postgres://hemaloop:pg-secret@postgres:5432/hemaloop"
        assert set(service["depends_on"]) == {"postgres", "redis", "bucket"}


def test_the_workers_serve_the_queues_the_readme_names(config):
    services = config["services"]
    assert services["worker"]["command"] == ["worker", "default"]
    assert services["gpu-worker"]["command"] == ["worker", "training,inference"]
    assert services["gpu-worker"]["environment"]["WORKER_POOL"] == "solo"
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert services["beat"]["command"] == ["beat"]
    assert "ports" not in services["worker"], "a worker scaled with --scale worker=N must not claim a host port"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_a_missing_secret_stops_compose_with_a_message(missing):
    result = _config({k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0
    assert f"set {missing} in docker/.env" in result.stderr
