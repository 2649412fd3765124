"""Where each member's starting weights will come from, decided before a run starts.

A run whose weights cannot be had must say so before it is queued, not after hours of training from random
weights. The hub probe is a short HTTP request (or no request at all under `HF_HUB_OFFLINE`), so pages can ask.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
from huggingface_hub import try_to_load_from_cache

from training.ml.config import TrainConfig
from training.ml.models import BUNDLED_WEIGHTS, WeightsError, local_weight_candidates

DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
HUB_PROBE_TIMEOUT_SECONDS = 2.0
# A page asks on every render; offline sites must not wait for a timeout each time.
HUB_PROBE_TTL_SECONDS = 300.0
_TRUE = {"1", "true", "yes", "on"}
_probe_cache: dict[str, tuple[float, bool]] = {}

# Where a member's weights come from: the first four are ImageNet weights, the last two are not.
PRETRAINED_KINDS = ("bundled", "local", "timm-cache", "timm-hub")
RANDOM = "random"
UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class MemberWeights:
    """The weights one member will start from: `source` is one of `PRETRAINED_KINDS`, "random" or
    "unavailable" (the configured source cannot provide them: the run would fail), `detail` says why."""

    model: str
    source: str
    detail: str

    @property
    def pretrained(self) -> bool:
        return self.source in PRETRAINED_KINDS

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pretrained": self.pretrained}


def hub_endpoint() -> str:
    """The Hugging Face hub the timm weights come from (`HF_ENDPOINT`, as huggingface_hub reads it)."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_HUB_ENDPOINT).rstrip("/")


def hub_offline_by_env() -> bool:
    """Whether `HF_HUB_OFFLINE` forbids the hub (read at call time, not at import as huggingface_hub does)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_reachable(*, timeout: float = HUB_PROBE_TIMEOUT_SECONDS, max_age: float = HUB_PROBE_TTL_SECONDS) -> bool:
    """Whether the hub answers an HTTP request within `timeout` seconds; any HTTP status counts as an answer.

    False at once under `HF_HUB_OFFLINE`. The answer is kept for `max_age` seconds per endpoint.
    """
    if hub_offline_by_env():
        return False
    endpoint = hub_endpoint()
    cached = _probe_cache.get(endpoint)
    if cached is not None and time.monotonic() - cached[0] < max_age:
        return cached[1]
    if not endpoint.startswith(("http://", "https://")):
        return False
    try:
        request = urllib.request.Request(endpoint + "/", method="HEAD")  # noqa: S310 - http(s) checked above
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310
            reachable = True
    except urllib.error.HTTPError:
        reachable = True  # it answered
    except (OSError, ValueError):  # refused, unresolvable, timed out, or not a URL
        reachable = False
    _probe_cache[endpoint] = (time.monotonic(), reachable)
    return reachable


def clear_hub_probe_cache() -> None:
    _probe_cache.clear()


def _hub_cached_file(name: str) -> Path | None:
    cfg = timm.models.get_pretrained_cfg(name)
    repo = cfg.hf_hub_id if cfg is not None else None
    if not repo:
        return None
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found)
    return None


def member_weights(
    name: str, *, pretrained: str, weights_dir: str | Path | None, reachable: Callable[[], bool]
) -> MemberWeights:
    """Where model `name` will get its weights from under `pretrained` (see `TrainConfig.pretrained`).

    Args:
        name: timm model name.
        pretrained: "none", "timm", "local" or "bundled".
        weights_dir: the folder for "local".
        reachable: asked (at most once) whether the timm hub can be reached, only when nothing is cached.
    """
    if pretrained == "none":
        return MemberWeights(name, RANDOM, "random initialisation (the profile asks for no pretrained weights)")
    if pretrained == "bundled":
        source = BUNDLED_WEIGHTS.get(name)
        if source is None:
            return MemberWeights(name, UNAVAILABLE, f"no bundled weights for {name}")
        try:
            path = source.path()
        except WeightsError as exc:
            return MemberWeights(name, UNAVAILABLE, str(exc))
        return MemberWeights(name, "bundled", f"bundled ImageNet weights ({source.distribution}, {path.name})")
    if pretrained == "local":
        if not weights_dir:
            return MemberWeights(name, UNAVAILABLE, "pretrained='local' without a weights folder")
        found = next((p for p in local_weight_candidates(name, weights_dir) if p.is_file()), None)
        if found is None:
            return MemberWeights(name, UNAVAILABLE, f"no local weights file for {name} in {weights_dir}")
        return MemberWeights(name, "local", f"local file {found}")
    if pretrained == "timm":
        cached = _hub_cached_file(name)
        if cached is not None:
            return MemberWeights(name, "timm-cache", f"timm hub weights, already cached ({cached})")
        if reachable():
            return MemberWeights(name, "timm-hub", f"timm hub weights, downloaded from {hub_endpoint()} at the start")
        return MemberWeights(
            name,
            RANDOM,
            f"random initialisation: the timm hub ({hub_endpoint()}) cannot be reached and {name} is not cached",
        )
    raise ValueError(f"unknown weights source {pretrained!r}")


def plan_weights(config: TrainConfig, *, reachable: Callable[[], bool] = hub_reachable) -> list[MemberWeights]:
    """`member_weights` for every model of `config`, probing the hub at most once."""
    answer: list[bool] = []

    def reachable_once() -> bool:
        if not answer:
            answer.append(reachable())
        return answer[0]

    return [
        member_weights(name, pretrained=config.pretrained, weights_dir=config.weights_dir, reachable=reachable_once)
        for name in config.models
    ]
