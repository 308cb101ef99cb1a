"""Saving and safely loading trained models (no code runs when a checkpoint is read)."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .artifacts import atomic_path
from .errors import PipelineError
from .models import build_model

FORMAT = "smoothsqueeze-model/1"


def save_torch(path: str | Path, obj: dict[str, Any]) -> None:
    """torch.save through a temporary file, renamed into place when complete."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True: tensors and plain containers only, never pickled code."""
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported content"
        raise PipelineError(f"{path}: refused to load, it holds pickled objects beyond plain tensors ({first[:160]}); only load files you trust, and rebuild this one") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PipelineError(f"{path}: truncated or corrupt ({first[:160]}); delete it and rerun the stage that made it") from None
    if not isinstance(obj, dict):
        raise PipelineError(f"{path}: not a smoothsqueeze checkpoint (holds {type(obj).__name__})")
    return obj


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the underlying module (unwraps torch.compile), on the CPU."""
    inner = getattr(model, "_orig_mod", model)
    return {key: value.detach().cpu() for key, value in inner.state_dict().items()}


def save_model(path: str | Path, model: nn.Module, architecture: str, image_shape: tuple[int, int, int], num_classes: int) -> None:
    save_torch(
        path,
        {
            "format": FORMAT,
            "architecture": architecture,
            "in_channels": image_shape[0],
            "image_size": image_shape[1],
            "num_classes": num_classes,
            "state_dict": model_state(model),
        },
    )


def load_model(path: str | Path, device: str | torch.device = "cpu", expect_architecture: str | None = None) -> nn.Module:
    """Load a trained model: an `nn.Module` in eval mode that takes [0, 1] images, NCHW."""
    ckpt = load_torch(path, map_location="cpu")
    if ckpt.get("format") != FORMAT:
        raise PipelineError(f"{path}: not a smoothsqueeze model checkpoint (format {ckpt.get('format')!r})")
    if expect_architecture is not None and ckpt["architecture"] != expect_architecture:
        raise PipelineError(f"{path}: holds a {ckpt['architecture']!r} model, the study expects {expect_architecture!r}; delete it and retrain")
    model = build_model(ckpt["architecture"], ckpt["in_channels"], ckpt["image_size"], ckpt["num_classes"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise PipelineError(f"{path}: weights do not fit a {ckpt['architecture']!r} model ({str(err).splitlines()[0]})") from None
    return model.to(device).eval()
