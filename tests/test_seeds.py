"""Seeds: a grid entry trained once per seed, each seed its own model and jobs; tables and the
audit aggregate a grid entry's seeds."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from conftest import TINY_CONFIG, run_snakemake
from smoothsqueeze import config as cfg
from smoothsqueeze import study
from smoothsqueeze.config import ConfigError
from smoothsqueeze.study import Plan
from test_workflow import job_counts

BASE = {
    "dataset": "digits", "architecture": "madry_cnn", "seed": 0,
    "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 50},
    "attack": {"eps": 0.2, "whitebox": [{"name": "fgsm_cw", "method": "fgsm", "loss": "cw"}]},
    "blackbox": {"source": "natural_k10", "attacks": []},
}


def _config(**study_keys: object) -> dict:
    st = {**copy.deepcopy(BASE), **study_keys}
    return cfg.validate_config({"default_study": "s", "studies": {"s": st}})


def test_study_seeds_expand_every_entry_and_keep_the_study_seeds_ids() -> None:
    plan = Plan(_config(seeds=[0, 1, 2], grid=[{"k": 10}, {"alpha": 0.9, "k": 10}]))
    assert plan.model_ids("s") == ["natural_k10", "natural_k10_seed1", "natural_k10_seed2", "ls0.9_k10", "ls0.9_k10_seed1", "ls0.9_k10_seed2"]
    assert plan.groups("s") == {"natural_k10": ["natural_k10", "natural_k10_seed1", "natural_k10_seed2"],
                                "ls0.9_k10": ["ls0.9_k10", "ls0.9_k10_seed1", "ls0.9_k10_seed2"]}
    assert plan.primary_model_ids("s") == ["natural_k10", "ls0.9_k10"]
    assert [plan.train_spec("s", m)["seed"] for m in plan.groups("s")["ls0.9_k10"]] == [0, 1, 2]
    spec = plan.evaluate_spec("s", "ls0.9_k10_seed2")["info"]
    assert spec["group"] == "ls0.9_k10" and spec["train_seed"] == 2
    # the attacks' seed stays the study's: every seed's model is attacked on the same images with the same starts
    assert plan.evaluate_spec("s", "ls0.9_k10_seed2")["seed"] == 0


def test_the_study_seeds_model_has_the_spec_it_had_without_seeds() -> None:
    """Adding seeds to a finished study must not change a finished model's training job."""
    before = Plan(_config(grid=[{"k": 10}, {"alpha": 0.9, "k": 10}]))
    after = Plan(_config(seeds=[0, 1], grid=[{"k": 10}, {"alpha": 0.9, "k": 10}]))
    for model in ("natural_k10", "ls0.9_k10"):
        assert study.as_json(after.train_spec("s", model)) == study.as_json(before.train_spec("s", model))


def test_an_entry_overrides_the_study_seeds_and_a_legacy_seed_is_its_own_group() -> None:
    plan = Plan(_config(seeds=[0, 1], grid=[{"k": 10, "seeds": [0, 3]}, {"alpha": 0.9, "k": 10, "seed": 5}, {"sigma": 0.3, "k": 10}]))
    assert plan.groups("s") == {"natural_k10": ["natural_k10", "natural_k10_seed3"], "ls0.9_k10_seed5": ["ls0.9_k10_seed5"],
                                "noise0.3_k10": ["noise0.3_k10", "noise0.3_k10_seed1"]}
    assert "seeds" not in plan.train_spec("s", "natural_k10_seed3")["config_entry"]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"seeds": [0, 1], "grid": [{"k": 10}, {"k": 10, "seed": 1}]}, "repeats model 'natural_k10_seed1'"),
        ({"grid": [{"k": 10, "seed": 1, "seeds": [1, 2]}]}, "either seed (one model) or seeds"),
        ({"seeds": [0, 0], "grid": [{"k": 10}]}, "studies.s.seeds"),
        ({"seeds": [], "grid": [{"k": 10}]}, "studies.s.seeds"),
        ({"grid": [{"k": 10, "seeds": [-1]}]}, "studies.s.grid[0].seeds[0]"),
    ],
)
def test_bad_seeds_are_one_line_errors(keys: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(**keys)
    assert message in str(err.value) and "\n" not in str(err.value), err.value


def test_model_ids_of_the_config_module_follow_the_seeds() -> None:
    config = _config(seeds=[0, 1], grid=[{"k": 10}])
    assert cfg.model_ids(config, "s") == ["natural_k10", "natural_k10_seed1"]
    assert cfg.resolve_model(config, "s", "natural_k10_seed1")["seed"] == 1


@pytest.mark.slow
def test_adding_a_seed_builds_only_its_own_jobs(tiny_copy: Path, tmp_path: Path) -> None:
    """The tiny study built with one seed; with `seeds: [0, 1]` only the seed-1 models' jobs run, no
    black-box set is crafted again and no finished model is retrained."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["studies"]["tiny"]["seeds"] = [0, 1]
    seeded = tmp_path / "seeded.yaml"
    seeded.write_text(yaml.safe_dump(config))
    out = run_snakemake(tiny_copy, "-n", configfile=seeded)
    counts = job_counts(out.stdout)
    n_models = len(config["studies"]["tiny"]["grid"])
    assert counts["train"] == n_models and counts["evaluate"] == n_models and counts["audit"] == n_models
    trained = set(re.findall(r"rule train:.*?model=([^\s,]+)", out.stdout, flags=re.S))
    assert trained and all(m.endswith("_seed1") for m in trained), trained
    assert "craft_blackbox" not in counts and "prepare_data" not in counts
