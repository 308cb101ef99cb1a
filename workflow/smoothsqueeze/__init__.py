"""smoothsqueeze: reproduce and audit 'Label smoothing and logit squeezing' (ICLR 2019 submission).

Public entry points for use outside the pipeline::

    import smoothsqueeze as ss
    model = ss.load_model("results/digits/models/natural_k3000/model.pt")
    x_adv = ss.pgd(model, x, y, eps=0.2, step_size=0.01, steps=40)
"""
from __future__ import annotations

#: Bump when a change alters what a stage computes; rules pass it as a param so
#: Snakemake reruns the affected jobs (edits to an imported package do not trigger reruns).
CODE_VERSION = "1"

from .attacks import cw_loss, fgsm, pgd, check_budget, AttackBudgetError  # noqa: E402
from .checkpoints import load_model  # noqa: E402

__all__ = ["CODE_VERSION", "load_model", "fgsm", "pgd", "cw_loss", "check_budget", "AttackBudgetError"]
