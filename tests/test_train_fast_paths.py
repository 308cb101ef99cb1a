"""The GPU fast paths of training, off by default until a GPU run measures them, run here on the CPU:
train.compile_mode and train.compile_loss (torch.compile), train.adversarial_amp (training-time PGD
under the training forward's bf16 autocast), and the rule that these keys keep older finished
models valid."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import smoothsqueeze.train as sstrain
from conftest import ROOT, digits_settings
from smoothsqueeze import config as sscfg
from smoothsqueeze.attacks import AttackBudgetError, budget_excess, check_budget, pgd
from smoothsqueeze.data import Dataset
from smoothsqueeze.errors import PipelineError
from smoothsqueeze.train import train_model

NEW_KEYS = {"compile_mode": "default", "compile_loss": False, "adversarial_amp": False}
ADVERSARIAL = {"adversarial": {"steps": 10, "step_size": 0.05, "eps": 0.2}}
CPU = torch.device("cpu")


def _quiet(_: str) -> None:
    pass


def _max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ---------------------------------------------------------------- settings: schema, defaults, finished models


def test_the_new_keys_are_off_by_default_and_say_why() -> None:
    train_schema = sscfg.load_schema()["$defs"]["study"]["properties"]["train"]["properties"]
    for key, default in NEW_KEYS.items():
        assert train_schema[key]["default"] == default, key
        assert "Off by default: not yet measured on a GPU" in train_schema[key]["description"], key
        assert sstrain._ADDED_TRAIN_SETTINGS[key] == default, key
    config = sscfg.load_config(ROOT / "config.yaml")
    for name, study in config["studies"].items():  # filled in by the schema, off in every study
        assert {key: study["train"][key] for key in NEW_KEYS} == NEW_KEYS, name
        assert not study["train"].get("compile"), name


@pytest.mark.parametrize(("entry", "train"), [({}, {}), ({}, {"compile": True}), (ADVERSARIAL, {"amp": True})],
                         ids=["natural", "compiled", "adversarial"])
def test_models_trained_before_the_new_keys_keep_their_settings(entry: dict, train: dict) -> None:
    """A finished model's settings.json from before these keys lacks them: with their defaults it is the same model."""
    new = digits_settings(entry, 10, **train)
    assert {key: new["train"][key] for key in NEW_KEYS} == NEW_KEYS
    old = copy.deepcopy(new)
    for key in NEW_KEYS:
        del old["train"][key]
    assert sstrain._differences(old, new) == []
    assert sstrain._model_key(old, "sha") == sstrain._model_key(new, "sha")


def test_a_new_key_changes_the_model_only_where_it_acts() -> None:
    """compile_mode / compile_loss act with compile only; adversarial_amp on adversarial models only."""
    def differences(entry: dict, **train: Any) -> list[str]:
        return sstrain._differences(digits_settings(entry, 10, amp=True), digits_settings(entry, 10, amp=True, **train))

    assert differences({}, compile_mode="reduce-overhead", compile_loss=True) == []
    assert differences({}, compile=True, compile_mode="reduce-overhead") == [
        "train.compile False -> True", "train.compile_mode None -> 'reduce-overhead'"]
    assert differences({}, compile=True, compile_loss=True) == ["train.compile False -> True", "train.compile_loss None -> True"]
    assert differences({}, adversarial_amp=True) == []  # a natural model does not craft PGD: still valid
    assert differences(ADVERSARIAL, adversarial_amp=True) == ["train.adversarial_amp None -> True"]


def test_adversarial_amp_without_amp_is_an_error(digits: Dataset, tmp_path: Path) -> None:
    """Not a silent no-op: in the config (one line at load time) and in train_model itself."""
    with pytest.raises(sscfg.ConfigError, match=r"studies\.digits\.train\.adversarial_amp = true needs train\.amp = true"):
        sscfg.load_config(ROOT / "config.yaml", {"studies": {"digits": {"train": {"adversarial_amp": True}}}})
    sscfg.load_config(ROOT / "config.yaml", {"studies": {"digits": {"train": {"adversarial_amp": True, "amp": True}}}})
    with pytest.raises(PipelineError, match="adversarial_amp needs train.amp"):
        train_model(digits_settings(ADVERSARIAL, 1, adversarial_amp=True, amp=False), digits, tmp_path, CPU, log=_quiet)


# ---------------------------------------------------------------- adversarial_amp: training-time PGD in bf16


def test_budget_excess_measures_how_far_a_batch_left_its_ball() -> None:
    x = torch.full((2, 1, 2, 2), 0.5)
    assert budget_excess(x, x + 0.1, 0.1).item() <= 1e-7
    assert budget_excess(x, x + 0.15, 0.1).item() == pytest.approx(0.05, abs=1e-6)
    assert budget_excess(torch.zeros_like(x), torch.full_like(x, -0.05), 0.1).item() == pytest.approx(0.05, abs=1e-6)  # below 0
    assert budget_excess(torch.ones_like(x), torch.full_like(x, 1.02), 0.1).item() == pytest.approx(0.02, abs=1e-6)  # above 1
    assert budget_excess(x, x.masked_fill(x > 0, float("nan")), 0.1).item() == float("inf")


def test_training_stops_when_its_pgd_leaves_the_budget(digits: Dataset, tmp_path: Path) -> None:
    """A budget no projection can meet (eps < 0) is caught by the loop's device-side check at the log line."""
    settings = digits_settings({"adversarial": {"steps": 1, "step_size": 0.05, "eps": 0.2}}, 2)
    settings["adversarial"]["eps01"] = -0.05
    with pytest.raises(AttackBudgetError, match="training-time PGD batch before iteration 2"):
        train_model(settings, digits, tmp_path, CPU, log=_quiet)


def _record_training_batches(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Spies (the real functions run): every (clean, adversarial, eps) that the loop checks, every
    image batch the training forward sees, and the dtype PGD's forward passes compute in."""
    seen: dict[str, list] = {"checked": [], "trained": [], "pgd_dtypes": []}
    real_excess, real_build = sstrain.budget_excess, sstrain.build_model

    def excess(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
        seen["checked"].append((x.clone(), x_adv.clone(), eps))
        return real_excess(x, x_adv, eps)

    def build(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = real_build(*args, **kwargs)

        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if inputs[0].requires_grad:  # PGD's passes (the input gradient); the training pass's images need none
                seen["pgd_dtypes"].append(output.dtype)
            elif module.training and torch.is_grad_enabled():
                seen["trained"].append(inputs[0].detach().clone())

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(sstrain, "budget_excess", excess)
    monkeypatch.setattr(sstrain, "build_model", build)
    return seen


@pytest.mark.parametrize("adversarial_amp", [False, True])
def test_training_time_pgd_stays_in_its_budget_in_either_precision(adversarial_amp: bool, digits: Dataset, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_training_batches(monkeypatch)
    settings = digits_settings(ADVERSARIAL, 6, amp=True, adversarial_amp=adversarial_amp)
    _, metrics = train_model(settings, digits, tmp_path, CPU, log=_quiet)
    assert torch.isfinite(torch.tensor(metrics["history"][-1]["loss"]))
    assert len(seen["checked"]) == len(seen["trained"]) == 6
    assert set(seen["pgd_dtypes"]) == {torch.bfloat16 if adversarial_amp else torch.float32}
    for (clean, x_adv, eps), trained in zip(seen["checked"], seen["trained"]):
        assert x_adv.dtype == trained.dtype == torch.float32  # the projection stays fp32
        assert torch.equal(trained, x_adv)  # the training forward sees the checked batch (sigma 0)
        check_budget(clean, trained, eps)
        assert (trained - clean).abs().amax().item() > 0.5 * eps  # attacked, not the clean batch


def test_pgd_under_bf16_autocast_is_about_as_strong_as_fp32(digits: Dataset, tmp_path: Path) -> None:
    """From the same random start: many pixels differ (bf16 gradient signs), the loss reached barely does."""
    model, _ = train_model(digits_settings({}, 100), digits, tmp_path, CPU, log=_quiet)
    x, y = digits.scale(digits.x_test[:300]), digits.y_test[:300]
    a = pgd(model, x, y, 0.2, 0.05, 10, "xent", True, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b = pgd(model, x, y, 0.2, 0.05, 10, "xent", True, generator=torch.Generator().manual_seed(0))
    check_budget(x, b, 0.2)
    assert b.dtype == torch.float32
    assert (a != b).float().mean().item() > 0.01
    with torch.no_grad():
        logits_a, logits_b = model(a), model(b)
    loss_a, loss_b = F.cross_entropy(logits_a, y).item(), F.cross_entropy(logits_b, y).item()
    assert loss_b == pytest.approx(loss_a, rel=0.05)
    acc_a, acc_b = ((logits.argmax(1) == y).float().mean().item() for logits in (logits_a, logits_b))
    assert abs(acc_a - acc_b) <= 0.05


def test_adversarial_amp_trains_about_as_fp32_pgd_does(digits: Dataset, tmp_path: Path) -> None:
    fp32 = digits_settings(ADVERSARIAL, 40, amp=True, adversarial_amp=False)
    bf16 = digits_settings(ADVERSARIAL, 40, amp=True, adversarial_amp=True)
    model_a, metrics_a = train_model(fp32, digits, tmp_path / "fp32", CPU, log=_quiet)
    model_b, metrics_b = train_model(bf16, digits, tmp_path / "bf16", CPU, log=_quiet)
    assert _max_difference(model_a, model_b) > 0  # the setting acts
    loss_a, loss_b = metrics_a["history"][-1]["loss"], metrics_b["history"][-1]["loss"]
    assert torch.isfinite(torch.tensor(loss_b)) and loss_b == pytest.approx(loss_a, abs=0.05)
    assert metrics_b["test_accuracy"] == pytest.approx(metrics_a["test_accuracy"], abs=5)


# ---------------------------------------------------------------- torch.compile: modes, loss, fallback (compiles: slow)


@pytest.mark.slow
@pytest.mark.parametrize("train", [{"compile_mode": "reduce-overhead"}, {"compile_mode": "reduce-overhead", "compile_loss": True}],
                         ids=["reduce-overhead", "reduce-overhead+loss"])
def test_compiled_training_matches_eager(train: dict, digits: Dataset, tmp_path: Path) -> None:
    """On the CPU reduce-overhead compiles without CUDA graphs; the trained model is eager's up to float rounding."""
    eager = digits_settings({"alpha": 0.95, "beta": 2, "sigma": 0.3}, 10)
    compiled = digits_settings({"alpha": 0.95, "beta": 2, "sigma": 0.3}, 10, compile=True, **train)
    logs: list[str] = []
    model_e, metrics_e = train_model(eager, digits, tmp_path / "eager", CPU, log=_quiet)
    model_c, metrics_c = train_model(compiled, digits, tmp_path / "compiled", CPU, log=logs.append)
    assert not [line for line in logs if "torch.compile" in line], logs  # it compiled, no fallback
    assert _max_difference(model_e, model_c) < 1e-4
    assert metrics_c["history"][-1]["loss"] == pytest.approx(metrics_e["history"][-1]["loss"], rel=1e-4)


@pytest.mark.slow
def test_compile_loss_compiles_the_model_and_the_loss_as_one_function(digits: Dataset) -> None:
    settings = digits_settings(ADVERSARIAL, 10, compile=True, compile_loss=True)
    model = sstrain.build_model("madry_cnn", 1, 8, 10)
    sample, labels = torch.full((4, 1, 8, 8), 0.5), torch.zeros(4, dtype=torch.long)
    logs: list[str] = []
    runner, forward_loss = sstrain._compiled_runners(model, settings, CPU, sample, labels, logs.append)
    assert logs == []  # no fallback
    assert runner._orig_mod is model  # PGD runs the compiled model
    assert forward_loss._torchdynamo_orig_callable.__name__ == "forward_loss"  # the step: model + loss, compiled
    loss, logits = forward_loss(sample, labels)
    eager_loss, eager_logits = sstrain._forward_loss(model, settings, CPU)(sample, labels)
    torch.testing.assert_close(logits, eager_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_the_compile_trial_leaves_batch_norm_statistics_and_gradients_untouched() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10))
    before = {name: b.clone() for name, b in model.state_dict().items()}
    sample, labels = torch.rand(8, 1, 8, 8), torch.arange(8)
    trial = lambda f: F.cross_entropy(f(sample), labels).backward()  # noqa: E731
    compiled = sstrain._maybe_compile(model, {"compile": True}, trial, model, _quiet, "model")
    assert compiled is not model and compiled._orig_mod is model
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # running mean / var / count as before the trial
    assert all(p.grad is None for p in model.parameters())


def test_a_compile_failure_falls_back_to_eager_with_one_line(digits: Dataset, tmp_path: Path) -> None:
    """torch.compile refuses an unknown mode (the schema would not let it through): training runs eagerly."""
    settings = digits_settings({}, 3, compile=True, compile_mode="no-such-mode")
    logs: list[str] = []
    model, _ = train_model(settings, digits, tmp_path / "fallback", CPU, log=logs.append)
    eager, _ = train_model(digits_settings({}, 3), digits, tmp_path / "eager", CPU, log=_quiet)
    fallbacks = [line for line in logs if not line.startswith("iter ")]
    assert len(fallbacks) == 1 and fallbacks[0].startswith("torch.compile (model, mode no-such-mode) unavailable (") \
        and fallbacks[0].endswith("; running eagerly"), fallbacks
    assert _max_difference(model, eager) == 0.0
