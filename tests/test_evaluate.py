"""The evaluation stage (and black-box crafting): the record holds every white-box and black-box
attack with its resolved settings, every adversarial set is checked against its budget, the
collapse flag, and the tiny study's black-box numbers recomputed from the stored sets: each
evaluation record's black-box accuracy is the model's accuracy on the stored .npz set (loaded here
with numpy and run with plain torch, not the evaluation code), every record names the same set
with that file's checksum, and each set was crafted on the study's source model as its metadata says."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, TINY_CONFIG, digits_settings
from smoothsqueeze import config as sscfg
from smoothsqueeze import load_model, tables
from smoothsqueeze.artifacts import read_npz, write_npz
from smoothsqueeze.checkpoints import save_model
from smoothsqueeze.config import resolve_attack
from smoothsqueeze.data import Dataset, prepare_digits
from smoothsqueeze.errors import PipelineError
from smoothsqueeze.evaluate import craft_blackbox, evaluate, training_status
from smoothsqueeze.prologue import open_stage
from smoothsqueeze.study import STAGE_VERSIONS
from smoothsqueeze.train import train_model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return 100.0 * float((pred == y).mean())


@pytest.mark.slow
def test_blackbox_accuracies_recomputed_from_the_stored_sets(tiny_study: Path) -> None:
    tiny = yaml.safe_load(TINY_CONFIG.read_text())["studies"]["tiny"]
    names = [a["name"] for a in tiny["blackbox"]["attacks"]]
    source = tiny["blackbox"]["source"]
    records = {p.stem: json.loads(p.read_text()) for p in sorted((tiny_study / "results/tiny/records").glob("*.json"))}
    assert len(records) == len(tiny["grid"])
    for name in names:
        path = tiny_study / "results/tiny/blackbox" / f"{name}.npz"
        with np.load(path, allow_pickle=False) as arrays:
            x_adv, y, meta = arrays["x_adv"], arrays["y"], json.loads(str(arrays["meta"]))
        assert x_adv.dtype == np.float32 and len(x_adv) == len(y) == tiny["attack"]["max_examples"]
        # crafted once, on the source model, as its metadata says
        source_ckpt = tiny_study / f"results/tiny/models/{source}/model.pt"
        assert Path(meta["source_checkpoint"]).name == "model.pt" and source in meta["source_checkpoint"]
        assert meta["source_sha256"] == _sha256(source_ckpt)
        assert meta["source_accuracy"] == pytest.approx(_accuracy(load_model(source_ckpt), x_adv, y), abs=1e-4)
        checksum = _sha256(path)
        for mid, record in records.items():
            detail = record["attacks"]["blackbox"][name]
            # every record read this very file
            assert (tiny_study / detail["set"]).resolve() == path.resolve(), mid
            assert detail["set_sha256"] == checksum, mid
            assert detail["n"] == len(y) and detail["source_checkpoint"] == meta["source_checkpoint"], mid
            model = load_model(tiny_study / record["inputs"]["checkpoint"])
            assert _sha256(tiny_study / record["inputs"]["checkpoint"]) == record["inputs"]["checkpoint_sha256"], mid
            expected = _accuracy(model, x_adv[: detail["n"]], y[: detail["n"]])
            assert record["accuracy"][f"blackbox_{name}"] == pytest.approx(expected, abs=1e-4), (mid, name)


def test_training_status_threshold_is_twice_chance() -> None:
    assert training_status(19.99, 10)["collapsed"] and not training_status(20.0, 10)["collapsed"]
    assert training_status(9.0, 100)["collapsed"] is False  # 2% for 100 classes
    assert "training collapsed" in training_status(10.0, 10)["reason"]


def test_planted_collapse_end_to_end(digits: Dataset, tmp_path: Path) -> None:
    """A model trained into collapse (beta 10, per-example squeeze) is flagged by the evaluation stage's rule."""
    settings = digits_settings({"beta": 10}, 300, squeeze_norm="batch_unscaled")
    model, metrics = train_model(settings, digits, tmp_path, torch.device("cpu"), log=lambda _: None)
    ckpt, data_path = tmp_path / "model.pt", tmp_path / "digits.npz"
    save_model(ckpt, model, "madry_cnn", digits.image_shape, 10)
    prepare_digits(data_path)
    info = {"study": "digits", "model_id": "sq10_k300", "entry": {"beta": 10, "k": 300}, "eps": 0.2, "blackbox_source": "natural_k3000"}
    record = evaluate({"whitebox": [], "batch_size": 500, "max_examples": 50, "seed": 0, "info": info}, ckpt, data_path, {}, tmp_path / "record.json")
    assert record["training"]["collapsed"], record["training"]
    assert tables.build_row(record)["note"] == tables.COLLAPSED


# ---------------------------------------------------------------- one model, in process


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, digits: Dataset) -> tuple[Path, Path]:
    """A briefly trained digits model (natural, 150 iterations) and the prepared digits file."""
    tmp = tmp_path_factory.mktemp("evaluate")
    model, _ = train_model(digits_settings({}, 150), digits, tmp / "work", torch.device("cpu"), log=lambda _: None)
    ckpt, data = tmp / "model.pt", tmp / "digits.npz"
    save_model(ckpt, model, "madry_cnn", digits.image_shape, 10)
    prepare_digits(data)
    return ckpt, data


ATTACKS = [
    {"name": "fgsm_xent", "method": "fgsm", "loss": "xent"},
    {"name": "pgd5_cw", "method": "pgd", "loss": "cw", "steps": 5, "step_size": 0.05, "random_start": True},
    {"name": "pgd5_rand_xent", "method": "pgd", "loss": "xent", "steps": 5, "step_size": 0.05, "random_start": True, "restarts": 2},
]


def test_the_record_holds_every_attack_each_checked_against_its_budget(stored: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, data = stored
    whitebox = [resolve_attack(a, 0.2, 1) for a in ATTACKS]
    bb_attack = resolve_attack({"name": "fgsm_cw", "method": "fgsm", "loss": "cw"}, 0.2, 1)
    bb_set = tmp_path / "fgsm_cw.npz"
    craft_blackbox({"attack": bb_attack, "batch_size": 40, "max_examples": 80, "seed": 0, "architecture": "madry_cnn"}, ckpt, data, bb_set)
    spec = {"whitebox": whitebox, "batch_size": 40, "max_examples": 80, "seed": 0, "architecture": "madry_cnn", "info": {"model_id": "m"}}
    record = evaluate(spec, ckpt, data, {"fgsm_cw": bb_set}, tmp_path / "record.json")
    assert record == json.loads((tmp_path / "record.json").read_text())
    assert record["model_id"] == "m" and record["n_test"] == 80
    assert set(record["accuracy"]) == {"train", "test", *(f"whitebox_{a['name']}" for a in ATTACKS), "blackbox_fgsm_cw"}
    assert record["attacks"]["whitebox"] == {a["name"]: a for a in whitebox}  # every attack with its resolved settings
    detail = record["attacks"]["blackbox"]["fgsm_cw"]
    assert detail["eps01"] == 0.2 and detail["n"] == 80 and detail["set_sha256"] == _sha256(bb_set)
    assert record["inputs"]["checkpoint_sha256"] == _sha256(ckpt)
    meta = json.loads(str(read_npz(bb_set, required=("meta",))["meta"]))
    assert meta["attack"] == bb_attack and "eps" not in meta["attack"]  # the set's attack, [0, 1] values named so
    for written, stage in ((record, "evaluate"), (meta, "craft_blackbox")):
        assert (written["provenance"]["stage"], written["provenance"]["stage_version"]) == (stage, STAGE_VERSIONS[stage])
    acc = record["accuracy"]
    # the attacks work: each is below clean accuracy; restarts never help the model
    assert all(acc[f"whitebox_{a['name']}"] < acc["test"] for a in ATTACKS), acc
    # the stored set is in its budget and the evaluation refuses one that is not
    arrays = read_npz(bb_set, required=("x_adv", "y", "meta"))
    clean = prepare_and_scale(data, 80)
    assert np.abs(arrays["x_adv"] - clean).max() <= 0.2 + 1e-6
    write_npz(bb_set, x_adv=np.clip(arrays["x_adv"] + 0.25, 0, 1).astype(np.float32), y=arrays["y"], meta=arrays["meta"])
    with pytest.raises(PipelineError, match="violates its budget"):
        evaluate(spec, ckpt, data, {"fgsm_cw": bb_set}, tmp_path / "again.json")
    assert not (tmp_path / "again.json").exists()


def prepare_and_scale(data: Path, n: int) -> np.ndarray:
    arrays = read_npz(data, required=("x_test", "max_value"))
    return arrays["x_test"][:n].astype(np.float32) / float(arrays["max_value"])


class _NanGradient(torch.nn.Module):
    """Logits whose input gradient is NaN everywhere in [0, 1] (sqrt of a negative number): PGD's steps become NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1)[:, :10] - 2 + self.anchor).sqrt()


def test_an_attack_that_leaves_its_budget_stops_the_stage() -> None:
    """run_attack checks every adversarial batch: NaN pixels from a broken gradient are never scored."""
    from smoothsqueeze.attacks import AttackBudgetError
    from smoothsqueeze.evaluate import run_attack

    attack = resolve_attack({"name": "pgd5_xent", "method": "pgd", "loss": "xent", "steps": 5, "step_size": 0.05, "random_start": True}, 0.2, 1)
    x, y = torch.full((4, 1, 8, 8), 0.5), torch.zeros(4, dtype=torch.long)
    with pytest.raises(AttackBudgetError, match="NaN"):
        run_attack(_NanGradient(), x, y, attack, torch.Generator().manual_seed(0))


def test_the_prologue_opens_the_first_n_images_and_checksums_the_inputs(stored: tuple[Path, Path]) -> None:
    ckpt, data = stored
    stage = open_stage(ckpt, data, 25, "madry_cnn", "cpu", frozen=True)
    x, y = stage.test_images()
    assert stage.n == 25 and x.shape == (25, 1, 8, 8) and float(x.max()) <= 1.0 and y.tolist() == stage.data.y_test[:25].tolist()
    assert stage.inputs == {"checkpoint": str(ckpt), "checkpoint_sha256": _sha256(ckpt), "data": str(data)}
    assert not any(p.requires_grad for p in stage.model.parameters())
    assert open_stage(ckpt, data, None, "madry_cnn", "cpu").n == len(stage.data.y_test)
    assert open_stage(ckpt, data, 10**6, "madry_cnn", "cpu").n == len(stage.data.y_test)
    with pytest.raises(PipelineError, match="expects 'resnet_small'"):
        open_stage(ckpt, data, 10, "resnet_small", "cpu")


def test_channels_last_stages_score_as_the_default_layout(stored: tuple[Path, Path], tmp_path: Path) -> None:
    """attack.channels_last runs the stored model in that memory format: the same logits up to float
    rounding, the same accuracies under the same seeded attacks, and each stage's spec carries the study's setting."""
    from smoothsqueeze.study import Plan

    ckpt, data = stored
    default = open_stage(ckpt, data, 100, "madry_cnn", "cpu", frozen=True)
    last = open_stage(ckpt, data, 100, "madry_cnn", "cpu", frozen=True, channels_last=True)
    assert last.model.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert not default.model.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    x, _ = default.test_images()
    with torch.no_grad():
        assert torch.allclose(default.model(x), last.model(x), rtol=0, atol=1e-4)
    whitebox = [resolve_attack(a, 0.2, 1) for a in ATTACKS]
    spec = {"whitebox": whitebox, "batch_size": 50, "max_examples": 100, "seed": 0, "architecture": "madry_cnn", "info": {}}
    a = evaluate(spec, ckpt, data, {}, tmp_path / "default.json")
    b = evaluate(spec | {"channels_last": True}, ckpt, data, {}, tmp_path / "last.json")
    for key, value in a["accuracy"].items():
        assert b["accuracy"][key] == pytest.approx(value, abs=2.0), key  # at most 2 of 100 images may flip
    config = copy.deepcopy(sscfg.load_config(ROOT / "config.yaml"))
    plan = Plan(config)
    model = plan.model_ids("digits")[0]
    specs = [plan.evaluate_spec("digits", model), plan.analysis_spec("digits", model), plan.audit_spec("digits", model),
             plan.blackbox_spec("digits", config["studies"]["digits"]["blackbox"]["attacks"][0]["name"])]
    assert [s["channels_last"] for s in specs] == [True] * 4
    config["studies"]["digits"]["attack"]["channels_last"] = False
    assert Plan(config).audit_spec("digits", model)["channels_last"] is False
