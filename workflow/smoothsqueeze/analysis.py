"""Analysis stage: the quantities of the paper's Eq. 4 and per-neuron activation sums, per model.

For every analysed test image (true class y, ybar = the largest wrong logit):

    logit gap      z_y - z_ybar                       (negative when misclassified)
    gradient gap   || grad_x z_y - grad_x z_ybar ||_1
    eps_L          logit gap / gradient gap           (Eq. 4: predicted robust when eps < eps_L)
    cos            cos(grad_x z_y, grad_x z_ybar)
    grad_norm_y    || grad_x z_y ||_1

Gradients are taken with respect to the image in the study's pixel units (x / pixel_units for
CIFAR-10's 1/255 units), so eps_L is in the same units as the study's `attack.eps`.
Per-example gradients come from one backward pass of the batch sum: the models are in eval
mode, so examples do not interact (batch norm uses its running statistics).

Output: an .npz with one row per image, and a JSON summary (what the tables read):
predicted_robust_accuracy = % of images correctly classified with eps < eps_L.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .artifacts import sha256_file, write_json, write_npz
from .checkpoints import load_model
from .data import load_dataset
from .device import pick_device
from .cli_support import exit_status, json_object
from .errors import PipelineError
from .provenance import provenance

#: Per-image arrays of the .npz (besides `feature_abs_sum`, `logit_abs_sum`, `eps`, `pixel_units`).
PER_IMAGE = ("labels", "predictions", "ybar", "logits", "z_y", "logit_gap", "grad_gap", "eps_l", "cos", "grad_norm_y")
#: Quantities whose median the JSON summary holds.
MEDIANS = ("logit_gap", "grad_gap", "eps_l", "cos", "grad_norm_y", "z_y")
from .analysis_settings import DEFAULT_BATCH_SIZE, VERSION  # noqa: E402,F401 - torch-free, read by the rules


def forward_parts(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate activations and logits in one pass (every model is `head(features(x))`)."""
    feats = model.features(x)
    return feats, model.head(feats)


def eq4_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pixel_units: float = 1.0) -> dict[str, torch.Tensor]:
    """Eq. 4 quantities and activations of one batch; `x` in [0, 1], gradients per `pixel_units`."""
    x = x.detach().clone().requires_grad_(True)
    feats, logits = forward_parts(model, x)
    wrong = logits.detach().clone()
    wrong.scatter_(1, y[:, None], float("-inf"))
    ybar = wrong.argmax(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_ybar = logits.gather(1, ybar[:, None]).squeeze(1)
    (g_y,) = torch.autograd.grad(z_y.sum(), x, retain_graph=True)
    (g_ybar,) = torch.autograd.grad(z_ybar.sum(), x)
    # d z / d(x * units) = (d z / d x) / units
    g_y, g_ybar = g_y.flatten(1) / pixel_units, g_ybar.flatten(1) / pixel_units
    logit_gap = (z_y - z_ybar).detach()
    grad_gap = (g_y - g_ybar).abs().sum(dim=1)
    return {
        "labels": y,
        "predictions": logits.detach().argmax(dim=1),
        "ybar": ybar,
        "logits": logits.detach(),
        "z_y": z_y.detach(),
        "logit_gap": logit_gap,
        "grad_gap": grad_gap,
        "eps_l": logit_gap / grad_gap,
        "cos": F.cosine_similarity(g_y, g_ybar, dim=1, eps=1e-30),
        "grad_norm_y": g_y.abs().sum(dim=1),
        "feature_abs_sum": feats.detach().abs().sum(dim=0, dtype=torch.float64),
        "logit_abs_sum": logits.detach().abs().sum(dim=0, dtype=torch.float64),
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


def predicted_robust(arrays: dict[str, np.ndarray], eps: float) -> np.ndarray:
    """Eq. 4's prediction per image: correctly classified and eps < eps_L (eps in study units)."""
    return (arrays["predictions"] == arrays["labels"]) & (arrays["eps_l"] > eps)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def summarize(arrays: dict[str, np.ndarray], eps: float) -> dict[str, Any]:
    """What the tables need: Eq. 4's predicted-robust accuracy at `eps`, clean accuracy, medians."""
    n = len(arrays["labels"])
    robust = predicted_robust(arrays, eps)
    return {
        "n_test": n,
        "clean_accuracy": 100.0 * float(np.mean(arrays["predictions"] == arrays["labels"])),
        "predicted_robust_accuracy": 100.0 * float(np.mean(robust)),
        "predicted_robust_count": int(robust.sum()),
        "median": {key: _finite_or_none(np.median(arrays[key])) for key in MEDIANS},
        "n_features": int(len(arrays["feature_abs_sum"])),
        "inactive_features": int(np.sum(arrays["feature_abs_sum"] == 0)),
    }


def run(
    checkpoint: str | Path,
    data_path: str | Path,
    out_npz: str | Path,
    out_json: str | Path,
    eps: float,
    pixel_units: float = 1.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int | None = None,
    architecture: str | None = None,
    info: dict[str, Any] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Analyse one model on the first `max_examples` test images (all when None); write .npz + JSON."""
    started = time.perf_counter()
    dev = pick_device(device)
    model = load_model(checkpoint, dev, expect_architecture=architecture)
    for param in model.parameters():
        param.requires_grad_(False)
    data = load_dataset(data_path)
    n = len(data.y_test) if max_examples is None else min(int(max_examples), len(data.y_test))
    x = data.scale(data.x_test[:n]).to(dev)
    y = data.y_test[:n].to(dev)
    arrays = analyze_model(model, x, y, pixel_units, batch_size)
    write_npz(out_npz, **arrays, eps=np.float64(eps), pixel_units=np.float64(pixel_units))
    summary = {
        **(info or {}),
        "eps": eps,
        "pixel_units": pixel_units,
        **summarize(arrays, eps),
        "units": "eps, eps_l and gradients per pixel in the study's pixel_units",
        "settings": {"batch_size": batch_size, "max_examples": max_examples},
        "inputs": {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint), "data": str(data_path)},
        "wall_seconds": time.perf_counter() - started,
        "provenance": provenance(dev),
    }
    write_json(out_json, summary)
    print(
        f"{n} images: clean {summary['clean_accuracy']:.2f}%, Eq. 4 predicted robust at eps {eps:g}: "
        f"{summary['predicted_robust_accuracy']:.2f}%, median eps_L {summary['median']['eps_l']}",
        flush=True,
    )
    return summary




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smoothsqueeze.analysis", description="Eq. 4 quantities and activation sums of one model.")
    parser.add_argument("--spec", type=json_object("--spec", ("eps",)), required=True, help="eps, pixel_units, batch_size, max_examples, architecture, info (JSON)")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, help="per-image arrays (.npz)")
    parser.add_argument("--summary", required=True, help="summary for the tables (.json)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    s = args.spec
    def action() -> None:
        run(
            args.checkpoint, args.data, args.out, args.summary, float(s["eps"]), float(s.get("pixel_units", 1)),
            int(s.get("batch_size") or DEFAULT_BATCH_SIZE), s.get("max_examples"), s.get("architecture"), s.get("info"), args.device,
        )
    return exit_status(action)


if __name__ == "__main__":
    sys.exit(main())
