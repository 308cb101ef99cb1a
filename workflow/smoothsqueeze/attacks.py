"""L-inf attacks on images in [0, 1]: FGSM and PGD on the cross-entropy or CW margin loss, and N-FGSM
(a training attack that leaves the eps ball on purpose; its own bound: `nfgsm_bound`).

Threat model as in Madry et al. (2017): perturbations in the L-inf ball of radius `eps`
around the clean image, clipped to the pixel range [0, 1]. Every returned batch can be
checked with :func:`check_budget`; the pipeline does so on every run.

Example::

    x_adv = pgd(model, x, y, eps=0.3, step_size=0.01, steps=40, loss="xent", random_start=True)
    check_budget(x, x_adv, eps=0.3)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Loss = Literal["xent", "cw"]
BUDGET_TOLERANCE = 1e-6


class AttackBudgetError(RuntimeError):
    """An adversarial batch left its L-inf ball or the pixel range."""


def cw_loss(logits: torch.Tensor, labels: torch.Tensor, confidence: float = 50.0) -> torch.Tensor:
    """Madry et al.'s CW margin loss per example: -relu(z_y - max_{i != y} z_i + confidence).

    The true class is masked out of the max with -inf, so the result stays right when every
    logit is negative (Madry's code subtracts 1e4 instead).
    """
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    mask = F.one_hot(labels, logits.shape[1]).bool()
    wrong_logit = logits.masked_fill(mask, float("-inf")).amax(dim=1)
    return -F.relu(true_logit - wrong_logit + confidence)


def attack_loss(logits: torch.Tensor, labels: torch.Tensor, loss: Loss) -> torch.Tensor:
    """Per-example loss the attacker ascends."""
    if loss == "xent":
        return F.cross_entropy(logits.float(), labels, reduction="none")
    if loss == "cw":
        return cw_loss(logits.float(), labels)
    raise ValueError(f"unknown attack loss {loss!r} (use 'xent' or 'cw')")


def _input_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, loss: Loss) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    value = attack_loss(model(x), labels, loss).sum()
    (grad,) = torch.autograd.grad(value, x)
    # sign(NaN) is 0 in PyTorch: a NaN gradient would silently make the attack a no-op and report
    # clean accuracy as robustness. Stop instead.
    if not torch.isfinite(grad).all():
        raise AttackBudgetError(f"the input gradient of the {loss} loss holds NaN or infinite values: the attack cannot proceed")
    return grad


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    loss: Loss = "xent",
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2014): one step of size eps."""
    return pgd(model, x, labels, eps=eps, step_size=eps, steps=1, loss=loss, random_start=random_start, generator=generator)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    loss: Loss = "xent",
    random_start: bool = True,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2017), L-inf, pixel range [0, 1].

    With `restarts` > 1, see :func:`pgd_restarts` (each example keeps the first restart that
    fools the model). Gradients flow through `model` as it is (call `model.eval()` first for
    evaluation). Returns a detached tensor like `x`.
    """
    if restarts <= 1:
        return _pgd_once(model, x, labels, eps, step_size, steps, loss, random_start, generator)
    return pgd_restarts(
        model, x, labels, eps, step_size, steps, loss, restarts, random_start=random_start, generator=generator, batch_size=len(x)
    ).x_adv


def _pgd_once(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float, step_size: float, steps: int, loss: Loss,
    random_start: bool, generator: torch.Generator | None,
) -> torch.Tensor:
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = (x + (2 * noise - 1) * eps).clamp_(0.0, 1.0)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        grad = _input_gradient(model, x_adv, labels, loss)
        x_adv = _project(x_adv + step_size * grad.sign(), x, eps)
    return x_adv.detach()


def nfgsm(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    step_size: float,
    noise_factor: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """N-FGSM (de Jorge et al., "Make Some Noise", NeurIPS 2022; code: pdejorge/N-FGSM), a training attack.

    Noise uniform in [-noise_factor * eps, noise_factor * eps] (clipped to [0, 1]), then one step of
    `step_size` along the sign of the x-ent gradient there, clipped to [0, 1] and NOT projected back
    onto the eps ball: the result may lie up to :func:`nfgsm_bound` (noise_factor * eps + step_size)
    from `x`, beyond eps. Not a threat-model attack: never use it to measure robustness at eps.

    Example::

        x_adv = nfgsm(model, x, y, eps=0.3, step_size=0.3, noise_factor=2.0)
        check_budget(x, x_adv, nfgsm_bound(0.3, 0.3, 2.0))
    """
    x = x.detach()
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    start = (x + (2 * noise - 1) * (noise_factor * eps)).clamp_(0.0, 1.0)
    grad = _input_gradient(model, start, labels, "xent")
    return (start + step_size * grad.sign()).clamp_(0.0, 1.0).detach()


def nfgsm_bound(eps: float, step_size: float, noise_factor: float = 2.0) -> float:
    """The L-inf distance an N-FGSM example can reach from its clean image: noise_factor * eps + step_size."""
    return noise_factor * eps + step_size


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Per-example correctness (bool mask) of `model` on float images `x`, in batches."""
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(model(x[start : start + batch_size]).argmax(1) == y[start : start + batch_size])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x.device)


@dataclass
class RestartResult:
    """What :func:`pgd_restarts` found: adversarial points, who survived them, and the curve."""

    x_adv: torch.Tensor  # per example the first point that fooled it, else the last restart's point
    robust: torch.Tensor  # bool: candidate examples no restart fooled
    curve: list[float] = field(default_factory=list)  # accuracy (%) over all examples after each restart
    first: torch.Tensor | None = None  # bool: candidate examples the first restart did not fool


def pgd_restarts(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    loss: Loss = "xent",
    restarts: int = 1,
    *,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    batch_size: int,
    candidates: torch.Tensor | None = None,
) -> RestartResult:
    """PGD from `restarts` starts, each on the examples no earlier restart fooled (survivors only).

    `candidates` (bool mask, default all) are the examples the first restart attacks; the audit
    passes the clean-correct ones, so the others count as not robust and cost no gradient. Every
    batch is checked against its budget. An example is robust only if no restart fooled it.
    """
    x = x.detach()
    x_adv = x.clone()
    robust = candidates.clone() if candidates is not None else torch.ones(len(x), dtype=torch.bool, device=x.device)
    curve = []
    first = None
    for _ in range(max(1, restarts)):
        idx = robust.nonzero().squeeze(1)
        for start in range(0, len(idx), batch_size):
            sel = idx[start : start + batch_size]
            found = _pgd_once(model, x[sel], labels[sel], eps, step_size, steps, loss, random_start, generator)
            check_budget(x[sel], found, eps)
            x_adv[sel] = found
            robust[sel] = correct(model, found, labels[sel], batch_size)
        curve.append(100.0 * robust.float().mean().item())
        if first is None:
            first = robust.clone()
    return RestartResult(x_adv, robust, curve, first)


def budget_excess(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
    """How far `x_adv` lies outside its L-inf ball of radius eps around `x` or outside [0, 1] (<= 0: inside).

    A 0-d tensor on the batch's device (no host sync, so a loop can check it when it syncs anyway);
    NaN or infinite pixels count as infinitely far.
    """
    diff = (x_adv.float() - x.float()).abs().amax() - eps
    low, high = -x_adv.float().amin(), x_adv.float().amax() - 1
    return torch.nan_to_num(torch.stack([diff, low, high]).amax(), nan=float("inf"))


def check_budget(x: torch.Tensor, x_adv: torch.Tensor, eps: float, tol: float = BUDGET_TOLERANCE) -> None:
    """Raise AttackBudgetError unless |x_adv - x|_inf <= eps (+tol) and x_adv lies in [0, 1] (+-tol)."""
    if x.shape != x_adv.shape:
        raise AttackBudgetError(f"adversarial batch has shape {tuple(x_adv.shape)}, clean batch {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise AttackBudgetError("adversarial batch holds NaN or infinite values")
    dist = (x_adv.float() - x.float()).abs().amax().item()
    if dist > eps + tol:
        raise AttackBudgetError(f"perturbation {dist:.8f} exceeds eps {eps:.8f} (+{tol:g})")
    low, high = x_adv.min().item(), x_adv.max().item()
    if low < -tol or high > 1 + tol:
        raise AttackBudgetError(f"adversarial pixels span [{low:.6f}, {high:.6f}], outside [0, 1]")
