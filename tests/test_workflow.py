"""Real Snakemake runs of the tiny study: every kind of grid entry trains and is evaluated."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, TINY_CONFIG, run_snakemake
from smoothsqueeze import load_model
from smoothsqueeze.config import load_config, model_ids


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table of a dry run."""
    counts: dict[str, int] = {}
    block = dry_run_output.split("Job stats:", 1)[1] if "Job stats:" in dry_run_output else ""
    for line in block.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


PER_MODEL_JOBS = ("train", "evaluate", "analyze", "audit", "table_row")
STUDY_JOBS = ("study_table", "figures", "cost_table", "audit_table", "frontier", "claims", "claims_overview", "html_report", "all")


def assert_only_one_models_jobs(counts: dict[str, int]) -> None:
    """One job per per-model stage, the study's aggregations re-run, nothing else (no black-box crafting)."""
    assert {name: counts.get(name) for name in PER_MODEL_JOBS} == dict.fromkeys(PER_MODEL_JOBS, 1), counts
    assert set(counts) <= set(PER_MODEL_JOBS) | set(STUDY_JOBS), counts
    assert "craft_blackbox" not in counts and "prepare_data" not in counts


@pytest.mark.slow
def test_tiny_study_builds_every_model(tiny_study: Path) -> None:
    config = load_config(TINY_CONFIG)
    for mid in model_ids(config, "tiny"):
        model_dir = tiny_study / "results" / "tiny" / "models" / mid
        metrics = json.loads((model_dir / "metrics.json").read_text())
        settings = json.loads((model_dir / "settings.json").read_text())
        assert metrics["iterations"] == settings["settings"]["k"]
        assert metrics["history"] and {"loss", "accuracy", "logit_norm"} <= set(metrics["history"][-1])
        assert settings["provenance"]["torch"] == torch.__version__ and settings["settings"]["seed"] == 0
        assert not (model_dir / "resume.pt").exists()
        record = json.loads((tiny_study / "results" / "tiny" / "records" / f"{mid}.json").read_text())
        acc = record["accuracy"]
        assert set(acc) == {"train", "test", "whitebox_pgd5_xent", "whitebox_pgd5_cw", "whitebox_fgsm_xent", "whitebox_fgsm_cw", "blackbox_fgsm_cw", "blackbox_pgd5_cw"}
        assert all(0 <= v <= 100 for v in acc.values())
        assert record["n_test"] == 60 and record["inputs"]["checkpoint_sha256"]
        assert record["attacks"]["whitebox"]["pgd5_xent"]["eps01"] == 0.2
    log = (tiny_study / "results" / "tiny" / "logs" / "train" / "natural_k40.log").read_text()
    assert re.search(r"iter 40/40 \(100%\) loss [\d.]+ acc [\d.]+% .* it/s, eta 0:00:00", log)


@pytest.mark.slow
def test_second_run_schedules_nothing(tiny_copy: Path) -> None:
    out = run_snakemake(tiny_copy, "-n")
    assert "Nothing to be done" in out.stdout + out.stderr


@pytest.mark.slow
def test_adding_a_model_trains_and_evaluates_only_it(tiny_copy: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["studies"]["tiny"]["grid"].append({"alpha": 0.5, "sigma": 0.1, "k": 40})
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(yaml.safe_dump(config))
    out = run_snakemake(tiny_copy, "-n", configfile=bigger)
    counts = job_counts(out.stdout)
    assert_only_one_models_jobs(counts)
    assert "ls0.5_noise0.1_k40" in out.stdout


@pytest.mark.slow
def test_changing_one_models_settings_retrains_only_it(tiny_copy: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["studies"]["tiny"]["grid"][3]["sigma"] = 0.4  # sq0.5_noise0.3_k40 -> sq0.5_noise0.4_k40
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    out = run_snakemake(tiny_copy, "-n", configfile=changed)
    assert_only_one_models_jobs(job_counts(out.stdout))


@pytest.mark.slow
def test_loaded_model_is_usable_outside_the_pipeline(tiny_study: Path) -> None:
    from smoothsqueeze import check_budget, pgd
    from smoothsqueeze.data import load_dataset

    model = load_model(tiny_study / "results" / "tiny" / "models" / "natural_k40" / "model.pt")
    assert not model.training
    data = load_dataset(tiny_study / "data" / "digits.npz")
    x, y = data.scale(data.x_test[:20]), data.y_test[:20]
    x_adv = pgd(model, x, y, eps=0.2, step_size=0.05, steps=5)
    check_budget(x, x_adv, 0.2)
    clean = (model(x).argmax(1) == y).float().mean().item()
    robust = (model(x_adv).argmax(1) == y).float().mean().item()
    # The loaded natural model classifies (85% of these 20 here) and PGD breaks it (15%): a model that
    # did not load its weights sits at chance, and an attack that did nothing leaves robust == clean.
    assert clean >= 0.6 and robust <= clean - 0.4, (clean, robust)


@pytest.mark.slow
def test_paper_studies_list_one_training_job_per_row(tmp_path: Path) -> None:
    # mnist: 37 distinct Table 5 settings + natural, Madry 40-step, 2-step; cifar10: 19 Table 6/7 rows +
    # natural, Madry 7-step (the black-box source), its seeded twin (Table 7's Madry row), 2-step.
    # each + 2: FGSM-RS and N-FGSM (issue 27)
    for study, models, sets in (("mnist", 42, 3), ("cifar10", 25, 6), ("fashion", 11, 3)):
        out = run_snakemake(tmp_path, "-n", study, configfile=ROOT / "config.yaml")
        counts = job_counts(out.stdout)
        assert counts["train"] == models and counts["evaluate"] == models, counts
        assert counts["craft_blackbox"] == sets
