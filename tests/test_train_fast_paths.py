"""The GPU fast paths of training, off by default until a GPU run measures them, run here on the CPU:
train.compile_mode and train.compile_loss (torch.compile), and the rule that these keys keep older
finished models valid."""
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
from smoothsqueeze.data import Dataset
from smoothsqueeze.train import train_model

NEW_KEYS = {"compile_mode": "default", "compile_loss": False}
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
    """compile_mode / compile_loss act with compile only."""
    def differences(entry: dict, **train: Any) -> list[str]:
        return sstrain._differences(digits_settings(entry, 10, amp=True), digits_settings(entry, 10, amp=True, **train))

    assert differences({}, compile_mode="reduce-overhead", compile_loss=True) == []
    assert differences({}, compile=True, compile_mode="reduce-overhead") == [
        "train.compile False -> True", "train.compile_mode None -> 'reduce-overhead'"]
    assert differences({}, compile=True, compile_loss=True) == ["train.compile False -> True", "train.compile_loss None -> True"]


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
