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
    """torch.save through a temporary file, renamed into place when complete.

    Saved through a file object, so the archive's inner folder is always 'archive' (from a
    path torch would name it after the random temporary name): equal contents give equal
    bytes, and a checkpoint's sha256 is reproducible.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True: tensors and plain containers only, never pickled code.

    Every failure is one PipelineError line that names the file and what to do.
    """
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PipelineError(f"{path}: is a folder, not a checkpoint file") from None
    except pickle.UnpicklingError as err:
        raise PipelineError(
            f"{path}: refused to load, it holds pickled Python objects beyond plain tensors ({_unpickling_reason(err)}); "
            "nothing in it was run. Only load files you trust; rebuild this one with the pipeline"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError, AttributeError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PipelineError(f"{path}: truncated or corrupt ({first[:160]}); delete it and rerun the stage that made it") from None
    if not isinstance(obj, dict):
        raise PipelineError(f"{path}: not a smoothsqueeze checkpoint (holds {type(obj).__name__})")
    return obj


def _unpickling_reason(err: BaseException) -> str:
    """The line of torch's weights-only error that names what was refused (e.g. 'GLOBAL posix.system')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line or "unsupported" in line:
            return line[:160]
    return lines[-1][:160] if lines else type(err).__name__


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
    missing = [key for key in ("architecture", "in_channels", "image_size", "num_classes", "state_dict") if key not in ckpt]
    if missing:
        raise PipelineError(f"{path}: model checkpoint lacks {missing}; delete it and retrain")
    if expect_architecture is not None and ckpt["architecture"] != expect_architecture:
        raise PipelineError(f"{path}: holds a {ckpt['architecture']!r} model, the study expects {expect_architecture!r}; delete it and retrain")
    try:
        model = build_model(ckpt["architecture"], ckpt["in_channels"], ckpt["image_size"], ckpt["num_classes"])
    except (ValueError, TypeError) as err:
        raise PipelineError(f"{path}: cannot rebuild its model ({str(err).splitlines()[0][:160]}); delete it and retrain") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as err:
        raise PipelineError(f"{path}: weights do not fit a {ckpt['architecture']!r} model ({str(err).splitlines()[0][:160]}); delete it and retrain") from None
    return model.to(device).eval()
