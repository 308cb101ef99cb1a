"""The paper's training objective: label smoothing, logit squeezing, cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def smoothed_targets(labels: torch.Tensor, num_classes: int, alpha: float) -> torch.Tensor:
    """y_warm = y_hot - alpha * (y_hot - 1/Nc)  (paper, Sec. 4)."""
    y_hot = F.one_hot(labels, num_classes).float()
    return y_hot - alpha * (y_hot - 1.0 / num_classes)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_i t_i log softmax(z)_i."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def logit_squeeze(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the L2 norm of the logit vector."""
    return logits.float().norm(dim=1).mean()


def training_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Cross-entropy on label-smoothed targets plus beta * ||z||_2."""
    loss = soft_cross_entropy(logits, smoothed_targets(labels, logits.shape[1], alpha))
    if beta:
        loss = loss + beta * logit_squeeze(logits)
    return loss
