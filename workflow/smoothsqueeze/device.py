"""Run-time device choice: CUDA when present, else CPU; `SMOOTHSQUEEZE_DEVICE` overrides."""
from __future__ import annotations

import os

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """Return the device a stage should run on.

    `requested` (or the SMOOTHSQUEEZE_DEVICE variable) may be 'cpu', 'cuda' or 'cuda:N';
    'auto'/None picks CUDA when available.
    """
    choice = requested or os.environ.get("SMOOTHSQUEEZE_DEVICE") or "auto"
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return device
