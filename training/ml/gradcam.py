"""Grad-CAM for the ensemble: each member's class activation map on its last conv block (captum's LayerGradCam),
combined with the vote weights and drawn over the image as a PNG.

Members see the image at the training size; the maps are normalised per member before the weighted sum, because
two architectures' raw gradient scales are not comparable, then resized to the original image for the overlay.
"""

from __future__ import annotations

import io
import logging

import matplotlib
import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from PIL import Image
from torch import nn

from training.ml.ensemble import Ensemble
from training.ml.models import CellClassifier
from training.ml.transforms import CellTransform, crop_box

_logger = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.45
DEFAULT_COLORMAP = "turbo"


def target_layer(model: CellClassifier) -> nn.Module:
    """The module whose output Grad-CAM explains: the last conv block before global pooling.

    timm's EfficientNets end in conv_head -> bn2 (norm + activation); other timm networks name their last
    feature stage in `feature_info`.

    Args:
        model: an ensemble member.
    """
    net = model.net
    if hasattr(net, "conv_head") and hasattr(net, "bn2"):
        return net.bn2
    feature_info = getattr(net, "feature_info", None)
    if feature_info:
        return net.get_submodule(feature_info[-1]["module"])
    raise ValueError(f"no Grad-CAM target layer known for {model.name}")


def member_cam(model: CellClassifier, batch: torch.Tensor, class_index: int) -> torch.Tensor:
    """One member's Grad-CAM for `class_index`, (N, H, W) at the input size, each map scaled to [0, 1].

    Args:
        model: an ensemble member in eval mode.
        batch: float images in [0, 1], (N, 3, H, W), on the model's device.
        class_index: the output whose evidence is shown.
    """
    cam = LayerGradCam(model, target_layer(model)).attribute(batch, target=class_index, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam.detach().float(), tuple(batch.shape[-2:]), interpolate_mode="bilinear")
    cam = cam[:, 0].clamp_(min=0)
    peak = cam.flatten(1).amax(dim=1).view(-1, 1, 1)
    # An all-zero map (no positive evidence) stays zero instead of dividing by zero.
    return torch.where(peak > 0, cam / peak.clamp(min=1e-12), torch.zeros_like(cam))


def ensemble_cam(ensemble: Ensemble, image: Image.Image, class_index: int) -> np.ndarray:
    """The vote-weighted Grad-CAM of `ensemble` for `class_index` on `image`, (height, width) of the image, in [0, 1].

    Args:
        ensemble: the loaded ensemble.
        image: the cell image at its own size.
        class_index: index into `ensemble.classes`.
    """
    if not 0 <= class_index < len(ensemble.classes):
        raise ValueError(f"class index {class_index} outside 0..{len(ensemble.classes) - 1}")
    transform = CellTransform(
        ensemble.image_size, train=False, rotation_degrees=0, hflip=False, vflip=False, crop=ensemble.center_crop
    )
    batch = transform(image).unsqueeze(0).to(ensemble.device).float().div_(255.0)
    weights = np.asarray(ensemble.weights, dtype=np.float64)
    weights = weights / weights.sum()
    combined = torch.zeros(batch.shape[-2:], device=ensemble.device)
    # Full precision and gradients on, whatever the ensemble uses for plain inference.
    with torch.enable_grad():
        for weight, model in zip(weights, ensemble.models, strict=True):
            combined += float(weight) * member_cam(model, batch, class_index)[0]
    peak = float(combined.max())
    cam = (combined / peak if peak > 0 else combined).cpu().numpy()
    # The members saw the centre crop only: the map covers that box of the image and nothing outside it.
    top, left, bottom, right = crop_box(image.height, image.width, ensemble.center_crop)
    resized = Image.fromarray(cam.astype(np.float32)).resize((right - left, bottom - top), Image.Resampling.BILINEAR)
    full = np.zeros((image.height, image.width), dtype=np.float32)
    full[top:bottom, left:right] = np.asarray(resized, dtype=np.float32)
    return np.clip(full, 0.0, 1.0)


def overlay_png(
    image: Image.Image, cam: np.ndarray, *, alpha: float = DEFAULT_ALPHA, colormap: str = DEFAULT_COLORMAP
) -> bytes:
    """`cam` coloured with `colormap` and blended over `image`; PNG bytes of the image's size.

    Args:
        image: the cell image.
        cam: (height, width) map in [0, 1], the image's size.
        alpha: heatmap opacity, 0..1.
        colormap: a matplotlib colormap name.
    """
    if cam.shape != (image.height, image.width):
        raise ValueError(f"map of shape {cam.shape} for an image of {image.width}x{image.height}")
    colours = matplotlib.colormaps[colormap](np.clip(cam, 0.0, 1.0))[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    blended = (1.0 - alpha) * base + alpha * colours
    out = io.BytesIO()
    Image.fromarray(np.round(blended * 255.0).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def gradcam_png(
    ensemble: Ensemble,
    image: Image.Image,
    class_index: int,
    *,
    alpha: float = DEFAULT_ALPHA,
    colormap: str = DEFAULT_COLORMAP,
) -> bytes:
    """The ensemble's Grad-CAM for `class_index`, overlaid on `image`, as PNG bytes of the image's size.

    Args:
        ensemble: the loaded ensemble.
        image: the cell image at its own size.
        class_index: index into `ensemble.classes` (usually the predicted class).
        alpha: heatmap opacity, 0..1.
        colormap: a matplotlib colormap name.
    """
    return overlay_png(image, ensemble_cam(ensemble, image, class_index), alpha=alpha, colormap=colormap)
