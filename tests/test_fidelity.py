"""Fidelity to the paper and to Madry et al.'s code: logit-squeeze normalisation, the collapse mark in
the tables, initialisation, Table 7's source. (Training settings: test_train.py; the collapse flag of
the evaluation stage: test_evaluate.py.)"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, digits_settings
from smoothsqueeze import config as sscfg
from smoothsqueeze import paper, render, tables
from smoothsqueeze.data import Dataset
from smoothsqueeze.evaluate import training_status
from smoothsqueeze.losses import SQUEEZE_NORMS, logit_squeeze, training_loss
from smoothsqueeze.models import MadryCNN, PreActResNet, build_model
from smoothsqueeze.train import crop_flip, train_model

CONFIG = sscfg.load_config(ROOT / "config.yaml")
PAPER_STUDIES = ("mnist", "cifar10", "fashion")


# ---------------------------------------------------------------- logit squeezing


def test_squeeze_norms_by_hand() -> None:
    z = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 12.0], [5.0, 0.0]])  # norms 5, 0, 12, 5; ||Z||_F = sqrt(194)
    assert logit_squeeze(z, "per_example").item() == pytest.approx(22 / 4)
    assert logit_squeeze(z, "batch").item() == pytest.approx(math.sqrt(194) / 4)
    assert logit_squeeze(z, "batch_unscaled").item() == pytest.approx(math.sqrt(194))
    with pytest.raises(ValueError, match="unknown logit-squeeze normalisation 'frobenius'"):
        logit_squeeze(z, "frobenius")


def test_batch_norm_is_madrys_summed_loss_divided_by_batch_size() -> None:
    """Madry's MNIST code: sum of x-ent + beta * tf.norm(logits); divided by B it is our 'batch' loss."""
    torch.manual_seed(0)
    z, y, beta = torch.randn(50, 10), torch.randint(0, 10, (50,)), 5.0
    madry = F.cross_entropy(z, y, reduction="sum") + beta * torch.linalg.matrix_norm(z)
    assert training_loss(z, y, 0.0, beta, "batch").item() == pytest.approx(madry.item() / 50, rel=1e-6)


def _train(settings: dict, digits: Dataset, tmp_path: Path) -> dict:
    _, metrics = train_model(settings, digits, tmp_path, torch.device("cpu"), log=lambda _: None)
    return metrics


def test_paper_studies_use_one_chosen_normalisation() -> None:
    for name in (*PAPER_STUDIES, "digits"):
        assert CONFIG["studies"][name]["train"]["squeeze_norm"] in SQUEEZE_NORMS
    settings = sscfg.resolve_model(CONFIG, "mnist", "sq2_noise0.5_k100000")
    assert settings["train"]["squeeze_norm"] == CONFIG["studies"]["mnist"]["train"]["squeeze_norm"]


@pytest.mark.parametrize("study", ["digits", "mnist"])
def test_beta_2_trains_at_the_chosen_normalisation(study: str, digits: Dataset, tmp_path: Path) -> None:
    """The paper's beta 2 + noise trains (on the digits, briefly) with the normalisation each study chose."""
    norm = CONFIG["studies"][study]["train"]["squeeze_norm"]
    metrics = _train(digits_settings({"beta": 2, "sigma": 0.3}, 400, squeeze_norm=norm), digits, tmp_path)
    assert metrics["train_accuracy"] > 80, metrics["train_accuracy"]
    assert not training_status(metrics["train_accuracy"], 10)["collapsed"]


def test_per_example_squeeze_at_beta_2_collapses(digits: Dataset, tmp_path: Path) -> None:
    """Why the normalisation matters: beta * ||z_i|| per example has its minimum at z = 0 for beta >= sqrt(0.9)."""
    metrics = _train(digits_settings({"beta": 10, "sigma": 0.3}, 400, squeeze_norm="per_example"), digits, tmp_path)
    assert metrics["history"][-1]["logit_norm"] < 0.5
    assert training_status(metrics["train_accuracy"], 10)["collapsed"]


# ---------------------------------------------------------------- the collapse flag


def _record(model_id: str, train: float, collapsed: bool, source: str = "natural_k500") -> dict:
    entry = sscfg.grid_entry(CONFIG, "digits", model_id)
    return {
        "study": "digits", "model_id": model_id, "entry": entry, "eps": 0.2, "pixel_units": 1, "n_test": 360,
        "blackbox_source": source, "training": training_status(train, 10) | {"collapsed": collapsed},
        "accuracy": {"train": train, "test": train, "whitebox_pgd40_xent": 9.0, "blackbox_pgd40_cw": 11.0},
    }


def test_a_collapsed_model_is_marked_in_every_study_table() -> None:
    rows = pd.DataFrame([
        tables.build_row(_record("natural_k500", 100.0, False)),
        tables.build_row(_record("sq5_noise0.3_k500", 11.0, True)),
    ])
    spec = {"study": "digits", "dataset": "digits", "eps": 0.2, "pixel_units": 1, "blackbox_source": "natural_k500",
            "whitebox": [{"name": "pgd40_xent", "method": "pgd"}], "blackbox": [{"name": "pgd40_cw", "method": "pgd"}]}
    for name in ("accuracy", "whitebox", "blackbox"):
        columns, frame = tables.study_frame(name, rows, spec)
        notes = dict(zip(frame["model"], frame["note"].fillna("")))
        assert notes["sq5_noise0.3_k500"] == tables.COLLAPSED, name
        # the source's black-box numbers are white-box: marked where black-box columns are shown
        assert notes["natural_k500"] == ("" if name == "whitebox" else tables.SOURCE), name
        tex = render.to_latex(columns, frame, "c", "l", tables.tex_words)
        assert "training collapsed" in tex and render.to_html(columns, frame, "t", "c", tables.html_words).count("training collapsed") == 1


def test_an_unmarked_table_has_no_note_column() -> None:
    rows = pd.DataFrame([tables.build_row(_record("ls0.95_k500", 100.0, False))])
    spec = {"study": "digits", "dataset": "digits", "eps": 0.2, "pixel_units": 1, "blackbox_source": "natural_k500",
            "whitebox": [{"name": "pgd40_xent", "method": "pgd"}], "blackbox": [{"name": "pgd40_cw", "method": "pgd"}]}
    columns, _ = tables.study_frame("accuracy", rows, spec)
    assert "note" not in [c.key for c in columns]


# ---------------------------------------------------------------- Madry's details


def test_madry_init_of_the_mnist_cnn() -> None:
    torch.manual_seed(0)
    model = build_model("madry_cnn", 1, 28, 10, init="madry")
    assert isinstance(model, MadryCNN)
    for layer in (model.conv1, model.conv2, model.fc1, model.head):
        assert torch.all(layer.bias == 0.1)
        assert layer.weight.abs().max() <= 0.2 + 1e-6  # truncated at 2 std
    assert model.fc1.weight.std().item() == pytest.approx(0.088, abs=0.003)  # truncated normal std 0.1 -> 0.088
    default = build_model("madry_cnn", 1, 28, 10, init="pytorch")
    assert default.fc1.weight.std().item() < 0.02


def test_madry_init_of_the_wide_resnet() -> None:
    torch.manual_seed(0)
    model = build_model("resnet_small", 3, 32, 10, init="madry")
    assert isinstance(model, PreActResNet)
    conv = model.units[-1].conv2  # 3x3, 64 -> 64
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.05)
    bound = math.sqrt(3 / model.head.in_features)
    assert model.head.weight.abs().max() <= bound and model.head.weight.abs().max() > 0.9 * bound
    assert torch.all(model.head.bias == 0)
    with pytest.raises(ValueError, match="unknown initialisation"):
        build_model("madry_cnn", 1, 28, 10, init="xavier")


# ---------------------------------------------------------------- the studies


def _rows_without_training(study: str) -> pd.DataFrame:
    """The row-file columns paper.match reads, from the grid alone."""
    st = CONFIG["studies"][study]
    rows = []
    for entry in st["grid"]:
        adv = entry.get("adversarial") or {}
        rows.append({
            "model": sscfg.model_id(entry), "kind": tables.model_kind(entry), "alpha": entry.get("alpha", 0),
            "beta": entry.get("beta", 0), "sigma": entry.get("sigma", 0), "k": entry["k"], "adv_steps": adv.get("steps"),
            "adv_eps": adv.get("eps"), "pixel_units": st.get("pixel_units", 1),
        })
    return pd.DataFrame(rows)


def test_cifar10_black_box_source_is_never_its_own_target() -> None:
    st = CONFIG["studies"]["cifar10"]
    source = st["blackbox"]["source"]
    rows = _rows_without_training("cifar10")
    for table in ("table7", "table6"):
        paper_rows = paper.load(table, "cifar10")
        matched = paper.match(table, paper_rows, rows, 8 / 255, source)
        madry = [m for m, d in zip(matched, paper_rows["defense"]) if d == "madry_adv_train"]
        assert madry and all(m is not None and m != source for m in madry), (table, madry)
    twin = sscfg.resolve_model(CONFIG, "cifar10", "pgd7-eps8-step2_k80000_seed1")
    assert twin["seed"] == 1 and sscfg.resolve_model(CONFIG, "cifar10", source)["seed"] == 0


def test_mnist_crafts_the_x_ent_black_box_set_of_the_paper_madry_row() -> None:
    names = [a["name"] for a in CONFIG["studies"]["mnist"]["blackbox"]["attacks"]]
    assert "pgd40_xent" in names
    assert paper.PAPER_TABLES["table5"].row_metrics["madry_adv_train"]["blackbox_pgd40_cw"] == "blackbox_pgd40_xent"


def test_grid_seed_goes_into_the_model_id() -> None:
    assert sscfg.model_id({"k": 5, "seed": 3}) == "natural_k5_seed3"
    assert sscfg.model_id({"k": 5}) == "natural_k5"
