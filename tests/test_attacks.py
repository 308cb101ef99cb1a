"""Attacks on a tiny trained model: ordering, eps monotonicity, budget, CW loss, torchattacks cross-check."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smoothsqueeze.attacks import AttackBudgetError, check_budget, cw_loss, fgsm, pgd
from smoothsqueeze.data import Dataset
from smoothsqueeze.inference import accuracy
from smoothsqueeze.models import MadryCNN


@pytest.fixture(scope="module")
def trained(digits: Dataset) -> MadryCNN:
    """A natural Madry CNN on the 8x8 digits (about 2 s)."""
    torch.manual_seed(0)
    model = MadryCNN(1, 8)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(0)
    x_all, y_all = digits.scale(digits.x_train), digits.y_train
    for _ in range(300):
        idx = torch.randint(0, len(x_all), (50,), generator=gen)
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def batch(digits: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.scale(digits.x_test[:200]), digits.y_test[:200]


def _acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return accuracy(model, x, y)


def test_model_is_accurate(trained: MadryCNN, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert _acc(trained, *batch) > 90


def test_pgd_beats_fgsm_and_weakens_with_eps(trained: MadryCNN, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    gen = torch.Generator().manual_seed(0)
    fgsm_acc = _acc(trained, fgsm(trained, x, y, eps=0.1), y)
    pgd_acc = [_acc(trained, pgd(trained, x, y, eps, eps / 4, 20, generator=gen), y) for eps in (0.05, 0.1, 0.2, 0.5)]
    assert pgd_acc[1] <= fgsm_acc
    assert all(later <= earlier for earlier, later in zip(pgd_acc, pgd_acc[1:]))
    assert pgd_acc[-1] <= 1.0


@pytest.mark.parametrize("loss", ["xent", "cw"])
@pytest.mark.parametrize("random_start", [True, False])
def test_every_attack_stays_in_budget(trained: MadryCNN, batch: tuple[torch.Tensor, torch.Tensor], loss: str, random_start: bool) -> None:
    x, y = batch
    x_adv = pgd(trained, x, y, 0.15, 0.05, 5, loss=loss, random_start=random_start, restarts=2, generator=torch.Generator().manual_seed(1))
    check_budget(x, x_adv, 0.15)
    assert (x_adv - x).abs().max() > 0.1  # it moved


def test_restarts_never_weaken_the_attack(trained: MadryCNN, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    one = _acc(trained, pgd(trained, x, y, 0.1, 0.02, 5, generator=torch.Generator().manual_seed(3)), y)
    many = _acc(trained, pgd(trained, x, y, 0.1, 0.02, 5, restarts=4, generator=torch.Generator().manual_seed(3)), y)
    assert many <= one


def test_budget_check_fires_on_planted_violations() -> None:
    x = torch.full((2, 1, 4, 4), 0.5)
    check_budget(x, x + 0.1, 0.1)  # exactly on the boundary: fine
    check_budget(x, x + 0.1 + 5e-7, 0.1)  # float error within 1e-6: fine
    with pytest.raises(AttackBudgetError, match="exceeds eps"):
        check_budget(x, x + 0.1 + 1e-4, 0.1)
    high = torch.full((2, 1, 4, 4), 0.95)
    with pytest.raises(AttackBudgetError, match="outside \\[0, 1\\]"):
        check_budget(high, high + 0.1, 0.2)
    with pytest.raises(AttackBudgetError, match="NaN"):
        check_budget(x, torch.full_like(x, float("nan")), 0.1)


def test_cw_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 5.0, 1.0], [-3.0, -1.0, -2.0], [-10.0, -20.0, -30.0]])
    labels = torch.tensor([1, 2, 0])
    # row 0: z_y=5, max other=2 -> -relu(5-2+50) = -53
    # row 1 (all negative): z_y=-2, max other=-1 -> -relu(-2+1+50) = -49
    # row 2 (all negative, true class largest): z_y=-10, max other=-20 -> -relu(10+50) = -60
    assert torch.allclose(cw_loss(logits, labels), torch.tensor([-53.0, -49.0, -60.0]))
    # misclassified by more than the confidence: loss saturates at 0
    assert cw_loss(torch.tensor([[0.0, 100.0]]), torch.tensor([0])).item() == 0.0


def test_pgd_agrees_with_torchattacks(trained: MadryCNN, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    import torchattacks

    x, y = batch
    eps, step, steps = 0.1, 0.01, 20
    ours = [_acc(trained, pgd(trained, x, y, eps, step, steps, generator=torch.Generator().manual_seed(s)), y) for s in range(3)]
    theirs = []
    for s in range(3):
        torch.manual_seed(s)
        theirs.append(_acc(trained, torchattacks.PGD(trained, eps=eps, alpha=step, steps=steps, random_start=True)(x, y), y))
    # 200 images: a binomial standard error of ~3.5 points at 50%; allow 3 of them on the mean
    assert abs(sum(ours) / 3 - sum(theirs) / 3) <= 6.0, (ours, theirs)
