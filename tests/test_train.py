"""The training stage: its settings by hand (the learning-rate milestones, crop + flip with default
padding 2 as Madry's 32 -> 36 -> 32 pipeline, noise given in 1/255 units for a study of pixel_units
255, the initialisation, the batch-norm mode of training-time PGD, held-out images)."""
from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import torch

import smoothsqueeze.train as sstrain
from conftest import ROOT, digits_settings
from smoothsqueeze import config as sscfg
from smoothsqueeze.data import Dataset
from smoothsqueeze.models import MadryCNN
from smoothsqueeze.train import crop_flip, learning_rate, train_model

CONFIG = sscfg.load_config(ROOT / "config.yaml")


@pytest.mark.parametrize(
    ("iteration", "expected"),
    [(0, 0.1), (39999, 0.1), (40000, 0.01), (59999, 0.01), (60000, 0.001), (79999, 0.001)],
)
def test_learning_rate_drops_tenfold_at_half_and_three_quarters_of_k(iteration: int, expected: float) -> None:
    """Madry's CIFAR-10 schedule: 0.1, then 0.01 from 40k and 0.001 from 60k of 80k iterations."""
    cfg = {"lr": 0.1, "lr_milestones": [0.5, 0.75], "lr_gamma": 0.1}
    assert learning_rate(cfg, iteration, 80000) == pytest.approx(expected, rel=1e-12)


def test_learning_rate_milestones_round_down_and_default_to_none() -> None:
    cfg = {"lr": 1.0, "lr_milestones": [0.5, 0.75], "lr_gamma": 0.5}
    # k = 10: milestones at int(5.0) = 5 and int(7.5) = 7
    assert [learning_rate(cfg, it, 10) for it in range(10)] == [1.0] * 5 + [0.5] * 2 + [0.25] * 3
    assert {learning_rate({"lr": 1e-3}, it, 100) for it in range(100)} == {1e-3}  # Adam studies: constant
    assert learning_rate({"lr": 0.1, "lr_milestones": [0.5]}, 50, 100) == pytest.approx(0.01)  # gamma defaults to 0.1
    assert CONFIG["studies"]["cifar10"]["train"]["lr_milestones"] == [0.5, 0.75]


def test_crop_flip_pads_by_two_by_default_and_takes_every_crop_and_flip() -> None:
    assert inspect.signature(crop_flip).parameters["pad"].default == 2
    h = w = 6
    image = (torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w) + 1) / (h * w)  # no zero pixel: zeros are padding
    x = image.expand(2000, 2, h, w).clone()
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(image[0, 0], (2, 2, 2, 2))
    candidates = {(top, left, flip): (padded[top : top + h, left : left + w].flip(1) if flip else padded[top : top + h, left : left + w])
                  for top in range(5) for left in range(5) for flip in (False, True)}
    seen = set()
    for img in out:
        assert torch.equal(img[0], img[1])  # the same crop and flip for every channel
        hits = [key for key, crop in candidates.items() if torch.equal(img[0], crop)]
        assert len(hits) == 1, "not a crop of the image padded by 2"
        seen.add(hits[0])
    assert seen == set(candidates)  # every offset 0..4 in both directions, flipped and not


def _constant_data(value: int = 128, n: int = 200) -> Dataset:
    x = torch.full((n, 3, 8, 8), value, dtype=torch.uint8)
    y = torch.arange(n) % 10
    return Dataset(x, y, x[:20], y[:20], 255.0)


class _InputSpy(torch.nn.Module):
    """A linear model that keeps the images each training step feeds it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3 * 8 * 8, 10)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.inputs.append(x.detach().clone())
        return self.head(x.flatten(1))


def test_noise_in_1_255_units_reaches_training_as_sigma_over_255(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = copy.deepcopy(CONFIG)
    study = config["studies"]["cifar10"]
    assert study["pixel_units"] == 255
    study["grid"] = [{"sigma": 30, "k": 4}, {"k": 4, "adversarial": {"steps": 7, "step_size": 2, "eps": 8}}]
    study["train"].update(batch_size=50, augmentation="none", amp=False, channels_last=False, log_every=4)
    settings = sscfg.resolve_model(config, "cifar10", "noise30_k4")
    assert settings["sigma01"] == pytest.approx(30 / 255) and settings["pixel_units"] == 255
    adv = sscfg.resolve_model(config, "cifar10", "pgd7-eps8-step2_k4")["adversarial"]
    assert adv["eps01"] == pytest.approx(8 / 255) and adv["step_size01"] == pytest.approx(2 / 255)

    spy = _InputSpy()
    monkeypatch.setattr(sstrain, "build_model", lambda *args, **kwargs: spy)
    sstrain.train_model(settings, _constant_data(), tmp_path, torch.device("cpu"), log=lambda _: None)
    noise = torch.cat(spy.inputs) - 128 / 255  # the clean images are all 128/255
    assert len(spy.inputs) == 4
    assert noise.mean().item() == pytest.approx(0.0, abs=0.005)
    assert noise.std().item() == pytest.approx(30 / 255, rel=0.02)  # not 30, not 30/255**2


# ---------------------------------------------------------------- moved from test_fidelity.py


def test_crop_padding_follows_the_setting() -> None:
    x = torch.ones(400, 1, 8, 8)
    gen = torch.Generator().manual_seed(0)
    for pad in (0, 2, 4):
        out = crop_flip(x, gen, pad)
        zero_rows = (out == 0).all(dim=3).sum(dim=2).squeeze(1)  # rows of zero padding in each crop
        zero_cols = (out == 0).all(dim=2).sum(dim=2).squeeze(1)
        assert int(torch.maximum(zero_rows, zero_cols).max()) == pad, pad
    assert CONFIG["studies"]["cifar10"]["train"]["crop_padding"] == 2  # Madry: 32 -> 36 -> random 32 crop


def test_training_uses_the_init_setting(digits: Dataset, tmp_path: Path) -> None:
    a = digits_settings({}, 1, init="madry")
    b = digits_settings({}, 1, init="pytorch")
    ma, _ = train_model(a, digits, tmp_path / "a", torch.device("cpu"), log=lambda _: None)
    mb, _ = train_model(b, digits, tmp_path / "b", torch.device("cpu"), log=lambda _: None)
    # one Adam step moves a bias by at most ~lr: Madry's biases start at 0.1
    assert ma.conv1.bias.mean().item() == pytest.approx(0.1, abs=0.01)
    assert abs(mb.conv1.bias.mean().item() - 0.1) > 0.02


class _ModeSpy(torch.nn.Module):
    """Records the training flag of every forward pass (PGD's passes come before the training step's)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = MadryCNN(1, 8, 10)
        self.head = self.inner.head
        self.modes: list[bool] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.inner(x)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_training_time_pgd_batch_norm_mode_follows_the_setting(mode: str, digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import smoothsqueeze.train as sstrain

    spy = _ModeSpy()
    monkeypatch.setattr(sstrain, "build_model", lambda *args, **kwargs: spy)
    settings = digits_settings({"adversarial": {"steps": 3, "step_size": 0.1, "eps": 0.2}}, 2, adversarial_bn_mode=mode)
    train_model(settings, digits, tmp_path, torch.device("cpu"), log=lambda _: None)
    per_step = spy.modes[:4]  # 3 attack passes, then the training pass
    assert per_step == [mode == "train"] * 3 + [True], spy.modes
    assert CONFIG["studies"]["cifar10"]["train"]["adversarial_bn_mode"] == "train"


def test_validation_holdout_leaves_the_first_images_out(digits: Dataset, tmp_path: Path) -> None:
    settings = digits_settings({}, 1, validation_holdout=1000)
    _, metrics = train_model(settings, digits, tmp_path, torch.device("cpu"), log=lambda _: None)
    assert CONFIG["studies"]["mnist"]["train"]["validation_holdout"] == 5000  # TF's read_data_sets: 55,000 left
    bad = digits_settings({}, 1, validation_holdout=len(digits.x_train))
    with pytest.raises(Exception, match="validation_holdout"):
        train_model(bad, digits, tmp_path / "bad", torch.device("cpu"), log=lambda _: None)
    assert metrics["iterations"] == 1


def test_fused_optimizer_updates_as_the_parameter_loop_does(digits: Dataset, tmp_path: Path) -> None:
    """The fused kernel is the same Adam step, up to float rounding; it is part of the model's settings."""
    loop = digits_settings({"alpha": 0.95}, 20, fused_optimizer=False, channels_last=False)
    fused = digits_settings({"alpha": 0.95}, 20, fused_optimizer=True, channels_last=False)
    model_loop, _ = train_model(loop, digits, tmp_path / "loop", torch.device("cpu"), log=lambda _: None)
    model_fused, _ = train_model(fused, digits, tmp_path / "fused", torch.device("cpu"), log=lambda _: None)
    for (name, a), b in zip(model_loop.state_dict().items(), model_fused.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-4), name
    assert any(not torch.equal(a, b) for a, b in zip(model_loop.state_dict().values(), model_fused.state_dict().values()))
    assert sstrain._differences(loop, fused) == ["train.fused_optimizer None -> True"]


def test_a_training_key_added_later_keeps_older_models_valid() -> None:
    """Models trained before `fused_optimizer` existed lack the key: with it at false they are the same model."""
    new = digits_settings({}, 10, fused_optimizer=False)
    old = copy.deepcopy(new)
    del old["train"]["fused_optimizer"]
    assert sstrain._differences(old, new) == []
    assert sstrain._model_key(old, "sha") == sstrain._model_key(new, "sha")
    assert sstrain._model_key(old, "sha") != sstrain._model_key(digits_settings({}, 10, fused_optimizer=True), "sha")


def test_channels_last_training_matches_the_default_layout(digits: Dataset, tmp_path: Path) -> None:
    """The digits study trains channels_last (the CPU's fast path): the same model up to float rounding."""
    nchw = digits_settings({"sigma": 0.3}, 20, channels_last=False)
    last = digits_settings({"sigma": 0.3}, 20, channels_last=True)
    model_nchw, _ = train_model(nchw, digits, tmp_path / "nchw", torch.device("cpu"), log=lambda _: None)
    model_last, _ = train_model(last, digits, tmp_path / "last", torch.device("cpu"), log=lambda _: None)
    assert model_last.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    for (name, a), b in zip(model_nchw.state_dict().items(), model_last.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-4), name
    assert CONFIG["studies"]["digits"]["train"]["channels_last"] and CONFIG["studies"]["digits"]["train"]["fused_optimizer"]
