"""Every setting that training and evaluation read changes what the stage produces, through the stage
itself: a stage that ignored a setting fails here (the hole found from outside: `train.crop_padding`
was tested only through `crop_flip`, never through training).

Each case trains (or evaluates) twice, the second time with one setting changed, and compares the
results; settings that must NOT change the model (how often it logs or checkpoints) are checked the
other way round.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import digits_settings
from smoothsqueeze.checkpoints import save_model
from smoothsqueeze.data import Dataset
from smoothsqueeze.evaluate import evaluate
from smoothsqueeze.train import train_model

K = 4
CPU = torch.device("cpu")
BASE_TRAIN = {"channels_last": False, "fused_optimizer": False, "log_every": K, "checkpoint_every": 1000}

#: (case, grid entry, train overrides of the baseline, train overrides of the variant)
TRAIN_CASES = [
    ("optimizer", {}, {}, {"optimizer": "sgd", "lr": 0.001}),
    ("lr", {}, {}, {"lr": 0.01}),
    ("momentum", {}, {"optimizer": "sgd", "lr": 0.01}, {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9}),
    ("weight_decay", {}, {}, {"weight_decay": 0.5}),
    ("batch_size", {}, {}, {"batch_size": 20}),
    ("lr_milestones", {}, {}, {"lr_milestones": [0.5]}),
    ("lr_gamma", {}, {"lr_milestones": [0.5]}, {"lr_milestones": [0.5], "lr_gamma": 0.5}),
    ("augmentation", {}, {}, {"augmentation": "crop_flip"}),
    ("crop_padding", {}, {"augmentation": "crop_flip", "crop_padding": 2}, {"augmentation": "crop_flip", "crop_padding": 4}),
    ("squeeze_norm", {"beta": 1.0}, {"squeeze_norm": "per_example"}, {"squeeze_norm": "batch"}),
    ("init", {}, {"init": "madry"}, {"init": "pytorch"}),
    ("validation_holdout", {}, {}, {"validation_holdout": 500}),
    ("noise_clip", {"sigma": 0.5}, {"noise_clip": False}, {"noise_clip": True}),
    ("amp", {}, {}, {"amp": True}),
    ("channels_last", {}, {}, {"channels_last": True}),
    ("fused_optimizer", {}, {}, {"fused_optimizer": True}),
    ("lr_schedule", {}, {}, {"lr_schedule": "cyclic"}),
    ("lr_peak", {}, {"lr_schedule": "cyclic"}, {"lr_schedule": "cyclic", "lr_peak": 0.7}),
    ("robust_check", {"adversarial": {"method": "fgsm_rs", "eps": 0.2}}, {}, {"robust_check": {"every": 2, "n_images": 100, "steps": 2}}),
]
#: (case, baseline grid entry, variant grid entry): the model's own parameters.
ENTRY_CASES = [
    ("alpha", {}, {"alpha": 0.5}),
    ("beta", {}, {"beta": 1.0}),
    ("sigma", {}, {"sigma": 0.3}),
    ("seed", {}, {"seed": 1}),
    ("adversarial.steps", {"adversarial": {"steps": 2, "step_size": 0.05, "eps": 0.2}}, {"adversarial": {"steps": 3, "step_size": 0.05, "eps": 0.2}}),
    ("adversarial.step_size", {"adversarial": {"steps": 2, "step_size": 0.05, "eps": 0.2}}, {"adversarial": {"steps": 2, "step_size": 0.02, "eps": 0.2}}),
    ("adversarial.eps", {"adversarial": {"steps": 2, "step_size": 0.05, "eps": 0.2}}, {"adversarial": {"steps": 2, "step_size": 0.05, "eps": 0.1}}),
    ("adversarial.random_start", {"adversarial": {"steps": 2, "step_size": 0.05, "eps": 0.2}},
     {"adversarial": {"steps": 2, "step_size": 0.05, "eps": 0.2, "random_start": False}}),
    ("adversarial.method", {"adversarial": {"method": "fgsm_rs", "eps": 0.2, "step_size": 0.2}}, {"adversarial": {"method": "nfgsm", "eps": 0.2, "step_size": 0.2}}),
    ("adversarial.eps_warmup", {"adversarial": {"method": "fgsm_rs", "eps": 0.2}}, {"adversarial": {"method": "fgsm_rs", "eps": 0.2, "eps_warmup": 0.5}}),
    ("adversarial.noise_factor", {"adversarial": {"method": "nfgsm", "eps": 0.2}}, {"adversarial": {"method": "nfgsm", "eps": 0.2, "noise_factor": 1.0}}),
]


def _train(digits: Dataset, tmp: Path, entry: dict, **train: object) -> dict[str, torch.Tensor]:
    settings = digits_settings(entry, K, **{**BASE_TRAIN, **train})
    model, _ = train_model(settings, digits, tmp, CPU, log=lambda _: None)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize(("case", "entry", "base", "variant"), TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_every_training_setting_changes_the_trained_model(case: str, entry: dict, base: dict, variant: dict, digits: Dataset, tmp_path: Path) -> None:
    a = _train(digits, tmp_path / "a", entry, **base)
    b = _train(digits, tmp_path / "b", entry, **variant)
    assert not _same(a, b), f"train.{case} does not reach training"


@pytest.mark.parametrize(("case", "base", "variant"), ENTRY_CASES, ids=[c[0] for c in ENTRY_CASES])
def test_every_model_parameter_changes_the_trained_model(case: str, base: dict, variant: dict, digits: Dataset, tmp_path: Path) -> None:
    assert not _same(_train(digits, tmp_path / "a", base), _train(digits, tmp_path / "b", variant)), f"{case} does not reach training"


def test_how_often_training_logs_or_checkpoints_does_not_change_the_model(digits: Dataset, tmp_path: Path) -> None:
    a = _train(digits, tmp_path / "a", {"sigma": 0.3}, log_every=1, checkpoint_every=1)
    b = _train(digits, tmp_path / "b", {"sigma": 0.3}, log_every=K, checkpoint_every=1000)
    assert _same(a, b)


# ---------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def checkpoint(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A naturally trained digits model (200 iterations) on disk."""
    tmp = tmp_path_factory.mktemp("eval_model")
    settings = digits_settings({}, 200, **{**BASE_TRAIN, "log_every": 200})
    model, _ = train_model(settings, digits, tmp, CPU, log=lambda _: None)
    save_model(tmp / "model.pt", model, "madry_cnn", digits.image_shape, digits.num_classes)
    return tmp / "model.pt"


def _spec(**changes: object) -> dict:
    attack = {"name": "pgd", "method": "pgd", "loss": "xent", "eps01": 0.1, "steps": 3, "step_size01": 0.04, "random_start": True, "restarts": 1}
    attack.update({k: v for k, v in changes.items() if k in attack})
    spec = {"whitebox": [attack], "batch_size": 100, "max_examples": 200, "seed": 0, "architecture": "madry_cnn", "channels_last": False}
    spec.update({k: v for k, v in changes.items() if k in spec})
    return spec


def _evaluate(checkpoint: Path, data: Path, tmp: Path, **changes: object) -> dict:
    out = tmp / f"{len(list(tmp.glob('*.json')))}.json"
    evaluate(_spec(**changes), checkpoint, data, {}, out, device="cpu")
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def data_file(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from smoothsqueeze.data import prepare_digits

    path = tmp_path_factory.mktemp("eval_data") / "digits.npz"
    prepare_digits(path)
    return path


@pytest.mark.parametrize(
    "change",
    [{"max_examples": 100}, {"seed": 1}, {"eps01": 0.15}, {"steps": 6}, {"step_size01": 0.06}, {"random_start": False}, {"restarts": 3}, {"loss": "cw"}],
    ids=lambda c: next(iter(c)),
)
def test_every_evaluation_setting_changes_the_record(change: dict, checkpoint: Path, data_file: Path, tmp_path: Path) -> None:
    base = _evaluate(checkpoint, data_file, tmp_path)
    other = _evaluate(checkpoint, data_file, tmp_path, **change)
    assert other["per_image"]["correct"] != base["per_image"]["correct"] or other["n_test"] != base["n_test"], change


def test_evaluation_batch_size_and_memory_format_do_not_change_the_record(checkpoint: Path, data_file: Path, tmp_path: Path) -> None:
    base = _evaluate(checkpoint, data_file, tmp_path)
    other = _evaluate(checkpoint, data_file, tmp_path, batch_size=37)
    assert other["per_image"]["correct"] == base["per_image"]["correct"]
