"""Each loss term against a hand computation."""
from __future__ import annotations

import math

import pytest
import torch

from smoothsqueeze.losses import logit_squeeze, smoothed_targets, soft_cross_entropy, training_loss


def test_smoothed_targets_match_formula() -> None:
    # y_warm = y_hot - alpha * (y_hot - 1/Nc): with Nc=4, alpha=0.5 -> true 0.625, others 0.125
    t = smoothed_targets(torch.tensor([2]), 4, 0.5)
    assert torch.allclose(t, torch.tensor([[0.125, 0.125, 0.625, 0.125]]))
    assert torch.allclose(t.sum(), torch.tensor(1.0))


def test_alpha_one_gives_uniform_and_zero_gives_one_hot() -> None:
    assert torch.allclose(smoothed_targets(torch.tensor([1]), 5, 1.0), torch.full((1, 5), 0.2))
    assert torch.equal(smoothed_targets(torch.tensor([1]), 5, 0.0), torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]]))


def test_soft_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    targets = torch.tensor([[0.2, 0.3, 0.5]])
    log_z = math.log(math.exp(1) + math.exp(2) + math.exp(3))
    expected = -(0.2 * (1 - log_z) + 0.3 * (2 - log_z) + 0.5 * (3 - log_z))
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_logit_squeeze_is_batch_mean_of_l2_norms() -> None:
    logits = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1
    assert logit_squeeze(logits).item() == pytest.approx(3.0)


def test_training_loss_combines_terms() -> None:
    logits = torch.tensor([[3.0, 4.0, 0.0], [0.0, 1.0, 2.0]])
    labels = torch.tensor([0, 2])
    alpha, beta = 0.3, 0.7
    targets = smoothed_targets(labels, 3, alpha)
    expected = soft_cross_entropy(logits, targets) + beta * logit_squeeze(logits)
    assert training_loss(logits, labels, alpha, beta).item() == pytest.approx(expected.item(), rel=1e-6)
    # alpha = beta = 0 is plain cross-entropy
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert training_loss(logits, labels, 0.0, 0.0).item() == pytest.approx(plain.item(), rel=1e-6)
