"""A light classifier head on embedding-index vectors: multinomial logistic regression (torch, full-batch LBFGS),
case-grouped cross-validation, a temperature fitted on the out-of-fold logits, and rescoring a whole index.

The head is a plain linear layer on the backbone's pooled features (standardisation folded into its weights), so
`head_classifier` puts it behind the backbone as a timm classifier: the model's opinion and Grad-CAM of a head
version then run through the same code as a fully trained ensemble.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from safetensors.torch import load, save
from torch import nn

from training.ml.calibration import apply_temperature
from training.ml.metrics import macro_f1
from training.ml.models import CellClassifier
from training.ml.uncertainty import STRATEGIES, random_order

_logger = logging.getLogger(__name__)

_METADATA_KEY = "hemaloop_head"
RESCORE_CHUNK = 65_536  # rows converted from float16 at a time: 1M x 1280 in float32 would need 5 GB


@dataclass(frozen=True)
class HeadConfig:
    """How a head is fitted.

    The defaults were chosen by the active-learning benchmark (bench/README.md): a more strongly regularised head
    fitted to convergence ranks cells for labeling better than a weakly regularised one stopped early (labels to
    98 % of the whole-pool macro-F1: 0.49x random's instead of 0.55x) and is the better model at every budget from
    540 labels; l2 0.3 or 1 improve that ratio further only by lowering the whole-pool model itself. Small label
    sets get many iterations; large ones, where every iteration costs a pass over many rows and the refresh has a
    time goal, get fewer (`iteration_rows`), never fewer than `min_iter` / `min_cv_iter`.

    Args:
        l2: weight decay on the (standardised) weights, per labeled image.
        max_iter: LBFGS iterations of the final fit on all rows, warm-started from the mean of the fold heads
            (so it only polishes: most of a refresh is the folds' fits).
        cv_max_iter: LBFGS iterations of each fold's fit.
        folds: case-grouped folds for the cross-validated macro-F1 and the temperature (at most one per case).
        seed: assigns cases to folds.
        iteration_rows: labeled rows times fold iterations a fit may spend; more rows, fewer iterations.
        min_iter: the final fit's floor.
        min_cv_iter: each fold fit's floor.
    """

    l2: float = 0.1
    max_iter: int = 30
    cv_max_iter: int = 60
    folds: int = 3
    seed: int = 0
    iteration_rows: int = 250_000
    min_iter: int = 8
    min_cv_iter: int = 15

    def iterations(self, rows: int) -> tuple[int, int]:
        """(fold iterations, final iterations) for a fit on `rows` labeled rows."""
        share = min(1.0, self.iteration_rows / max(rows, 1) / self.cv_max_iter)
        return (
            max(min(self.min_cv_iter, self.cv_max_iter), round(self.cv_max_iter * share)),
            max(min(self.min_iter, self.max_iter), round(self.max_iter * share)),
        )


@dataclass
class LinearHead:
    """logits = features @ weight.T + bias, on the raw (float16-stored) pooled features."""

    weight: np.ndarray  # (C, D) float32
    bias: np.ndarray  # (C,) float32

    def logits(self, features: np.ndarray, *, chunk: int = RESCORE_CHUNK) -> np.ndarray:
        """(N, C) float32 logits of (N, D) features of any float dtype, converted `chunk` rows at a time."""
        out = torch.empty((len(features), len(self.bias)), dtype=torch.float32)
        weight_t = torch.from_numpy(np.ascontiguousarray(self.weight.T, dtype=np.float32))
        bias = torch.from_numpy(np.asarray(self.bias, dtype=np.float32))
        for start in range(0, len(features), chunk):
            # torch converts float16 with the CPU's F16C instructions, several times faster than numpy's astype.
            block = torch.from_numpy(np.ascontiguousarray(features[start : start + chunk])).float()
            torch.addmm(bias, block, weight_t, out=out[start : start + chunk])
        return out.numpy()


@dataclass
class HeadResult:
    """A fitted head with its temperature and case-grouped cross-validated metrics."""

    head: LinearHead
    temperature: float
    metrics: dict = field(default_factory=dict)


def fit_temperature_1d(logits: np.ndarray, labels: np.ndarray, *, iterations: int = 40) -> float:
    """The temperature minimising the held-out NLL of softmax(logits / T), by golden-section search over 1/T.

    The NLL is convex in 1/T (a log-sum-exp of linear functions minus a linear one), so a bracketed 1-D search finds
    the same optimum as training.ml.calibration.fit_temperature's LBFGS, in about 40 numpy evaluations instead of
    hundreds of float64 autograd ones (seconds per refresh on a busy 2-core machine). Kept within [0.05, 20].
    """
    if len(labels) == 0:
        return 1.0
    z = np.asarray(logits, dtype=np.float32)
    z = z - z.max(axis=1, keepdims=True)
    true = z[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]

    def nll(beta: float) -> float:
        scaled = beta * z
        peak = scaled.max(axis=1)
        return float(np.mean(np.log(np.exp(scaled - peak[:, None]).sum(axis=1)) + peak - beta * true))

    lo, hi = 1 / 20.0, 1 / 0.05
    ratio = (5**0.5 - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(np.clip(2.0 / (lo + hi), 0.05, 20.0))


def grouped_folds(groups: np.ndarray, *, folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0..k-1) of each row, whole groups (cases) to one fold, the groups shuffled and dealt so the folds
    hold about equal numbers of rows; k is at most the number of groups."""
    groups = np.asarray(groups)
    unique, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    k = max(1, min(folds, len(unique)))
    order = np.random.default_rng(seed).permutation(len(unique))
    # Largest groups first (after the shuffle breaks ties), each to the lightest fold: balanced folds.
    order = order[np.argsort(-counts[order], kind="stable")]
    load = np.zeros(k, dtype=np.int64)
    group_fold = np.empty(len(unique), dtype=np.int64)
    for group in order:
        target = int(np.argmin(load))
        group_fold[group] = target
        load[target] += counts[group]
    return group_fold[inverse]


def _fit_standardised(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    l2: float,
    max_iter: int,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of multinomial logistic regression on already standardised features, full-batch LBFGS."""
    if init is None:
        weight = torch.zeros((num_classes, x.shape[1]))
        counts = torch.bincount(y, minlength=num_classes).float()
        # Starting from the class log-priors makes the first steps count; an absent class starts (and stays) unlikely.
        bias = torch.log((counts + 1e-3) / (counts.sum() + 1e-3 * num_classes))
    else:
        weight, bias = (t.clone() for t in init)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(torch.addmm(bias, x, weight.T), y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def _raw_head(weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> LinearHead:
    # (x - mean) / scale @ W.T + b == x @ (W / scale).T + (b - (W / scale) @ mean)
    raw_weight = weight / scale
    raw_bias = bias - raw_weight @ mean
    return LinearHead(weight=raw_weight.numpy().astype(np.float32), bias=raw_bias.numpy().astype(np.float32))


def _standardised(features: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # torch converts float16 with the CPU's F16C instructions, several times faster than numpy's astype.
    x = torch.as_tensor(np.asarray(features)).float()
    mean = x.mean(dim=0)
    scale = x.std(dim=0).clamp_(min=1e-6)
    return x.sub_(mean).div_(scale), mean, scale


def fit_head(
    features: np.ndarray, labels: np.ndarray, *, num_classes: int, config: HeadConfig | None = None
) -> LinearHead:
    """Multinomial logistic regression on standardised features, full-batch LBFGS; the standardisation is folded
    into the returned weights, so the head applies to raw features.

    Args:
        features: (N, D) pooled features (float16 or float32).
        labels: (N,) class indices.
        num_classes: outputs of the head (classes absent from `labels` get a large negative bias).
        config: l2 and iterations.
    """
    config = config or HeadConfig()
    x, mean, scale = _standardised(features)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    _, final_iter = config.iterations(len(y))
    weight, bias = _fit_standardised(x, y, num_classes=num_classes, l2=config.l2, max_iter=final_iter)
    return _raw_head(weight, bias, mean, scale)


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    num_classes: int,
    config: HeadConfig | None = None,
) -> HeadResult:
    """The head on all labeled rows, with its temperature fitted on case-grouped out-of-fold logits (each row scored
    by a head that never saw its case) and the cross-validated macro-F1 and accuracy of those logits.

    The fold heads take up to `cv_max_iter` iterations; the final head starts from their mean and takes up to
    `max_iter` (fewer for many rows: `HeadConfig.iterations`).
    Standardisation uses all labeled rows' feature means (no labels), so the folds share one copy of the matrix.

    Args:
        features: (N, D) index vectors of the labeled images.
        labels: (N,) class indices.
        groups: (N,) case of each row (rows without a case each their own group).
        num_classes: outputs of the head.
        config: l2, iterations, folds.
    """
    config = config or HeadConfig()
    started = time.perf_counter()
    x, mean, scale = _standardised(features)
    labels = np.asarray(labels, dtype=np.int64)
    y = torch.as_tensor(labels)
    fold = grouped_folds(groups, folds=config.folds, seed=config.seed)
    k = int(fold.max()) + 1 if len(fold) else 0
    cv_iter, final_iter = config.iterations(len(labels))
    fit = {"num_classes": num_classes, "l2": config.l2}
    init = None
    if k >= 2:
        out_of_fold = torch.zeros((len(labels), num_classes))
        weights, biases = [], []
        for held_out in range(k):
            test = torch.as_tensor(fold == held_out)
            weight, bias = _fit_standardised(x[~test], y[~test], max_iter=cv_iter, **fit)
            out_of_fold[test] = torch.addmm(bias, x[test], weight.T)
            weights.append(weight)
            biases.append(bias)
        init = (torch.stack(weights).mean(dim=0), torch.stack(biases).mean(dim=0))
        temperature = fit_temperature_1d(out_of_fold.numpy(), labels)
        predicted = out_of_fold.argmax(dim=1).numpy()
        metrics = {
            "cv_macro_f1": macro_f1(labels, predicted),
            "cv_accuracy": float((predicted == labels).mean()),
            "cv_folds": k,
        }
    else:
        # One case only: nothing to hold out without a patient in both halves.
        temperature, metrics = 1.0, {"cv_macro_f1": None, "cv_accuracy": None, "cv_folds": k}
    weight, bias = _fit_standardised(x, y, max_iter=final_iter, init=init, **fit)
    metrics.update(
        iterations={"fold": cv_iter if k >= 2 else 0, "final": final_iter},
        labeled=len(labels),
        cases=len(np.unique(groups)),
        temperature=temperature,
        fit_seconds=round(time.perf_counter() - started, 3),
        config=asdict(config),
    )
    return HeadResult(head=_raw_head(weight, bias, mean, scale), temperature=temperature, metrics=metrics)


def head_probabilities(head: LinearHead, temperature: float, features: np.ndarray) -> np.ndarray:
    """(N, C) calibrated probabilities of index vectors: softmax(logits / T)."""
    return apply_temperature(head.logits(features), temperature)


def rescore_stats(
    head: LinearHead, temperature: float, features: np.ndarray, *, chunk: int = RESCORE_CHUNK
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a whole index, without holding (N, C) float64 probabilities: top-1 index, confidence, margin and
    entropy (nats) of the calibrated head, as training.ml.uncertainty.prediction_stats computes them."""
    n = len(features)
    top = np.empty(n, dtype=np.int64)
    confidence, margin, entropy = (np.empty(n, dtype=np.float32) for _ in range(3))
    for start in range(0, n, chunk):
        z = head.logits(features[start : start + chunk]) / np.float32(temperature)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        part = slice(start, start + len(p))
        top[part] = p.argmax(axis=1)
        two = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:] if p.shape[1] > 1 else np.hstack([np.zeros_like(p), p])
        confidence[part] = two[:, 1]
        margin[part] = two[:, 1] - two[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy[part] = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return top, confidence, margin, entropy


def head_bytes(result: HeadResult, *, classes: list[str] | tuple[str, ...], backbone: dict) -> bytes:
    """The head as one safetensors file's bytes (weights, temperature, classes, metrics, the backbone it reads), for
    Django's storage API."""
    tensors = {"weight": torch.from_numpy(result.head.weight.copy()), "bias": torch.from_numpy(result.head.bias.copy())}
    metadata = {"classes": list(classes), "temperature": result.temperature, "backbone": backbone}
    return save(tensors, metadata={_METADATA_KEY: json.dumps(metadata | {"metrics": result.metrics})})


def head_from_bytes(data: bytes) -> tuple[LinearHead, dict]:
    """The head and its metadata (classes, temperature, backbone, metrics) from `head_bytes`' output."""
    header_len = int.from_bytes(data[:8], "little")
    raw = (json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}).get(_METADATA_KEY)
    if raw is None:
        raise ValueError("not a HemaLoop head file")
    tensors = load(data)
    head = LinearHead(weight=tensors["weight"].numpy(), bias=tensors["bias"].numpy())
    return head, json.loads(raw)


def head_classifier(backbone: CellClassifier, head: LinearHead) -> CellClassifier:
    """The backbone with the head as its timm classifier: a CellClassifier whose logits are the head's logits of
    the backbone's pooled features (what the index stores), so Grad-CAM and scoring run through backbone and head.

    Args:
        backbone: a pooled-feature classifier (num_classes 0) as the index was built with; it is modified.
        head: the fitted head.
    """
    net = backbone.net
    num_classes, dim = head.weight.shape
    net.reset_classifier(num_classes)
    classifier = net.get_classifier()
    if not isinstance(classifier, nn.Linear) or classifier.in_features != dim:
        raise ValueError(f"{backbone.name}: its classifier does not take {dim} pooled features")
    with torch.no_grad():
        classifier.weight.copy_(torch.from_numpy(np.asarray(head.weight, dtype=np.float32)))
        classifier.bias.copy_(torch.from_numpy(np.asarray(head.bias, dtype=np.float32)))
    return CellClassifier(net, name=backbone.name, mean=_as_tuple(backbone.mean), std=_as_tuple(backbone.std)).eval()


def _as_tuple(buffer: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(v) for v in buffer.flatten())


def uncertainty_rank(
    ids: np.ndarray,
    *,
    confidence: np.ndarray,
    margin: np.ndarray,
    entropy: np.ndarray,
    strategy: str,
    seed: int = 0,
) -> np.ndarray:
    """Row positions most uncertain first, ties by id: the order inference.services.selection reads from the
    database for stored predictions (training.ml.uncertainty.uncertainty_order for rows sorted by id)."""
    order_by_id = np.argsort(ids, kind="stable")
    if strategy == "random":
        return order_by_id[random_order(len(ids), seed=seed)]
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    key = {"margin": margin, "entropy": -entropy, "least_confidence": confidence}[strategy]
    return np.lexsort((ids, key))
