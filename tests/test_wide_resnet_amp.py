"""The CIFAR-10 recipe's fast path on the CPU: Madry's wide ResNet trained a few steps with bf16
autocast and channels_last (config.yaml's cifar10 `train.amp` / `train.channels_last`), saved, and
reloaded by `smoothsqueeze.load_model` to the same logits."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import smoothsqueeze
import smoothsqueeze.train as sstrain
from conftest import ROOT
from smoothsqueeze import config as sscfg
from smoothsqueeze.checkpoints import save_model
from smoothsqueeze.data import Dataset
from smoothsqueeze.models import PreActResNet


def _random_cifar(n_train: int = 8, n_test: int = 4) -> Dataset:
    """A tiny 3x32x32 dataset of random uint8 images, as smoothsqueeze.data stores them."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n_train + n_test,), generator=gen)
    return Dataset(images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], 255.0)


def _settings(k: int) -> dict:
    """config.yaml's cifar10 recipe (wide_resnet, SGD, crop + flip, noise in 1/255 units) for `k` steps
    of 2 images, bf16 autocast and channels_last on whatever the config says."""
    config = copy.deepcopy(sscfg.load_config(ROOT / "config.yaml"))
    study = config["studies"]["cifar10"]
    study["grid"] = [{"alpha": 0.95, "sigma": 30, "k": k}]
    study["train"].update(batch_size=2, log_every=k, checkpoint_every=10**6, amp=True, channels_last=True)
    settings = sscfg.resolve_model(config, "cifar10", sscfg.model_id(study["grid"][0]))
    assert settings["architecture"] == "wide_resnet" and settings["sigma01"] == pytest.approx(30 / 255)
    return settings


def test_wide_resnet_trains_in_bf16_channels_last_and_reloads_to_the_same_logits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _random_cifar()
    settings = _settings(k=2)
    autocasts: list[tuple[bool, str]] = []
    real_autocast = sstrain._autocast

    def spy(enabled: bool, device: torch.device):
        autocasts.append((enabled, device.type))
        return real_autocast(enabled, device)

    monkeypatch.setattr(sstrain, "_autocast", spy)
    torch.manual_seed(settings["seed"])  # what train_model starts from
    initial = dict(sstrain.build_model("wide_resnet", 3, 32, 10, init=settings["train"]["init"]).named_parameters())
    model, metrics = sstrain.train_model(settings, data, tmp_path / "work", torch.device("cpu"), log=lambda _: None)

    assert autocasts == [(True, "cpu")] * 2  # both steps ran under bf16 autocast
    assert isinstance(model, PreActResNet) and [u.conv1.out_channels for u in model.units[::5]] == [160, 320, 640]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights
    assert [h["iteration"] for h in metrics["history"]] == [2] and torch.isfinite(torch.tensor(metrics["history"][-1]["loss"]))
    state = model.state_dict()
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, initial[name])]
    assert "head.weight" in moved and "stem.weight" in moved, "two SGD steps changed no weight"

    path = tmp_path / "model.pt"
    save_model(path, model, "wide_resnet", data.image_shape, 10)
    loaded = smoothsqueeze.load_model(path, expect_architecture="wide_resnet")
    assert not loaded.training
    saved = loaded.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)

    x = data.scale(data.x_test)
    with torch.no_grad():
        trained_logits = model.eval()(x.contiguous(memory_format=torch.channels_last))
        # the same memory layout on both sides: identical, bit for bit
        same_layout = loaded.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        plain = smoothsqueeze.load_model(path)(x)  # as the evaluation stage loads and runs it (NCHW)
    assert torch.equal(trained_logits, same_layout)
    torch.testing.assert_close(plain, trained_logits, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(trained_logits).all()
