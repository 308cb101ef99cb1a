"""The schema refuses each bad value with one line naming the key; model ids and resolution."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from smoothsqueeze import config as cfg

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "workflow" / "smoothsqueeze" / "resources" / "paper"  # the paper's numbers, shipped inside the package


@pytest.fixture(scope="module")
def shipped() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_shipped_config_is_valid(shipped: dict) -> None:
    config = cfg.validate_config(copy.deepcopy(shipped))
    assert set(config["studies"]) == {"digits", "fashion", "mnist5k", "mnist", "cifar10"}
    assert config["studies"]["digits"]["attack"]["max_examples"] is None


def _set(config: dict, path: list, value) -> dict:  # type: ignore[no-untyped-def]
    node = config
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return config


_DELETE = object()
BAD = [
    (["studies", "digits", "grid", 2, "alpha"], 1.5, "studies.digits.grid[2].alpha = 1.5"),
    (["studies", "digits", "grid", 2, "alpha"], -0.1, "studies.digits.grid[2].alpha = -0.1"),
    (["studies", "digits", "grid", 4, "beta"], -1, "studies.digits.grid[4].beta = -1"),
    (["studies", "digits", "grid", 1, "sigma"], -0.3, "studies.digits.grid[1].sigma = -0.3"),
    (["studies", "digits", "grid", 0, "k"], 0, "studies.digits.grid[0].k = 0"),
    (["studies", "digits", "dataset"], "imagenet", "studies.digits.dataset = 'imagenet'"),
    (["studies", "digits", "architecture"], "vgg", "studies.digits.architecture = 'vgg'"),
    (["studies", "digits", "grid", 0, "k"], _DELETE, "studies.digits.grid[0].k is missing"),
    (["studies", "digits", "seed"], _DELETE, "studies.digits.seed is missing"),
    (["default_study"], "imagenet", "default_study = 'imagenet'"),
    (["studies", "digits", "blackbox", "source"], "nosuch_k1", "studies.digits.blackbox.source = 'nosuch_k1'"),
    (["studies", "digits", "train", "optimizer"], "rmsprop", "studies.digits.train.optimizer = 'rmsprop'"),
    (["studies", "digits", "attack", "eps"], 0, "studies.digits.attack.eps = 0"),
]


@pytest.mark.parametrize(("path", "value", "expected"), BAD, ids=[b[2] for b in BAD])
def test_bad_value_is_refused_with_one_line_naming_key(shipped: dict, path: list, value, expected: str) -> None:  # type: ignore[no-untyped-def]
    config = _set(copy.deepcopy(shipped), path, value)
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate_config(config)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("config error: ")
    assert expected in message


def test_unknown_key_is_refused(shipped: dict) -> None:
    config = copy.deepcopy(shipped)
    config["studies"]["digits"]["train"]["learning_rate"] = 0.1
    with pytest.raises(cfg.ConfigError, match=r"studies\.digits\.train: unknown key.*learning_rate"):
        cfg.validate_config(config)


def test_duplicate_grid_entry_is_refused(shipped: dict) -> None:
    config = copy.deepcopy(shipped)
    natural = next(e for e in config["studies"]["digits"]["grid"] if set(e) == {"k"})  # the natural entry, whatever its k
    config["studies"]["digits"]["grid"].append(dict(natural))
    with pytest.raises(cfg.ConfigError, match=f"repeats model 'natural_k{natural['k']}'"):
        cfg.validate_config(config)


def test_defaults_are_filled(shipped: dict) -> None:
    config = copy.deepcopy(shipped)
    config["studies"]["digits"]["grid"] = [{"k": 5}]
    config["studies"]["digits"]["blackbox"]["source"] = "natural_k5"
    del config["studies"]["digits"]["train"]["log_every"]
    cfg.validate_config(config)
    entry = config["studies"]["digits"]["grid"][0]
    assert (entry["alpha"], entry["beta"], entry["sigma"]) == (0, 0, 0)
    assert config["studies"]["digits"]["train"]["log_every"] == 100


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"k": 3000}, "natural_k3000"),
        ({"alpha": 0.95, "sigma": 0.3, "k": 400000}, "ls0.95_noise0.3_k400000"),
        ({"beta": 10, "sigma": 30, "k": 80000}, "sq10_noise30_k80000"),
        ({"k": 100000, "adversarial": {"steps": 40, "step_size": 0.01, "eps": 0.3}}, "pgd40-eps0.3-step0.01_k100000"),
        ({"k": 5, "adversarial": {"steps": 2, "step_size": 0.1, "eps": 0.2, "random_start": False}}, "pgd2-eps0.2-step0.1-norand_k5"),
    ],
)
def test_model_id(entry: dict, expected: str) -> None:
    assert cfg.model_id(entry) == expected


def test_resolve_model_converts_pixel_units(shipped: dict) -> None:
    config = cfg.validate_config(copy.deepcopy(shipped))
    settings = cfg.resolve_model(config, "cifar10", "pgd7-eps8-step2_k80000")
    assert settings["adversarial"]["eps01"] == pytest.approx(8 / 255)
    assert settings["adversarial"]["step_size01"] == pytest.approx(2 / 255)
    ls = cfg.resolve_model(config, "cifar10", "ls0.95_noise30_k160000")
    assert ls["sigma01"] == pytest.approx(30 / 255) and ls["alpha"] == 0.95
    fgsm = cfg.resolve_attack({"name": "fgsm_cw", "method": "fgsm", "loss": "cw"}, 8, 255)
    assert fgsm["step_size01"] == fgsm["eps01"] == pytest.approx(8 / 255) and fgsm["steps"] == 1


def test_paper_studies_cover_every_table_row(shipped: dict) -> None:
    import csv

    config = cfg.validate_config(copy.deepcopy(shipped))
    mnist = {(e["alpha"], e["beta"], e["sigma"], e["k"]) for e in config["studies"]["mnist"]["grid"] if "adversarial" not in e}
    with open(PAPER / "mnist_table5.csv") as fh:
        for row in csv.DictReader(fh):
            if row["defense"] == "regularized":
                assert (float(row["alpha"]), float(row["beta"]), float(row["sigma"]), int(row["k"])) in mnist, row["row"]
    cifar = {(e["alpha"], e["beta"], e["sigma"], e["k"]) for e in config["studies"]["cifar10"]["grid"] if "adversarial" not in e}
    with open(PAPER / "cifar10_table6.csv") as fh:
        for row in csv.DictReader(fh):
            if row["defense"] == "regularized":
                assert (float(row["alpha"]), float(row["beta"]), float(row["sigma_255"]), int(row["k"])) in cifar, row["row"]
