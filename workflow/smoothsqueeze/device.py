"""Run-time device choice: CUDA when present (a free GPU of this job's own), else CPU.

`SMOOTHSQUEEZE_DEVICE` (or the `requested` argument) overrides: 'cpu', 'cuda' or 'cuda:N'.
With 'auto', a GPU job claims a device that no other job holds (gpu_claim: one lock file
per GPU, released when the process ends, also when it crashes), so `--resources gpu=2` on a
2-GPU machine puts two jobs on two cards.
"""
from __future__ import annotations

import os

import torch

from .errors import PipelineError
from .gpu_claim import DeviceClaim, claim_device

_CLAIM: DeviceClaim | None = None  # one claim per process; each claim_device() call takes a new lock


def pick_device(requested: str | None = None) -> torch.device:
    """Return the device a stage should run on."""
    global _CLAIM
    source = "--device" if requested else "SMOOTHSQUEEZE_DEVICE"
    choice = requested or os.environ.get("SMOOTHSQUEEZE_DEVICE") or "auto"
    if choice == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if _CLAIM is None:
            _CLAIM = claim_device()
        return torch.device(str(_CLAIM))
    try:
        device = torch.device(choice)
    except (RuntimeError, ValueError):
        raise PipelineError(f"{source}={choice!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return device
