"""Batched prediction and accuracy on uint8 image tensors."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, max_value: float = 1.0, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels for images `x` (uint8 divided by `max_value`, or float already in [0, 1])."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        xb = xb.float() / max_value if not xb.is_floating_point() else xb.float()
        out.append(model(xb).argmax(dim=1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=device)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_value: float = 1.0, batch_size: int = 1000) -> float:
    """Percentage of `x` classified as `y`."""
    if len(x) == 0:
        return float("nan")
    pred = predict(model, x, max_value, batch_size)
    return 100.0 * (pred == y.to(pred.device)).float().mean().item()
