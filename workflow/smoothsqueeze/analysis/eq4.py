"""Analysis stage: the quantities of the paper's Eq. 4 and per-neuron activation sums, per model.

For every analysed test image (true class y) and every wrong class j != y:

    logit gap      z_y - z_j                          (negative when j outscores y)
    gradient gap   || grad_x z_y - grad_x z_j ||_1
    eps_L          logit gap / gradient gap           (Eq. 4)
    cos            cos(grad_x z_y, grad_x z_j)

stored as (N, C-1) arrays `*_all` (wrong classes in increasing class order, named in
`wrong_classes`), plus the same quantities for the top wrong class ybar = the largest wrong
logit alone as (N,) arrays (`logit_gap`, `grad_gap`, `eps_l`, `cos`, `ybar`) and
grad_norm_y = || grad_x z_y ||_1.

Gradients are taken with respect to the image in the study's pixel units (x / pixel_units for
CIFAR-10's 1/255 units), so eps_L is in the same units as the study's `attack.eps`.
Per-example gradients come from one backward pass of the batch sum per class (C passes): the
models are in eval mode, so examples do not interact (batch norm uses its running statistics).

Output: an .npz with one row per image, and a JSON summary (what the tables read):
predicted_robust_accuracy = % of images correctly classified with eps < min over the wrong
classes j of eps_L(j) (the linearized distance to the nearest decision boundary);
predicted_robust_accuracy_top = the same with the top wrong class ybar only (never smaller:
the minimum runs over a set that holds ybar).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..artifacts import write_json, write_npz
from ..errors import PipelineError
from ..prologue import open_stage
from ..provenance import provenance

#: Eq. 4 over every wrong class: (N, C-1) arrays, wrong classes in increasing order (`wrong_classes`).
PER_WRONG_CLASS = ("wrong_classes", "logit_gap_all", "grad_gap_all", "eps_l_all", "cos_all")
#: Per-image arrays of the .npz (besides `feature_abs_sum`, `logit_abs_sum`, `eps`, `pixel_units`).
PER_IMAGE = ("labels", "predictions", "ybar", "logits", "z_y", "logit_gap", "grad_gap", "eps_l", "cos", "grad_norm_y", *PER_WRONG_CLASS)
#: Quantities whose median the JSON summary holds (top wrong class; `median_all` pools every wrong class).
MEDIANS = ("logit_gap", "grad_gap", "eps_l", "cos", "grad_norm_y", "z_y")
MEDIANS_ALL = {"logit_gap": "logit_gap_all", "grad_gap": "grad_gap_all", "eps_l": "eps_l_all", "cos": "cos_all"}
from .settings import DEFAULT_BATCH_SIZE, VERSION  # noqa: E402,F401 - torch-free, read by the rules


def forward_parts(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate activations and logits in one pass (every model is `head(features(x))`)."""
    feats = model.features(x)
    return feats, model.head(feats)


def wrong_class_index(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, C-1): per row the classes other than y, in increasing order."""
    ranks = torch.arange(num_classes - 1, device=y.device).expand(len(y), -1)
    return ranks + (ranks >= y[:, None]).long()


def eq4_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pixel_units: float = 1.0) -> dict[str, torch.Tensor]:
    """Eq. 4 quantities and activations of one batch; `x` in [0, 1], gradients per `pixel_units`."""
    x = x.detach().clone().requires_grad_(True)
    feats, logits = forward_parts(model, x)
    n, num_classes = logits.shape
    if num_classes < 2:
        raise PipelineError(f"analysis: Eq. 4 needs at least 2 classes, the model has {num_classes}")
    # grads[:, c] = grad_x z_c of each image: one backward of the batch sum per class.
    grads = torch.stack(
        [torch.autograd.grad(logits[:, c].sum(), x, retain_graph=c < num_classes - 1)[0].flatten(1) for c in range(num_classes)],
        dim=1,
    )
    grads = grads / pixel_units  # d z / d(x * units) = (d z / d x) / units
    logits = logits.detach()
    rows = torch.arange(n, device=logits.device)
    z_y = logits[rows, y]
    g_y = grads[rows, y]
    # Every wrong class, in increasing class order.
    wrong = wrong_class_index(y, num_classes)
    g_wrong = grads.gather(1, wrong[:, :, None].expand(-1, -1, grads.shape[2]))
    gap_all = z_y[:, None] - logits.gather(1, wrong)
    grad_gap_all = (g_y[:, None, :] - g_wrong).abs().sum(dim=2)
    cos_all = F.cosine_similarity(g_y[:, None, :], g_wrong, dim=2, eps=1e-30)
    # The top wrong class ybar (the largest wrong logit).
    masked = logits.clone()
    masked.scatter_(1, y[:, None], float("-inf"))
    ybar = masked.argmax(dim=1)
    g_ybar = grads[rows, ybar]
    logit_gap = z_y - logits[rows, ybar]
    grad_gap = (g_y - g_ybar).abs().sum(dim=1)
    return {
        "labels": y,
        "predictions": logits.argmax(dim=1),
        "ybar": ybar,
        "logits": logits,
        "z_y": z_y,
        "logit_gap": logit_gap,
        "grad_gap": grad_gap,
        "eps_l": logit_gap / grad_gap,
        "cos": F.cosine_similarity(g_y, g_ybar, dim=1, eps=1e-30),
        "grad_norm_y": g_y.abs().sum(dim=1),
        "wrong_classes": wrong,
        "logit_gap_all": gap_all,
        "grad_gap_all": grad_gap_all,
        "eps_l_all": gap_all / grad_gap_all,
        "cos_all": cos_all,
        "feature_abs_sum": feats.detach().abs().sum(dim=0, dtype=torch.float64),
        "logit_abs_sum": logits.abs().sum(dim=0, dtype=torch.float64),
    }


def analyze_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pixel_units: float = 1.0, batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, np.ndarray]:
    """Eq. 4 quantities of every image in `x` (float in [0, 1], on the model's device) in batches."""
    if len(x) == 0:
        raise PipelineError("analysis: no test images to analyse")
    per_image: dict[str, list[torch.Tensor]] = {key: [] for key in PER_IMAGE}
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, len(x), batch_size):
        out = eq4_batch(model, x[start : start + batch_size], y[start : start + batch_size], pixel_units)
        for key in PER_IMAGE:
            per_image[key].append(out[key].cpu())
        for key in ("feature_abs_sum", "logit_abs_sum"):
            sums[key] = out[key] if key not in sums else sums[key] + out[key]
    arrays = {key: torch.cat(parts).numpy() for key, parts in per_image.items()}
    arrays.update({key: value.cpu().numpy() for key, value in sums.items()})
    return arrays


def nearest_eps_l(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Per image the min over the wrong classes of eps_L: the linearized distance to the nearest boundary (NaN stays NaN)."""
    if "eps_l_all" not in arrays:
        raise PipelineError("analysis arrays lack 'eps_l_all' (Eq. 4 over every wrong class); rerun the analysis")
    return np.min(arrays["eps_l_all"], axis=1)


def predicted_robust(arrays: dict[str, np.ndarray], eps: float) -> np.ndarray:
    """Eq. 4's prediction per image: correctly classified and eps < min_j eps_L(j) over the wrong classes j (study units)."""
    return (arrays["predictions"] == arrays["labels"]) & (nearest_eps_l(arrays) > eps)


def predicted_robust_top(arrays: dict[str, np.ndarray], eps: float) -> np.ndarray:
    """The same with the top wrong class ybar only: correctly classified and eps < eps_L(ybar)."""
    return (arrays["predictions"] == arrays["labels"]) & (arrays["eps_l"] > eps)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def summarize(arrays: dict[str, np.ndarray], eps: float) -> dict[str, Any]:
    """What the tables need: Eq. 4's predicted-robust accuracy at `eps`, clean accuracy, medians."""
    n = len(arrays["labels"])
    robust = predicted_robust(arrays, eps)
    robust_top = predicted_robust_top(arrays, eps)
    return {
        "n_test": n,
        "num_classes": int(arrays["eps_l_all"].shape[1]) + 1,
        "clean_accuracy": 100.0 * float(np.mean(arrays["predictions"] == arrays["labels"])),
        "predicted_robust_accuracy": 100.0 * float(np.mean(robust)),
        "predicted_robust_count": int(robust.sum()),
        "predicted_robust_accuracy_top": 100.0 * float(np.mean(robust_top)),
        "predicted_robust_count_top": int(robust_top.sum()),
        "predicted_robust_rule": "correctly classified and eps < min over every wrong class j of eps_L(j); *_top: eps < eps_L(ybar) only",
        "median": {key: _finite_or_none(np.median(arrays[key])) for key in MEDIANS},
        "median_all": {key: _finite_or_none(np.median(arrays[source])) for key, source in MEDIANS_ALL.items()},
        "n_features": int(len(arrays["feature_abs_sum"])),
        "inactive_features": int(np.sum(arrays["feature_abs_sum"] == 0)),
    }


def run(
    spec: Mapping[str, Any], checkpoint: str | Path, data_path: str | Path, out_npz: str | Path, out_json: str | Path,
    device: str | None = None,
) -> dict[str, Any]:
    """Analyse one model on the first `max_examples` test images (all when None); write .npz + JSON.

    `spec`: eps (study units), pixel_units, batch_size, max_examples, architecture, info (copied
    into the summary).
    """
    started = time.perf_counter()
    eps, pixel_units = float(spec["eps"]), float(spec.get("pixel_units", 1))
    batch_size, max_examples = int(spec.get("batch_size") or DEFAULT_BATCH_SIZE), spec.get("max_examples")
    stage = open_stage(checkpoint, data_path, max_examples, spec.get("architecture"), device, frozen=True, channels_last=bool(spec.get("channels_last")))
    x, y = stage.test_images()
    n = stage.n
    arrays = analyze_model(stage.model, x, y, pixel_units, batch_size)
    write_npz(out_npz, **arrays, eps=np.float64(eps), pixel_units=np.float64(pixel_units))
    summary = {
        **(spec.get("info") or {}),
        "eps": eps,
        "pixel_units": pixel_units,
        **summarize(arrays, eps),
        "units": "eps, eps_l and gradients per pixel in the study's pixel_units",
        "settings": {"batch_size": batch_size, "max_examples": max_examples},
        "inputs": stage.inputs,
        "wall_seconds": time.perf_counter() - started,
        "provenance": provenance(stage.device, "analyze"),
    }
    write_json(out_json, summary)
    print(
        f"{n} images: clean {summary['clean_accuracy']:.2f}%, Eq. 4 predicted robust at eps {eps:g}: "
        f"{summary['predicted_robust_accuracy']:.2f}% (nearest wrong class), {summary['predicted_robust_accuracy_top']:.2f}% "
        f"(top wrong class), median eps_L {summary['median']['eps_l']}",
        flush=True,
    )
    return summary
