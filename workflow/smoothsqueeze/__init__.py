"""smoothsqueeze: reproduce and audit 'Label smoothing and logit squeezing' (ICLR 2019 submission).

Public entry points for use outside the pipeline::

    import smoothsqueeze as ss
    model = ss.load_model("results/digits/models/natural_k1500/model.pt")
    x_adv = ss.pgd(model, x, y, eps=0.2, step_size=0.01, steps=40)

The public names are imported lazily, so `import smoothsqueeze.config` (what the Snakefile
does at every start, also inside each cluster job) does not pay for importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

#: Stage versions live in the plan's one table (study.STAGE_VERSIONS); these two are re-exported.
from .study import CODE_VERSION, TRAIN_CODE_VERSION  # noqa: E402

_PUBLIC = {
    "load_model": "checkpoints",
    "fgsm": "attacks",
    "pgd": "attacks",
    "cw_loss": "attacks",
    "check_budget": "attacks",
    "AttackBudgetError": "attacks",
}
__all__ = ["CODE_VERSION", "TRAIN_CODE_VERSION", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'smoothsqueeze' has no attribute {name!r}")
