"""Training recipes beyond the paper, as settings of the one training loop (issue 27 items 1 and 3,
issue 23 item 3): train.lr_schedule (Wong et al.'s cyclic schedule), adversarial.method (FGSM-RS,
N-FGSM), adversarial.eps_warmup, train.robust_check (the guard against catastrophic overfitting)
and the exact pass counts. Each setting is tested through train_model itself, not only through its
helper; a PGD model without the new keys keeps the fingerprint main's code gave it."""
from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest
import yaml
import torch

import smoothsqueeze.train as sstrain
from conftest import ROOT
from smoothsqueeze import config as sscfg
from smoothsqueeze import cost, study, tables
from smoothsqueeze.attacks import AttackBudgetError, check_budget, nfgsm, nfgsm_bound, pgd
from smoothsqueeze.data import Dataset, prepare_digits
from smoothsqueeze.evaluate import training_status
from smoothsqueeze.train import cyclic_lr, learning_rate, overfitting_verdict, train_model

CPU = torch.device("cpu")
REAL_CHECK = sstrain._robust_check
SHIPPED = sscfg.load_config(ROOT / "config.yaml")
FGSM_RS = {"adversarial": {"method": "fgsm_rs", "eps": 0.2}}
NFGSM = {"adversarial": {"method": "nfgsm", "eps": 0.2}}
PGD3 = {"adversarial": {"steps": 3, "step_size": 0.1, "eps": 0.2}}


def _quiet(_: str) -> None:
    pass


def recipe_config(entry: dict, k: int, **train: Any) -> dict:
    """config.yaml with the digits study's grid set to one entry (validated: schema defaults and cross-checks)."""
    config = copy.deepcopy(SHIPPED)
    digits = config["studies"]["digits"]
    digits["grid"] = [copy.deepcopy(entry) | {"k": k}]
    digits.pop("seeds", None)  # one model: the study seed's
    digits["blackbox"]["source"] = study.model_id(entry | {"k": k})
    digits["train"]["robust_check"] = None  # the demo's study-level check is not the loop's default
    digits["train"].update({"log_every": k} | train)
    return sscfg.validate_config(config)


def recipe_settings(entry: dict, k: int, **train: Any) -> dict:
    """Resolved settings of that one model, as the workflow hands them to training."""
    config = recipe_config(entry, k, **train)
    return sscfg.resolve_model(config, "digits", sscfg.model_ids(config, "digits")[0])


def _state_hash(model: torch.nn.Module) -> str:
    return hashlib.sha256(b"".join(t.detach().contiguous().numpy().tobytes() for t in model.state_dict().values())).hexdigest()


# ---------------------------------------------------------------- settings: ids, labels, fingerprints, config errors


#: sha256 of `_model_key(settings, "sha")` as main's code (5a1f942, before these settings) computed it for
#: the models of `_LEGACY_STUDY`: a PGD or plain model without the new keys must keep its fingerprint.
MAIN_KEYS = {
    "natural_k100": "b4392cf1b11c440819ec4374c34cd0ba701dbb4ca3561d0427846b59617ab1aa",
    "noise0.3_k100": "fc4903988373fe45f8c8d803cdd530af98a87a36796a178936ce3e124366c7a0",
    "pgd10-eps0.2-step0.05_k100": "547efba79384467958205f62d2eb3cf362ad450469f8953d23dda63e6b69a52f",
    "pgd2-eps0.2-step0.1-norand_k100": "098fdd7c929f01fa8082e607260da3025c371477602ba36245540719460dbbc7",
}
_LEGACY_STUDY = {
    "dataset": "digits", "architecture": "madry_cnn", "seed": 0,
    "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 50, "squeeze_norm": "batch", "init": "madry"},
    "attack": {"eps": 0.2, "whitebox": [{"name": "pgd", "method": "pgd", "loss": "xent", "steps": 5, "step_size": 0.05}]},
    "blackbox": {"source": "natural_k100", "attacks": []},
    "grid": [{"k": 100}, {"sigma": 0.3, "k": 100}, {"k": 100, "adversarial": {"steps": 10, "step_size": 0.05, "eps": 0.2}},
             {"k": 100, "adversarial": {"steps": 2, "step_size": 0.1, "eps": 0.2, "random_start": False}}],
}


def _legacy_keys(study_block: dict) -> dict[str, str]:
    config = sscfg.validate_config({"default_study": "s", "studies": {"s": copy.deepcopy(study_block)}})
    return {mid: hashlib.sha256(sstrain._model_key(sscfg.resolve_model(config, "s", mid), "sha").encode()).hexdigest()
            for mid in sscfg.model_ids(config, "s")}


def test_a_model_without_the_new_keys_keeps_its_id_and_the_fingerprint_mains_code_gave_it() -> None:
    assert sstrain.TRAIN_CODE_VERSION == "2"  # the literals are of code version 2: a bump retrains anyway
    assert _legacy_keys(_LEGACY_STUDY) == MAIN_KEYS
    # The new keys written out at the values that train as before change nothing either.
    explicit = copy.deepcopy(_LEGACY_STUDY)
    explicit["train"].update(lr_schedule="piecewise", lr_peak=0.7, robust_check=None)
    for entry in explicit["grid"]:
        if entry.get("adversarial"):
            entry["adversarial"].update(method="pgd", eps_warmup=0)
    assert _legacy_keys(explicit) == MAIN_KEYS
    # robust_check acts on adversarial training only: natural and noise models keep their fingerprints with it on.
    guarded = copy.deepcopy(_LEGACY_STUDY)
    guarded["train"]["robust_check"] = {"every": 10}
    keys = _legacy_keys(guarded)
    assert {m: keys[m] for m in ("natural_k100", "noise0.3_k100")} == {m: MAIN_KEYS[m] for m in ("natural_k100", "noise0.3_k100")}
    assert keys["pgd10-eps0.2-step0.05_k100"] != MAIN_KEYS["pgd10-eps0.2-step0.05_k100"]


def test_each_new_setting_changes_the_fingerprint_where_it_acts() -> None:
    base = recipe_settings(PGD3, 10)
    def diff(entry: dict, **train: Any) -> list[str]:
        return sstrain._differences(base, recipe_settings(entry, 10, **train))

    assert diff(PGD3) == []
    assert diff(PGD3, lr_schedule="cyclic") == ["train.lr_peak None -> 0.4", "train.lr_schedule None -> 'cyclic'"]
    assert diff(PGD3, lr_peak=0.5) == []  # inert without the cyclic schedule
    assert diff(PGD3, robust_check={"every": 5}) == ["train.robust_check.every None -> 5", "train.robust_check.n_images None -> 200",
                                                     "train.robust_check.steps None -> 10"]
    warm = {"adversarial": {**PGD3["adversarial"], "eps_warmup": 0.5}}
    assert diff(warm) == ["adversarial.eps_warmup None -> 0.5", "model_id 'pgd3-eps0.2-step0.1_k10' -> 'pgd3-eps0.2-step0.1-warm0.5_k10'"]
    assert "adversarial.method None -> 'fgsm_rs'" in diff(FGSM_RS)


@pytest.mark.parametrize(
    ("adversarial", "mid", "label", "legend"),
    [
        ({"steps": 10, "step_size": 0.05, "eps": 0.2}, "pgd10-eps0.2-step0.05_k1000", "PGD-10 adv. (eps 0.2, step 0.05)",
         "PGD-10 adv. ε=0.2, step 0.05"),
        ({"method": "pgd", "steps": 10, "step_size": 0.05, "eps": 0.2}, "pgd10-eps0.2-step0.05_k1000", "PGD-10 adv. (eps 0.2, step 0.05)",
         "PGD-10 adv. ε=0.2, step 0.05"),
        ({"method": "fgsm_rs", "eps": 0.2}, "fgsmrs-eps0.2-step0.25_k1000", "FGSM-RS adv. (eps 0.2, step 0.25)", "FGSM-RS adv. ε=0.2, step 0.25"),
        ({"method": "fgsm_rs", "eps": 0.3, "step_size": 0.3}, "fgsmrs-eps0.3-step0.3_k1000", "FGSM-RS adv. (eps 0.3, step 0.3)",
         "FGSM-RS adv. ε=0.3, step 0.3"),
        ({"method": "nfgsm", "eps": 0.2}, "nfgsm-eps0.2-step0.2_k1000", "N-FGSM adv. (eps 0.2, step 0.2, noise 2 eps)",
         "N-FGSM adv. ε=0.2, step 0.2, noise 2ε"),
        ({"method": "nfgsm", "eps": 0.3, "noise_factor": 1.5, "eps_warmup": 0.5}, "nfgsm-eps0.3-step0.3-noise1.5-warm0.5_k1000",
         "N-FGSM adv. (eps 0.3, step 0.3, noise 1.5 eps, eps warm-up 0.5 k)", "N-FGSM adv. ε=0.3, step 0.3, noise 1.5ε, ε warm-up 0.5k"),
        ({"steps": 10, "step_size": 0.04, "eps": 0.3, "eps_warmup": 0.5}, "pgd10-eps0.3-step0.04-warm0.5_k1000",
         "PGD-10 adv. (eps 0.3, step 0.04, eps warm-up 0.5 k)", "PGD-10 adv. ε=0.3, step 0.04, ε warm-up 0.5k"),
    ],
)
def test_ids_and_labels_name_the_method(adversarial: dict, mid: str, label: str, legend: str) -> None:
    entry = {"k": 1000, "adversarial": adversarial}
    assert study.model_id(entry) == mid
    assert study.defense_label(entry) == label and study.legend_label(entry) == legend
    assert study.kind(entry) == "adv" and study.coarse_kind(entry) == "adversarial"
    # The validated config fills the single-step defaults in; the id and labels stay the same.
    config = recipe_config({"adversarial": adversarial}, 1000)
    filled = config["studies"]["digits"]["grid"][0]
    assert sscfg.model_ids(config, "digits") == [mid] and study.defense_label(filled) == label


def test_resolved_settings_state_every_new_setting() -> None:
    settings = recipe_settings({"adversarial": {"method": "nfgsm", "eps": 0.2, "eps_warmup": 0.5}}, 10,
                               lr_schedule="cyclic", robust_check={"every": 5})
    assert settings["adversarial"] == {"method": "nfgsm", "steps": 1, "step_size01": pytest.approx(0.2), "eps01": pytest.approx(0.2),
                                       "random_start": True, "eps_warmup": 0.5, "noise_factor": 2}
    assert (settings["train"]["lr_schedule"], settings["train"]["lr_peak"]) == ("cyclic", 0.4)
    assert settings["train"]["robust_check"] == {"every": 5, "n_images": 200, "steps": 10}
    pgd_settings = recipe_settings(PGD3, 10)
    assert pgd_settings["adversarial"]["method"] == "pgd" and pgd_settings["adversarial"]["eps_warmup"] == 0
    assert "noise_factor" not in pgd_settings["adversarial"]
    assert (pgd_settings["train"]["lr_schedule"], pgd_settings["train"]["robust_check"]) == ("piecewise", None)
    for name in ("fashion", "mnist", "cifar10"):  # the paper studies: no schedule or check beyond the paper's
        st = SHIPPED["studies"][name]
        assert st["train"]["lr_schedule"] == "piecewise" and st["train"]["robust_check"] is None, name
        adversarial = [e["adversarial"] for e in st["grid"] if e.get("adversarial")]
        assert all(a["eps_warmup"] == 0 for a in adversarial if a["method"] == "pgd"), name  # PGD as the paper trains it
        assert {a["method"] for a in adversarial} == {"pgd", "fgsm_rs", "nfgsm"}, name  # with both single-step rows
    # the CPU studies turn the guard on (and mnist5k the cyclic schedule of its recipe)
    assert SHIPPED["studies"]["digits"]["train"]["robust_check"] and SHIPPED["studies"]["mnist5k"]["train"]["robust_check"]
    assert SHIPPED["studies"]["mnist5k"]["train"]["lr_schedule"] == "cyclic"


@pytest.mark.parametrize(
    ("train", "entry", "message"),
    [
        ({"robust_check": {"evry": 5}}, None, r"config error: studies\.digits\.train\.robust_check: unknown key \(.*'evry'"),
        ({"robust_check": {"n_images": 50}}, None, r"config error: studies\.digits\.train\.robust_check\.every is missing"),
        ({"robust_check": {"every": 0}}, None, r"config error: studies\.digits\.train\.robust_check\.every = 0: must be >= 1"),
        ({"robust_check": 5}, None, r"config error: studies\.digits\.train\.robust_check = 5: must be of type \['object', 'null'\]"),
        ({"lr_schedule": "cyclical"}, None, r"config error: studies\.digits\.train\.lr_schedule = 'cyclical': must be one of \['piecewise', 'cyclic'\]"),
        ({"lr_peak": 1.0}, None, r"config error: studies\.digits\.train\.lr_peak = 1\.0: must be < 1"),
        ({"lr_schedule": "cyclic", "lr_milestones": [0.5]}, None, r"config error: studies\.digits\.train\.lr_milestones = \[0\.5\]: lr_schedule cyclic takes no milestones"),
        ({}, {"method": "fgsm", "eps": 0.2}, r"config error: studies\.digits\.grid\[1\]\.adversarial\.method = 'fgsm': must be one of \['pgd', 'fgsm_rs', 'nfgsm'\]"),
        ({}, {"method": "fgsm_rs", "eps": 0.2, "eps_warmpu": 0.5}, r"config error: studies\.digits\.grid\[1\]\.adversarial: unknown key \(.*'eps_warmpu'"),
        ({}, {"method": "fgsm_rs", "eps": 0.2, "eps_warmup": 2}, r"config error: studies\.digits\.grid\[1\]\.adversarial\.eps_warmup = 2: must be <= 1"),
        ({}, {"method": "fgsm_rs", "eps": 0.2, "steps": 3}, r"config error: studies\.digits\.grid\[1\]\.adversarial\.steps = 3: method fgsm_rs takes one step"),
        ({}, {"method": "fgsm_rs", "eps": 0.2, "noise_factor": 2}, r"config error: studies\.digits\.grid\[1\]\.adversarial\.noise_factor = 2: only method nfgsm"),
        ({}, {"steps": 3, "step_size": 0.1, "eps": 0.2, "noise_factor": 2}, r"grid\[1\]\.adversarial\.noise_factor = 2: only method nfgsm has noise \(method is 'pgd'\)"),
        ({}, {"method": "nfgsm", "eps": 0.2, "random_start": False}, r"grid\[1\]\.adversarial\.random_start = false: method nfgsm always starts"),
        ({}, {"steps": 3, "eps": 0.2}, r"config error: studies\.digits\.grid\[1\]\.adversarial\.step_size is missing"),
        ({}, {"method": "pgd", "step_size": 0.1, "eps": 0.2}, r"config error: studies\.digits\.grid\[1\]\.adversarial\.steps is missing"),
    ],
)
def test_a_bad_recipe_setting_is_a_one_line_config_error_naming_the_key(train: dict, entry: dict | None, message: str) -> None:
    overrides: dict[str, Any] = {"studies": {"digits": {"train": train}}}
    if entry is not None:
        overrides["studies"]["digits"]["grid"] = [{"k": 1500}, {"k": 10, "adversarial": entry}]
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["studies"]["digits"]["train"].pop("robust_check", None)  # the demo's own check would merge with the case's
    with pytest.raises(sscfg.ConfigError, match=message) as err:
        sscfg.validate_config(sscfg.merge(raw, overrides))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- the cyclic learning rate


def test_the_cyclic_schedule_is_0_at_the_start_lr_at_its_peak_and_0_at_the_end() -> None:
    assert cyclic_lr(5e-3, 0.4, 0.0) == 0.0
    assert cyclic_lr(5e-3, 0.4, 0.4) == pytest.approx(5e-3, rel=1e-12)
    assert cyclic_lr(5e-3, 0.4, 1.0) == 0.0
    assert cyclic_lr(5e-3, 0.4, 0.2) == pytest.approx(2.5e-3) and cyclic_lr(5e-3, 0.4, 0.7) == pytest.approx(2.5e-3)
    cfg = {"lr": 5e-3, "lr_schedule": "cyclic", "lr_peak": 0.4}
    values = [learning_rate(cfg, it, 10) for it in range(10)]  # iteration it uses the value at (it + 1) / k, as Wong et al.
    assert values[0] == pytest.approx(5e-3 * 0.1 / 0.4) and values[3] == pytest.approx(5e-3) and values[-1] == 0.0
    assert values[:4] == sorted(values[:4]) and values[3:] == sorted(values[3:], reverse=True)
    assert learning_rate({"lr": 1e-3}, 5, 10) == 1e-3 and learning_rate({"lr": 1e-3, "lr_schedule": "piecewise"}, 5, 10) == 1e-3


def _record_lr(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The learning rate of every optimizer step training takes (a step pre-hook on the real optimizer)."""
    seen: list[float] = []
    real = sstrain.make_optimizer

    def make(model: torch.nn.Module, cfg: dict) -> torch.optim.Optimizer:
        optimizer = real(model, cfg)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
        return optimizer

    monkeypatch.setattr(sstrain, "make_optimizer", make)
    return seen


def test_training_steps_with_the_cyclic_learning_rate(digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_lr(monkeypatch)
    settings = recipe_settings({}, 10, lr=5e-3, lr_schedule="cyclic", lr_peak=0.5, log_every=5)
    _, metrics = train_model(settings, digits, tmp_path / "cyclic", CPU, log=_quiet)
    expected = [5e-3 * min((it + 1) / 5, (10 - it - 1) / 5) for it in range(10)]
    assert seen == pytest.approx(expected, abs=1e-15)
    assert seen[4] == pytest.approx(5e-3) and seen[-1] == 0.0
    assert [h["lr"] for h in metrics["history"]] == pytest.approx([5e-3, 0.0])
    seen.clear()
    train_model(recipe_settings({}, 10, lr=5e-3), digits, tmp_path / "flat", CPU, log=_quiet)
    assert seen == [5e-3] * 10  # piecewise without milestones: today's constant rate


# ---------------------------------------------------------------- FGSM-RS and N-FGSM: the perturbations


def _toy_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def test_a_random_start_fgsm_perturbation_stays_in_the_eps_ball_and_the_pixel_range() -> None:
    model, gen = _toy_model(), torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 8, 8, generator=gen)  # pixels anywhere in [0, 1], many near its ends
    y = torch.randint(0, 10, (256,), generator=gen)
    x_adv = pgd(model, x, y, 0.2, 1.25 * 0.2, 1, "xent", True, generator=gen)  # as _training_attack crafts fgsm_rs
    check_budget(x, x_adv, 0.2)
    assert (x_adv - x).abs().amax().item() == pytest.approx(0.2, abs=1e-6)  # the 1.25 eps step reaches the ball's edge


def test_an_nfgsm_perturbation_may_leave_the_eps_ball_by_up_to_noise_factor_eps_plus_step() -> None:
    """N-FGSM is not projected back: from a clean image it may lie up to noise_factor * eps + step away
    (2 * 0.1 + 0.1 = 0.3 here, three times eps), never outside [0, 1]."""
    model, gen = _toy_model(), torch.Generator().manual_seed(0)
    x = torch.full((256, 1, 8, 8), 0.5)  # mid-grey: no clipping to [0, 1] hides the distance
    y = torch.randint(0, 10, (256,), generator=gen)
    x_adv = nfgsm(model, x, y, eps=0.1, step_size=0.1, noise_factor=2.0, generator=gen)
    bound = nfgsm_bound(0.1, 0.1, 2.0)
    assert bound == pytest.approx(0.3)
    distance = (x_adv - x).abs().amax().item()
    assert 0.25 < distance <= bound + 1e-6  # far outside the eps ball, inside its own bound
    check_budget(x, x_adv, bound)
    with pytest.raises(AttackBudgetError, match="exceeds eps"):
        check_budget(x, x_adv, 0.1)
    x_edge = torch.rand(256, 1, 8, 8, generator=gen).round()  # black and white pixels: clipped to [0, 1]
    x_adv = nfgsm(model, x_edge, y, eps=0.1, step_size=0.1, noise_factor=2.0, generator=gen)
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


def _record_training_batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """Every (clean batch, adversarial batch, bound) the training loop checks (the real check runs)."""
    seen: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    real = sstrain.budget_excess

    def excess(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
        seen.append((x.clone(), x_adv.clone(), eps))
        return real(x, x_adv, eps)

    monkeypatch.setattr(sstrain, "budget_excess", excess)
    return seen


def _trained_images(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """The images of every training forward (the one the loss and optimizer step use)."""
    seen: list[torch.Tensor] = []
    real = sstrain._forward_loss

    def forward_loss(model: Any, settings: dict, device: torch.device) -> Any:
        inner = real(model, settings, device)

        def spy(xb: torch.Tensor, yb: torch.Tensor) -> Any:
            seen.append(xb.detach().clone())
            return inner(xb, yb)
        return spy

    monkeypatch.setattr(sstrain, "_forward_loss", forward_loss)
    return seen


def test_fgsm_rs_training_trains_on_examples_in_the_eps_ball(digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checked, trained = _record_training_batches(monkeypatch), _trained_images(monkeypatch)
    train_model(recipe_settings(FGSM_RS, 4), digits, tmp_path, CPU, log=_quiet)
    assert len(checked) == len(trained) == 4
    for (clean, x_adv, bound), images in zip(checked, trained):
        assert bound == pytest.approx(0.2) and torch.equal(images, x_adv.contiguous(memory_format=torch.channels_last))
        check_budget(clean, images, 0.2)
        assert (images - clean).abs().amax().item() == pytest.approx(0.2, abs=1e-6)  # attacked up to the edge of the ball


def test_fgsm_rs_trains_as_one_step_pgd_from_a_random_start_with_its_step(digits: Dataset, tmp_path: Path) -> None:
    """Wong et al.'s FGSM-RS is PGD-1 from a random start with step 1.25 eps: the same model, bit for bit,
    under another id (method names the recipe; the ids differ)."""
    fgsm, _ = train_model(recipe_settings(FGSM_RS, 6), digits, tmp_path / "fgsm", CPU, log=_quiet)
    pgd1, _ = train_model(recipe_settings({"adversarial": {"steps": 1, "step_size": 0.25, "eps": 0.2}}, 6), digits, tmp_path / "pgd1", CPU, log=_quiet)
    assert _state_hash(fgsm) == _state_hash(pgd1)
    assert study.model_id({"k": 6, **FGSM_RS}) != study.model_id({"k": 6, "adversarial": {"steps": 1, "step_size": 0.25, "eps": 0.2}})


def test_nfgsm_training_leaves_the_eps_ball_within_its_own_bound(digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checked, trained = _record_training_batches(monkeypatch), _trained_images(monkeypatch)
    train_model(recipe_settings(NFGSM, 4), digits, tmp_path, CPU, log=_quiet)
    assert len(checked) == len(trained) == 4
    for (clean, x_adv, bound), images in zip(checked, trained):
        assert bound == pytest.approx(2 * 0.2 + 0.2)  # noise_factor * eps + step
        assert torch.equal(images, x_adv.contiguous(memory_format=torch.channels_last))
        check_budget(clean, images, bound)
        assert (images - clean).abs().amax().item() > 0.2 + 0.05  # outside the eps ball: no projection back


def test_training_checks_each_method_against_the_bound_it_really_has(digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check never skips N-FGSM: told its bound were eps, its batches fail it."""
    monkeypatch.setattr(sstrain, "nfgsm_bound", lambda eps, step, factor: eps)
    with pytest.raises(AttackBudgetError, match=r"training-time N-FGSM batch before iteration 2 left its L-inf ball \(N-FGSM's: noise_factor"):
        train_model(recipe_settings(NFGSM, 2), digits, tmp_path / "nfgsm", CPU, log=_quiet)
    settings = recipe_settings(FGSM_RS, 2)
    settings["adversarial"]["eps01"] = -0.05  # no projection can meet it
    with pytest.raises(AttackBudgetError, match="training-time FGSM-RS batch before iteration 2"):
        train_model(settings, digits, tmp_path / "fgsm", CPU, log=_quiet)


@pytest.mark.parametrize(("entry", "bound_per_eps"), [(FGSM_RS, 1.0), (NFGSM, 3.0), (PGD3, 1.0)], ids=["fgsm_rs", "nfgsm", "pgd"])
def test_the_eps_warmup_raises_eps_linearly_and_the_step_with_it(entry: dict, bound_per_eps: float, digits: Dataset, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """eps_warmup 0.5 of k = 8: eps_t = eps * min(1, t / 4) at iteration t = 0..7."""
    checked = _record_training_batches(monkeypatch)
    warm = {"adversarial": {**entry["adversarial"], "eps_warmup": 0.5}}
    train_model(recipe_settings(warm, 8), digits, tmp_path / "warm", CPU, log=_quiet)
    eps_t = [0.2 * min(1.0, t / 4) for t in range(8)]
    assert [bound for _, _, bound in checked] == pytest.approx([bound_per_eps * e for e in eps_t])
    for (clean, x_adv, bound), eps in zip(checked, eps_t):
        distance = (x_adv - clean).abs().amax().item()
        assert distance <= bound + 1e-6
        if entry is not NFGSM:
            assert distance == pytest.approx(eps, abs=1e-6)  # the step scales with eps_t: it still reaches the ball's edge
        else:
            assert distance > eps or eps == 0
    checked.clear()
    train_model(recipe_settings(entry, 8), digits, tmp_path / "flat", CPU, log=_quiet)
    assert [bound for _, _, bound in checked] == pytest.approx([bound_per_eps * 0.2] * 8)  # off: eps from the start


# ---------------------------------------------------------------- exact pass counts


def _count_passes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Forward calls of the model with autograd on (forward-backward passes), in training mode and in eval mode."""
    counts = {"train": 0, "eval": 0}
    real = sstrain.build_model

    def build(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = real(*args, **kwargs)

        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if torch.is_grad_enabled():
                counts["train" if module.training else "eval"] += 1

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(sstrain, "build_model", build)
    return counts


@pytest.mark.parametrize(("entry", "per_iteration"), [({}, 1), ({"alpha": 0.95, "sigma": 0.3}, 1), (FGSM_RS, 2), (NFGSM, 2), (PGD3, 4)],
                         ids=["natural", "regularised", "fgsm_rs", "nfgsm", "pgd3"])
def test_pass_counts_are_exact(entry: dict, per_iteration: int, digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = _count_passes(monkeypatch)
    _, metrics = train_model(recipe_settings(entry, 5), digits, tmp_path, CPU, log=_quiet)
    assert counts == {"train": 5 * per_iteration, "eval": 0}
    assert (metrics["passes_per_iteration"], metrics["training_passes"], metrics["check_passes"]) == (per_iteration, 5 * per_iteration, 0)
    assert metrics["passes_per_iteration"] == study.passes_per_iteration(recipe_settings(entry, 5)["adversarial"])


def test_robust_check_passes_are_counted_exactly(digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks at 3, 6 and 7 (= k), each 4 PGD steps over 120 images in chunks of the batch size 50 (3 chunks)."""
    counts = _count_passes(monkeypatch)
    settings = recipe_settings(FGSM_RS, 7, robust_check={"every": 3, "n_images": 120, "steps": 4})
    _, metrics = train_model(settings, digits, tmp_path, CPU, log=_quiet)
    assert metrics["check_passes"] == 3 * 4 * 3 == counts["eval"]
    assert metrics["training_passes"] == 7 * 2 == counts["train"]


# ---------------------------------------------------------------- the robust check (guard against catastrophic overfitting)


def test_the_overfitting_rule() -> None:
    def checks(*values: float) -> list[dict[str, float]]:
        return [{"iteration": 10 * (i + 1), "accuracy": v} for i, v in enumerate(values)]

    assert overfitting_verdict(checks(30, 60, 40, 2))[0]  # fell from 60 to 2: below 10% and below 0.2 x 60
    assert "fell from 60.0% (iteration 20) to 2.0% (iteration 40)" in overfitting_verdict(checks(30, 60, 40, 2))[1]
    assert not overfitting_verdict(checks(30, 60, 40, 11))[0]  # still above 10%
    assert not overfitting_verdict(checks(30, 40, 9))[0]  # below 10% but not below 0.2 x 40 = 8
    assert not overfitting_verdict(checks(2, 9, 1))[0]  # never robust (best below 10%): nothing fell
    assert not overfitting_verdict(checks(5, 20, 45))[0] and not overfitting_verdict([])[0]


def _scripted_check(monkeypatch: pytest.MonkeyPatch, accuracies: Iterator[float], states: list[dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
    """Run the real check (its passes, its random draws), then report the next scripted accuracy instead of
    its own; keep the weights each check saw. Returns the arguments of every call."""
    calls: list[dict[str, Any]] = []
    real = REAL_CHECK

    def check(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int, batch_size: int) -> tuple[float, float]:
        _, clean = real(model, x, y, eps, steps, seed, batch_size)
        calls.append({"x": x.clone(), "y": y.clone(), "eps": eps, "steps": steps})
        states.append({name: t.clone() for name, t in model.state_dict().items()})
        return next(accuracies), clean

    monkeypatch.setattr(sstrain, "_robust_check", check)
    return calls


def test_the_guard_flags_a_planted_collapse_and_keeps_the_best_checkpoint(digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    states: list[dict[str, torch.Tensor]] = []
    calls = _scripted_check(monkeypatch, iter([30.0, 60.0, 40.0, 2.0]), states)
    settings = recipe_settings(FGSM_RS, 8, robust_check={"every": 2, "n_images": 100, "steps": 2}, log_every=3)
    logs: list[str] = []
    model, metrics = train_model(settings, digits, tmp_path, CPU, log=logs.append)
    guard = metrics["guard"]
    assert [c["iteration"] for c in guard["checks"]] == [2, 4, 6, 8] and [c["accuracy"] for c in guard["checks"]] == [30, 60, 40, 2]
    assert (metrics["best_iteration"], metrics["best_check_accuracy"]) == (4, 60.0) == (guard["best_iteration"], guard["best_check_accuracy"])
    assert guard["overfitting_detected"] and guard["reason"].startswith("catastrophic overfitting: the robust check fell from 60.0%")
    assert any(line.startswith("WARNING: catastrophic overfitting") for line in logs)
    # The weights returned (and saved) are those the best check saw, not the last iteration's.
    best, last = states[1], states[3]
    assert all(torch.equal(model.state_dict()[name], best[name]) for name in best)
    assert any(not torch.equal(best[name], last[name]) for name in best)
    # The history holds every check; a check is also a log line (iterations 3 and 6 log anyway).
    assert [(h["iteration"], h.get("robust_check")) for h in metrics["history"]] == [(2, 30), (3, None), (4, 60), (6, 40), (8, 2)]
    # The check: PGD at the training eps on the last n_images of the training split, which training never sees.
    assert torch.equal(calls[0]["x"], digits.scale(digits.x_train[-100:]).contiguous(memory_format=torch.channels_last))
    assert torch.equal(calls[0]["y"], digits.y_train[-100:]) and calls[0]["eps"] == pytest.approx(0.2) and calls[0]["steps"] == 2
    assert guard["images"] == f"training images {len(digits.x_train) - 100}..{len(digits.x_train) - 1} (the last 100 of the training split), held out of training"
    # The evaluation record then marks it like a collapsed model, and the tables print the mark.
    status = training_status(99.0, 10, guard)
    assert status["overfitted"] and not status["collapsed"] and "catastrophic overfitting" in status["reason"]
    record = {"model_id": "m", "training": status}
    assert tables.row_note(record) == tables.OVERFITTED


def test_an_overfitted_model_is_marked_by_the_evaluate_stage(digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train (planted collapse of the check) -> metrics.json -> `python -m smoothsqueeze evaluate --metrics` -> record -> row mark."""
    from smoothsqueeze.checkpoints import save_model
    from smoothsqueeze.cli import main

    _scripted_check(monkeypatch, iter([40.0, 1.0]), [])
    entry = {"k": 4, **FGSM_RS}
    model, metrics = train_model(recipe_settings(FGSM_RS, 4, robust_check={"every": 2, "n_images": 60, "steps": 1}), digits, tmp_path / "w", CPU, log=_quiet)
    ckpt, metrics_path, data_path, out = tmp_path / "model.pt", tmp_path / "metrics.json", tmp_path / "digits.npz", tmp_path / "record.json"
    save_model(ckpt, model, "madry_cnn", digits.image_shape, 10)
    metrics_path.write_text(json.dumps(metrics))
    prepare_digits(data_path)
    info = {"study": "digits", "model_id": study.model_id(entry), "entry": entry, "eps": 0.2, "blackbox_source": "natural_k1500"}
    spec = json.dumps({"whitebox": [], "batch_size": 500, "max_examples": 20, "seed": 0, "info": info})
    args = ["evaluate", "--spec", spec, "--checkpoint", str(ckpt), "--data", str(data_path), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--metrics", str(metrics_path)]) == 0
    record = json.loads(out.read_text())
    assert record["training"]["overfitted"] and record["training"]["overfitting_reason"] == metrics["guard"]["reason"]
    row = tables.build_row(record)
    assert tables.OVERFITTED in tables.marks(row["note"])  # (4 iterations: training collapsed too)
    _, frame = tables.study_frame("whitebox", pd.DataFrame([row]), {"whitebox": [], "blackbox": []})
    assert tables.OVERFITTED in tables.marks(frame["note"][0])  # kept in tables without black-box columns too
    assert main(args) == 0  # without --metrics (a hand-run evaluation): not marked
    assert not json.loads(out.read_text())["training"]["overfitted"]


def test_the_guard_trains_on_the_rest_of_the_training_split(digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real = sstrain.BatchSampler

    class Sampler(real):  # type: ignore[misc, valid-type]
        def __init__(self, n: int, *args: Any) -> None:
            sizes.append(n)
            super().__init__(n, *args)

    monkeypatch.setattr(sstrain, "BatchSampler", Sampler)
    train_model(recipe_settings(FGSM_RS, 2, robust_check={"every": 2, "n_images": 150}, validation_holdout=100), digits, tmp_path / "a", CPU, log=_quiet)
    train_model(recipe_settings(FGSM_RS, 2, validation_holdout=100), digits, tmp_path / "b", CPU, log=_quiet)
    train_model(recipe_settings({}, 2, robust_check={"every": 2, "n_images": 150}), digits, tmp_path / "c", CPU, log=_quiet)  # inert: natural
    n = len(digits.x_train)
    assert sizes == [n - 100 - 150, n - 100, n]
    with pytest.raises(Exception, match=r"train\.robust_check\.n_images = 1400 \(with validation_holdout 100\) leaves no training images"):
        train_model(recipe_settings(FGSM_RS, 2, robust_check={"every": 2, "n_images": 1400}, validation_holdout=100), digits, tmp_path / "d", CPU, log=_quiet)


def test_the_real_check_measures_pgd_below_clean_accuracy(digits: Dataset, tmp_path: Path) -> None:
    _, metrics = train_model(recipe_settings(FGSM_RS, 60, robust_check={"every": 30, "n_images": 100, "steps": 5}), digits, tmp_path, CPU, log=_quiet)
    checks = metrics["guard"]["checks"]
    assert [c["iteration"] for c in checks] == [30, 60]
    assert all(0 <= c["accuracy"] < c["clean_accuracy"] for c in checks)
    assert metrics["guard"]["check"]["step_size01"] == pytest.approx(2.5 * 0.2 / 5)


def test_resume_with_the_guard_is_bit_identical(digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks at 4, 8, 12, the best at 4; a resume point at 5, then a crash: the resumed run must still return
    iteration 4's weights (the best state is in the resume point), bit for bit as an uninterrupted run."""
    settings = recipe_settings(NFGSM, 12, robust_check={"every": 4, "n_images": 100, "steps": 2}, checkpoint_every=5, log_every=3)
    scripted = [50.0, 20.0, 30.0]

    states: list[dict[str, torch.Tensor]] = []
    _scripted_check(monkeypatch, iter(scripted), states)
    whole, whole_metrics = train_model(copy.deepcopy(settings), digits, tmp_path / "whole", CPU, log=_quiet)

    class Crash(Exception):
        pass

    real_save = sstrain.save_torch

    def save_then_crash(path: Path, obj: dict) -> None:
        real_save(path, obj)
        raise Crash

    answers = iter(scripted)
    _scripted_check(monkeypatch, answers, [])
    monkeypatch.setattr(sstrain, "save_torch", save_then_crash)
    with pytest.raises(Crash):
        train_model(copy.deepcopy(settings), digits, tmp_path / "resumed", CPU, log=_quiet)
    assert (tmp_path / "resumed" / sstrain.RESUME_NAME).exists()
    monkeypatch.setattr(sstrain, "save_torch", real_save)
    logs: list[str] = []
    resumed, resumed_metrics = train_model(copy.deepcopy(settings), digits, tmp_path / "resumed", CPU, log=logs.append)
    assert any(line.startswith("resuming from") and "at iteration 5/12" in line for line in logs), logs
    assert _state_hash(resumed) == _state_hash(whole)
    assert all(torch.equal(whole.state_dict()[name], states[0][name]) for name in states[0])  # iteration 4's weights
    assert json.dumps(resumed_metrics["history"]) == json.dumps(whole_metrics["history"])
    assert resumed_metrics["guard"] == whole_metrics["guard"] and resumed_metrics["best_iteration"] == 4


def test_settings_and_metrics_files_state_the_recipe(tmp_path: Path) -> None:
    """The train stage writes every setting into settings.json, and passes and the guard into metrics.json."""
    data_path = tmp_path / "digits.npz"
    prepare_digits(data_path)
    settings = recipe_settings({"adversarial": {"method": "fgsm_rs", "eps": 0.2, "eps_warmup": 0.5}}, 6, lr_schedule="cyclic",
                               robust_check={"every": 3, "n_images": 60, "steps": 2})
    out = tmp_path / "model"
    sstrain.run(settings, data_path, out / "model.pt", out / "metrics.json", out / "settings.json", device="cpu")
    written = json.loads((out / "settings.json").read_text())["settings"]
    assert written["adversarial"]["method"] == "fgsm_rs" and written["adversarial"]["eps_warmup"] == 0.5
    assert written["train"]["lr_schedule"] == "cyclic" and written["train"]["lr_peak"] == 0.4
    assert written["train"]["robust_check"] == {"every": 3, "n_images": 60, "steps": 2}
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["passes_per_iteration"], metrics["training_passes"], metrics["check_passes"]) == (2, 12, 2 * 2 * 2)
    assert metrics["guard"]["overfitting_detected"] in (True, False) and metrics["best_iteration"] in (3, 6)


# ---------------------------------------------------------------- where the recipes show: figures' roles, cost


def test_single_step_models_fill_no_pgd_role_of_the_paper_figures() -> None:
    entries = {study.model_id(e): e for e in [{"k": 10}, {"k": 10, "adversarial": {"steps": 2, "step_size": 0.1, "eps": 0.2}},
                                              {"k": 10, "adversarial": {"steps": 10, "step_size": 0.05, "eps": 0.2}},
                                              {"k": 10, "adversarial": {"method": "fgsm_rs", "eps": 0.2, "steps": 1}}]}
    weak = study.select(entries)["fig2_logits_adversarial"]["models"]
    assert weak == ["natural_k10", "pgd2-eps0.2-step0.1_k10", "pgd10-eps0.2-step0.05_k10"]


def test_the_cost_table_sets_passes_and_seconds_beside_the_natural_model_of_the_same_k(tmp_path: Path) -> None:
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"

    def model(mid: str, entry: dict, k: int, cpu: float, metrics: dict) -> dict[str, str]:
        folder = tmp_path / mid
        folder.mkdir()
        adv = study.resolve_adversarial(entry["adversarial"], 1) if entry.get("adversarial") else None
        (folder / "settings.json").write_text(json.dumps({"settings": {"model_id": mid, "k": k, "config_entry": entry, "adversarial": adv}}))
        (folder / "metrics.json").write_text(json.dumps({"wall_seconds": cpu, "cpu_seconds": cpu, **metrics}))
        for name in ("train.tsv", "eval.tsv"):
            (folder / name).write_text(header + f"{cpu}\t0:00:10\t800\t1\t1\t1\t0\t0\t50\t{cpu}\n")
        return {"settings": str(folder / "settings.json"), "metrics": str(folder / "metrics.json"),
                "train_benchmark": str(folder / "train.tsv"), "evaluate_benchmark": str(folder / "eval.tsv")}

    fgsm = {"k": 100, "adversarial": {"method": "fgsm_rs", "eps": 0.2, "steps": 1, "step_size": 0.25}}
    frame = cost.cost_table([
        model("natural_k100", {"k": 100}, 100, 10.0, {}),  # a model trained before metrics counted passes
        model("fgsmrs", fgsm, 100, 17.0, {"passes_per_iteration": 2, "training_passes": 200, "check_passes": 40}),
        model("pgd10", {"k": 100, "adversarial": {"steps": 10, "step_size": 0.05, "eps": 0.2}}, 100, 80.0, {}),
        model("pgd10_k50", {"k": 50, "adversarial": {"steps": 10, "step_size": 0.05, "eps": 0.2}}, 50, 40.0, {}),
    ]).set_index("model")
    assert frame.loc["fgsmrs", "kind"] == "adversarial (FGSM-RS)" and frame.loc["pgd10", "kind"] == "adversarial (PGD-10)"
    assert list(frame["passes_per_iteration"]) == [1, 2, 11, 11] and list(frame["total_passes"]) == [100, 240, 1100, 550]
    assert frame.loc["fgsmrs", "passes_vs_natural"] == pytest.approx(2.4) and frame.loc["pgd10", "passes_vs_natural"] == pytest.approx(11)
    assert frame.loc["fgsmrs", "cpu_s_vs_natural"] == pytest.approx(1.7) and frame.loc["pgd10", "wall_s_vs_natural"] == pytest.approx(8)
    assert math.isnan(frame.loc["pgd10_k50", "passes_vs_natural"])  # no natural model of k 50


def test_a_single_step_model_is_never_the_papers_pgd_baseline() -> None:
    """paper.match's Madry row is PGD-trained: an FGSM-RS model at the paper's eps is no candidate, PGD-2 is."""
    from smoothsqueeze import paper

    def rows(*adversarial: dict) -> pd.DataFrame:
        entries = [{"k": 100}] + [{"k": 100, "adversarial": a} for a in adversarial]
        return pd.DataFrame([tables.build_row({"study": "s", "model_id": study.model_id(e), "entry": e, "accuracy": {"train": 0, "test": 0},
                                               "eps": 0.3, "blackbox_source": "natural_k100"}) for e in entries])

    fgsm = {"method": "fgsm_rs", "eps": 0.3, "steps": 1, "step_size": 0.375}
    assert paper._adversarial(rows(fgsm), 0.3, None) is None
    assert paper._adversarial(rows(fgsm, {"steps": 2, "step_size": 0.2, "eps": 0.3}), 0.3, None) == "pgd2-eps0.3-step0.2_k100"
