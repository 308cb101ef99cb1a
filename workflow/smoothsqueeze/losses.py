"""The paper's training objective: label smoothing, logit squeezing, cross-entropy.

The paper writes the logit-squeezing term as ``beta * ||z||_2`` without saying over what it is
normalised, and its numbers depend on that choice (at beta >= sqrt(0.9) a per-example term makes
z = 0 the minimum and training collapses). `SQUEEZE_NORMS` are the readings the pipeline offers;
every loss here is the *mean* cross-entropy over the batch plus the squeeze term:

- ``per_example``: beta * mean_i ||z_i||_2 (the literal per-image reading).
- ``batch``: beta * ||Z||_F / B, with Z the batch's B x C logit matrix. Madry et al.'s TensorFlow
  MNIST code minimises the *summed* cross-entropy; adding ``beta * tf.norm(logits)`` (the Frobenius
  norm of the whole batch) to it and dividing by B gives this term. Per example it weighs about
  beta / sqrt(B).
- ``batch_unscaled``: beta * ||Z||_F, the same term added to a *mean* cross-entropy (what adding
  it to Madry et al.'s CIFAR-10 ``mean_xent`` would give); per example about beta * sqrt(B).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SQUEEZE_NORMS = ("per_example", "batch", "batch_unscaled")


def smoothed_targets(labels: torch.Tensor, num_classes: int, alpha: float) -> torch.Tensor:
    """y_warm = y_hot - alpha * (y_hot - 1/Nc)  (paper, Sec. 4)."""
    y_hot = F.one_hot(labels, num_classes).float()
    return y_hot - alpha * (y_hot - 1.0 / num_classes)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_i t_i log softmax(z)_i."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def logit_squeeze(logits: torch.Tensor, norm: str = "per_example") -> torch.Tensor:
    """The squeeze term ||z|| of a batch of logits under normalisation `norm` (see SQUEEZE_NORMS)."""
    z = logits.float()
    if norm == "per_example":
        return z.norm(dim=1).mean()
    if norm == "batch":
        return z.norm() / z.shape[0]
    if norm == "batch_unscaled":
        return z.norm()
    raise ValueError(f"unknown logit-squeeze normalisation {norm!r}; known: {list(SQUEEZE_NORMS)}")


def training_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float, beta: float, squeeze_norm: str = "per_example") -> torch.Tensor:
    """Mean cross-entropy on label-smoothed targets plus beta * ||z|| (normalised as `squeeze_norm` says)."""
    loss = soft_cross_entropy(logits, smoothed_targets(labels, logits.shape[1], alpha))
    if beta:
        loss = loss + beta * logit_squeeze(logits, squeeze_norm)
    return loss
