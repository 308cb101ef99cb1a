"""Attacks on a tiny trained model: ordering, eps monotonicity, budget, CW loss, torchattacks cross-check."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smoothsqueeze.attacks import AttackBudgetError, check_budget, cw_loss, fgsm, pgd, pgd_restarts
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
    clean = _acc(trained, x, y)
    gen = torch.Generator().manual_seed(0)
    fgsm_acc = _acc(trained, fgsm(trained, x, y, eps=0.1), y)
    pgd_acc = [_acc(trained, pgd(trained, x, y, eps, eps / 4, 20, generator=gen), y) for eps in (0.05, 0.1, 0.2, 0.5)]
    # Strict: an attack that returns its input (or one that stops after the first step) keeps the
    # clean accuracy and fails every line. Measured: clean 98, FGSM 59.5, PGD 86.5 / 57 / 2.5 / 0.
    assert fgsm_acc < clean - 20, (clean, fgsm_acc)
    assert pgd_acc[0] < clean - 5, (clean, pgd_acc)
    assert pgd_acc[1] < fgsm_acc, (fgsm_acc, pgd_acc)
    assert all(later < earlier for earlier, later in zip(pgd_acc[:3], pgd_acc[1:3])), pgd_acc
    assert pgd_acc[2] <= 5.0 and pgd_acc[3] == 0.0, pgd_acc


def _at_boundary(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
    """Pixels that sign steps pushed onto the L-inf sphere or a pixel limit (uniform noise lands there almost never)."""
    on_sphere = ((x_adv - x).abs() - eps).abs() < 1e-6
    return on_sphere | (x_adv == 0) | (x_adv == 1)


@pytest.mark.parametrize("loss", ["xent", "cw"])
@pytest.mark.parametrize("random_start", [True, False])
def test_every_attack_stays_in_budget(trained: MadryCNN, batch: tuple[torch.Tensor, torch.Tensor], loss: str, random_start: bool) -> None:
    x, y = batch
    x_adv = pgd(trained, x, y, 0.15, 0.05, 5, loss=loss, random_start=random_start, restarts=2, generator=torch.Generator().manual_seed(1))
    check_budget(x, x_adv, 0.15)
    # It moved by gradient steps, not only by its random start: 5 sign steps of 0.05 reach the
    # 0.15 sphere (or a pixel limit) on most pixels (measured 85-92%; a random start alone puts
    # there only the clipped background pixels), and the accuracy falls (measured 17-21% from 98%).
    assert _at_boundary(x, x_adv, 0.15).float().mean() > 0.7
    assert _acc(trained, x_adv, y) < _acc(trained, x, y) - 40


class Lottery(torch.nn.Module):
    """Wrong (class 1 instead of 0) exactly where the first pixel exceeds `threshold`; zero
    gradient everywhere, so PGD steps never move and only the random start decides. From
    x = 0.5 with eps = 0.5 a random start is uniform on [0, 1]: each start fools an example
    with probability 1 - threshold, independently of the other starts."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # inference.predict reads the device from it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x.flatten(1)[:, 0]
        fooled = (first > self.threshold).to(x.dtype)
        return torch.stack([1 - fooled, fooled], dim=1) * 10 + 0 * first[:, None]  # keeps x in the graph


def test_later_restarts_fool_what_the_first_does_not() -> None:
    """Each start fools an example with probability 0.1: one start leaves about 90% robust, four
    starts 0.9**4 = 65.6%. An attack whose restarts repeat the first start (or stop after it)
    stays at 90%. 2000 examples: a binomial standard error near 1 point."""
    model = Lottery(0.9)
    n = 2000
    x, y = torch.full((n, 1, 2, 2), 0.5), torch.zeros(n, dtype=torch.long)
    assert _acc(model, x, y) == 100.0
    one = pgd(model, x, y, 0.5, 0.1, 3, restarts=1, generator=torch.Generator().manual_seed(0))
    many = pgd(model, x, y, 0.5, 0.1, 3, restarts=4, generator=torch.Generator().manual_seed(0))
    check_budget(x, many, 0.5)
    acc_one, acc_many = _acc(model, one, y), _acc(model, many, y)
    assert 87.0 < acc_one < 93.0, acc_one
    assert 61.6 < acc_many < 69.6, acc_many
    # The same examples fooled by a single start are still fooled with four (the first restart
    # draws what the single run draws); every example fooled keeps a point that fools it.
    with torch.no_grad():
        fooled_one, fooled_many = model(one).argmax(1) != y, model(many).argmax(1) != y
    assert not (fooled_one & ~fooled_many).any()


def test_one_example_only_a_later_restart_breaks() -> None:
    """One example whose first random start fails and whose third succeeds (the seed is picked
    from the generator's own draws, so the case is built, not found by luck)."""
    model = Lottery(0.95)
    x, y = torch.full((1, 1, 1, 1), 0.5), torch.zeros(1, dtype=torch.long)
    for seed in range(1000):
        draws = torch.rand((4, 1), generator=torch.Generator().manual_seed(seed)).flatten().tolist()
        if draws[0] <= 0.95 and draws[1] <= 0.95 and draws[2] > 0.95:
            break
    else:
        pytest.fail("no seed in 1000 whose third draw alone exceeds 0.95")
    single = pgd(model, x, y, 0.5, 0.1, 2, restarts=1, generator=torch.Generator().manual_seed(seed))
    two = pgd(model, x, y, 0.5, 0.1, 2, restarts=2, generator=torch.Generator().manual_seed(seed))
    three = pgd(model, x, y, 0.5, 0.1, 2, restarts=3, generator=torch.Generator().manual_seed(seed))
    assert _acc(model, single, y) == 100.0 and _acc(model, two, y) == 100.0
    assert _acc(model, three, y) == 0.0
    assert three.item() == pytest.approx(draws[2], abs=1e-6)  # the third start's point, kept


def test_restarts_never_weaken_the_attack(trained: MadryCNN, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    one = pgd(trained, x, y, 0.1, 0.02, 5, generator=torch.Generator().manual_seed(3))
    many = pgd(trained, x, y, 0.1, 0.02, 5, restarts=4, generator=torch.Generator().manual_seed(3))
    check_budget(x, many, 0.1)
    with torch.no_grad():
        fooled_one, fooled_many = trained(one).argmax(1) != y, trained(many).argmax(1) != y
    # per example, not on average: nothing the single run fooled is robust with four restarts
    assert not (fooled_one & ~fooled_many).any()
    assert fooled_many.sum() > fooled_one.sum()  # measured 71 vs 60 of 200


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


@pytest.mark.parametrize(("eps", "step", "steps"), [(0.1, 0.01, 20), (0.2, 0.05, 10)])
def test_pgd_agrees_with_torchattacks(trained: MadryCNN, batch: tuple[torch.Tensor, torch.Tensor], eps: float, step: float, steps: int) -> None:
    """Without a random start both PGDs are deterministic: the same adversarial batch, pixel by
    pixel, up to float rounding (torchattacks projects as x + clamp(x_adv - x), we as min/max)."""
    import torchattacks

    x, y = batch
    ours = pgd(trained, x, y, eps, step, steps, random_start=False)
    theirs = torchattacks.PGD(trained, eps=eps, alpha=step, steps=steps, random_start=False)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert (ours - x).abs().max() > eps - 1e-6  # a real attack, not two no-ops that agree


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_fgsm_agrees_with_torchattacks(trained: MadryCNN, batch: tuple[torch.Tensor, torch.Tensor], eps: float) -> None:
    import torchattacks

    x, y = batch
    ours = fgsm(trained, x, y, eps=eps)
    theirs = torchattacks.FGSM(trained, eps=eps)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert (ours - x).abs().max() > eps - 1e-6


def test_restarts_attack_only_the_survivors_and_the_candidates() -> None:
    """The survivor-only loop (attacks.pgd_restarts): examples outside `candidates` are never attacked
    (their point stays the clean image, they count as not robust); a fooled example is not attacked
    again, so it keeps the point that fooled it; the curve has one value per restart and never rises."""
    model = Lottery(0.5)
    n = 400
    x, y = torch.full((n, 1, 2, 2), 0.5), torch.zeros(n, dtype=torch.long)
    candidates = torch.arange(n) % 2 == 0
    found = pgd_restarts(model, x, y, 0.5, 0.1, 2, restarts=3, generator=torch.Generator().manual_seed(0), batch_size=64, candidates=candidates)
    assert torch.equal(found.x_adv[~candidates], x[~candidates]) and not found.robust[~candidates].any()
    with torch.no_grad():
        fooled = model(found.x_adv).argmax(1) != y
    assert torch.equal(fooled[candidates], ~found.robust[candidates])  # every fooled candidate keeps a fooling point
    assert len(found.curve) == 3 and found.curve == sorted(found.curve, reverse=True)
    # about half the candidates survive each start: 200 * 0.5**3 = 25 left after three
    assert 10 <= int(found.robust.sum()) <= 45, int(found.robust.sum())
    assert found.curve[-1] == pytest.approx(100.0 * found.robust.float().mean().item())
