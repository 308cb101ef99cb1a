"""The opening every model stage shares: device, stored model, dataset, first n test images, input checksums.

Black-box crafting, evaluation, analysis and the audit all start from one checkpoint and one
prepared dataset; :func:`open_stage` does it once, so each checks and records its inputs alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .artifacts import sha256_file
from .checkpoints import load_model
from .data import Dataset, load_dataset
from .device import pick_device


@dataclass
class StageInputs:
    """A stage's opened inputs: `n` is how many test images (the first ones) it works on."""

    device: torch.device
    model: nn.Module
    data: Dataset
    n: int
    inputs: dict[str, Any]  # checkpoint, checkpoint_sha256, data: what the stage's record names

    def test_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` test images in [0, 1] and their labels, on the stage's device."""
        return self.data.scale(self.data.x_test[: self.n]).to(self.device), self.data.y_test[: self.n].to(self.device)


def open_stage(
    checkpoint: str | Path, data_path: str | Path, max_examples: int | None = None, architecture: str | None = None,
    device: str | None = None, frozen: bool = False, channels_last: bool = False,
) -> StageInputs:
    """Pick the device, load the model (checked against `architecture`) and the dataset.

    `max_examples` None: the whole test set. `frozen`: the weights need no gradient (stages that
    differentiate with respect to the images only). `channels_last`: the model's weights in that
    memory format (its convolutions then run and return channels_last; the images stay NCHW).
    """
    dev = pick_device(device)
    model = load_model(checkpoint, dev, expect_architecture=architecture)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if frozen:
        for param in model.parameters():
            param.requires_grad_(False)
    data = load_dataset(data_path)
    n = len(data.y_test) if max_examples is None else min(int(max_examples), len(data.y_test))
    inputs = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint), "data": str(data_path)}
    return StageInputs(dev, model, data, n, inputs)
