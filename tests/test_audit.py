"""Gradient-masking audit: the checks on hand-made numbers, on a natural model and on a model
that masks its gradients on purpose, and the audit stage run by Snakemake on the tiny study."""
from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from conftest import TINY_CONFIG, run_snakemake
from smoothsqueeze import audit
from smoothsqueeze.cli import main as cli_main
from smoothsqueeze import audit_flags as af
from smoothsqueeze.data import Dataset
from smoothsqueeze.errors import PipelineError
from smoothsqueeze.train import train_model

#: Budgets small enough for tests; every attack of the audit still runs.
TINY_AUDIT = {
    "autoattack": {"apgd_iter": 10, "apgd_t_targets": 2, "fab_iter": 5, "fab_targets": 2, "square_queries": 200},
    "pgd": {"steps": 20, "restarts": 2},
    "sweep_steps": [5, 20],
    "large_eps_steps": 20,
}
N_IMAGES = 80


def _study(audit_block: dict | None = None, units: float = 1) -> dict:
    study = {"seed": 0, "pixel_units": units, "attack": {"eps": 0.2 * units, "batch_size": 100, "max_examples": None}}
    if audit_block is not None:
        study["audit"] = audit_block
    return study


class Quantized(nn.Module):
    """Masks gradients on purpose: rounds its input to 4 grey levels (torch.round has zero gradient)."""

    def __init__(self, model: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * self.levels) / self.levels)


@pytest.fixture(scope="module")
def natural(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    """Madry's CNN trained naturally on the 8x8 digits for 300 iterations (about a second)."""
    settings = {
        "seed": 0, "architecture": "madry_cnn", "k": 300, "alpha": 0, "beta": 0, "sigma01": 0, "adversarial": None,
        "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 50, "log_every": 300, "checkpoint_every": 1000},
    }
    model, metrics = train_model(settings, digits, tmp_path_factory.mktemp("natural"), torch.device("cpu"), log=lambda _: None)
    assert metrics["test_accuracy"] > 90
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


def _audit(model: nn.Module, digits: Dataset, record: dict | None = None) -> dict:
    settings = audit.resolve_settings(_study(TINY_AUDIT), "test")
    x, y = digits.scale(digits.x_test[:N_IMAGES]), digits.y_test[:N_IMAGES]
    return audit.audit_model(model, x, y, settings, record, log=lambda _: None)


# ------------------------------------------------------------------ models


def test_natural_model_is_not_flagged_and_breaks_at_large_eps(natural: nn.Module, digits: Dataset) -> None:
    result = _audit(natural, digits)
    acc = result["accuracy"]
    assert acc["clean"] > 90
    assert acc["large_eps"] <= 1.0, result["large_eps"]
    assert acc["autoattack"] <= 10.0
    assert acc["strongest"] <= min(acc[k] for k in ("apgd_ce", "apgd_t", "fab_t", "square", "pgd_xent", "pgd_cw"))
    raised = {name: flag["evidence"] for name, flag in result["flags"].items() if flag["raised"]}
    assert not raised
    assert result["masking_suspected"] is False
    assert result["restart_curves"]["pgd_xent"] == sorted(result["restart_curves"]["pgd_xent"], reverse=True)


def test_model_that_masks_gradients_is_flagged(natural: nn.Module, digits: Dataset) -> None:
    result = _audit(Quantized(natural), digits)
    acc = result["accuracy"]
    assert acc["clean"] > 80
    flags = result["flags"]
    assert flags["square_beats_gradients"]["raised"], flags["square_beats_gradients"]["evidence"]
    assert acc["square"] < acc["apgd_ce"] - 30
    assert result["masking_suspected"] is True
    # AutoAttack's own check sees the zero gradients of the rounding.
    assert any("zero gradient" in message for message in result["autoattack_warnings"])


def test_claimed_robustness_from_the_record_is_checked(natural: nn.Module, digits: Dataset) -> None:
    """A record that claims far more robustness than the audit finds raises (f); a transfer
    attack that beats the white-box ones raises (a)."""
    record = {
        "n_test": N_IMAGES,
        "accuracy": {"test": 97.0, "whitebox_pgd40_xent": 60.0, "whitebox_pgd40_cw": 55.0, "blackbox_pgd40_cw": 20.0},
        "attacks": {"whitebox": {"pgd40_xent": {"method": "pgd", "loss": "xent"}, "pgd40_cw": {"method": "pgd", "loss": "cw"}}},
    }
    result = _audit(natural, digits, record)
    assert result["claimed"]["pgd_xent"] == 60.0 and result["claimed"]["pgd_cw"] == 55.0
    assert result["flags"]["claimed_overstated"]["raised"]
    assert result["flags"]["blackbox_beats_whitebox"]["raised"]
    assert result["accuracy"]["strongest_with_record_aggregate"] == result["accuracy"]["strongest"]


# ------------------------------------------------------------------ checks on numbers


def test_noise_allows_for_sample_size() -> None:
    assert af.noise_pp(50, 50, 100) > af.noise_pp(50, 50, 10000)
    assert af.noise_pp(0, 0, 200) == pytest.approx(0.5)  # one example's worth


def test_blackbox_flag() -> None:
    assert af.blackbox_beats_whitebox({"pgd": 40.0}, {"fgsm": 10.0}, 1000).raised
    assert not af.blackbox_beats_whitebox({"pgd": 40.0}, {"fgsm": 39.0}, 1000).raised
    assert not af.blackbox_beats_whitebox({"pgd": 40.0}, {}, 1000).raised


def test_square_flag() -> None:
    flag = af.square_beats_gradients(5.0, {"apgd_ce": 60.0, "pgd_cw": 55.0}, 500, only_square=250)
    assert flag.raised and "pgd_cw 55.0%" in flag.evidence
    assert not af.square_beats_gradients(54.0, {"apgd_ce": 60.0, "pgd_cw": 55.0}, 500).raised


def test_large_eps_flag() -> None:
    assert af.large_eps_not_broken(40.0, 0.5, 5.0).raised
    assert not af.large_eps_not_broken(0.0, 0.5, 5.0).raised


def test_more_steps_flag() -> None:
    assert af.more_steps_weaker({10: 20.0, 40: 45.0}, {}, 1000).raised
    assert af.more_steps_weaker({10: 20.0}, {"pgd_xent": (100, 10, 40.0)}, 1000).raised
    assert not af.more_steps_weaker({10: 30.0, 40: 25.0, 100: 24.0}, {"pgd_xent": (100, 10, 23.0)}, 1000).raised


def test_xent_gap_and_overstated_flags() -> None:
    assert af.xent_gap({"apgd_ce": 40.0}, {"apgd_t": 10.0}, 1000, gap_pp=10).raised
    assert not af.xent_gap({"apgd_ce": 15.0}, {"apgd_t": 10.0}, 1000, gap_pp=10).raised
    assert af.claimed_overstated({"pgd": 40.0}, 11.0, 1000, 10, 0.5).raised
    assert not af.claimed_overstated({"pgd": 3.0}, 0.3, 1000, 10, 0.5).raised  # 90% of the claim, but 2.7 pp


#: n so large that sampling noise (< 0.2 pp) never decides: each case below isolates one threshold.
BIG_N = 10**6


@pytest.mark.parametrize(
    ("claim", "strongest", "raised"),
    [
        # "at least half the claim" (min_fraction 0.5), every drop far above the 10 pp minimum
        (80.0, 30.0, True),   # drop 50 = 62% of the claim
        (80.0, 40.0, True),   # drop 40 = exactly 50%: the rule is ">=", so raised
        (80.0, 40.5, False),  # drop 39.5 = 49%: 29 pp above the minimum, but less than half the claim
        (60.0, 50.0, False),  # drop 10 (17% of the claim) - fails both rules
        (80.0, 60.0, False),  # drop 20 = 25%: twice the pp minimum, half the fraction
        # "at least 10 points" (min_pp 10), every drop at least half the claim
        (15.0, 4.0, True),    # drop 11 = 73%
        (15.0, 5.0, False),   # drop exactly 10 pp: the rule is ">", so not raised
        (15.0, 5.5, False),   # drop 9.5 pp = 63% of the claim
        (12.0, 4.0, False),   # drop 8 pp = 67% of the claim
    ],
)
def test_claimed_overstated_thresholds(claim: float, strongest: float, raised: bool) -> None:
    flag = af.claimed_overstated({"pgd": claim}, strongest, BIG_N, 10, 0.5)
    assert flag.raised is raised, flag.evidence
    assert ("- overstated" if raised else "not overstated") in flag.evidence


def test_claimed_overstated_uses_its_parameters_the_noise_and_the_lowest_claim() -> None:
    # min_pp and min_fraction are the caller's, not constants
    assert af.claimed_overstated({"pgd": 12.0}, 5.0, BIG_N, 5, 0.5).raised  # 7 pp > 5, 58% >= 50%
    assert not af.claimed_overstated({"pgd": 12.0}, 5.0, BIG_N, 10, 0.5).raised  # 7 pp < 10
    assert af.claimed_overstated({"pgd": 80.0}, 60.0, BIG_N, 10, 0.25).raised  # 25% >= 25%
    assert not af.claimed_overstated({"pgd": 80.0}, 60.0, BIG_N, 10, 0.3).raised  # 25% < 30%
    # sampling noise raises the bar above min_pp: 20 pp at 50% vs 30% is beyond noise on 100 examples
    # (2 standard errors = 13.9 pp) but not on 30 (25.3 pp)
    assert af.noise_pp(50.0, 30.0, 100) == pytest.approx(13.86, abs=0.01)
    assert af.claimed_overstated({"pgd": 50.0}, 30.0, 100, 10, 0.3).raised
    assert not af.claimed_overstated({"pgd": 50.0}, 30.0, 30, 10, 0.3).raised
    # the lowest claim is the one compared: 16 vs 30 is a 14 pp drop but 47% of it (not raised);
    # against the higher claim of 90 it would be 82%
    assert not af.claimed_overstated({"pgd_xent": 90.0, "pgd_cw": 30.0}, 16.0, BIG_N, 10, 0.5).raised
    assert af.claimed_overstated({"pgd_xent": 90.0, "pgd_cw": 30.0}, 14.0, BIG_N, 10, 0.5).raised
    # nothing claimed: not checked
    flag = af.claimed_overstated({}, 0.0, BIG_N, 10, 0.5)
    assert not flag.raised and flag.evidence.startswith("not checked")


# ------------------------------------------------------------------ settings


def test_settings_defaults_and_units() -> None:
    s = audit.resolve_settings(_study({"pgd": {"restarts": 10}}, units=255), "cifar")
    assert s["eps01"] == pytest.approx(0.2)
    assert s["large_eps01"] == pytest.approx(0.5) and "large_eps" not in s and "eps" not in s
    assert s["pgd"] == {**audit.DEFAULTS["pgd"], "restarts": 10}
    assert s["autoattack"] == audit.DEFAULTS["autoattack"]
    assert s["batch_size"] == 100 and s["seed"] == 0


@pytest.mark.parametrize(
    ("block", "where"),
    [({"pgd": {"stepz": 3}}, "studies.x.audit.pgd"), ({"autoattack": {"attacks": ["pgd"]}}, "studies.x.audit.autoattack.attacks[0]"),
     ({"sweep_steps": [0]}, "studies.x.audit.sweep_steps[0]")],
)
def test_bad_settings_give_one_line(block: dict, where: str) -> None:
    with pytest.raises(PipelineError) as err:
        audit.resolve_settings(_study(block), "x")
    # One line naming the key, in the config checker's words (the block is typed in the one schema).
    assert re.match(rf"config error: {re.escape(where)}( = [^:]*)?: ", str(err.value)) and "\n" not in str(err.value), err.value


def test_cli_reports_missing_checkpoint_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = json.dumps({"settings": audit.resolve_settings(_study(TINY_AUDIT), "x")})
    code = cli_main(["audit", "--spec", spec, "--checkpoint", str(tmp_path / "none.pt"), "--data", "x.npz", "--out", str(tmp_path / "a.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert not (tmp_path / "a.json").exists()


# ------------------------------------------------------------------ workflow


def _tiny_config_with_audit(path: Path, block: dict) -> Path:
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["studies"]["tiny"]["audit"] = copy.deepcopy(block)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_snakemake_audits_every_model_of_the_tiny_study(tiny_copy: Path, tmp_path: Path) -> None:
    cfg = _tiny_config_with_audit(tmp_path / "config.yaml", TINY_AUDIT)
    targets = [f"reports/tiny/tables/audit.{ext}" for ext in ("csv", "tex", "html")]
    run_snakemake(tiny_copy, *targets, "--resources", "gpu=2", configfile=cfg)
    models = [p.stem for p in sorted((tiny_copy / "results/tiny/records").glob("*.json"))]
    assert len(models) == 5
    with open(tiny_copy / "reports/tiny/tables/audit.csv", newline="") as fh:
        rows = {row["model"]: row for row in csv.DictReader(fh)}
    assert sorted(rows) == models
    for model in models:
        rec = json.loads((tiny_copy / f"results/tiny/audit/{model}.json").read_text())
        claimed = json.loads((tiny_copy / f"results/tiny/records/{model}.json").read_text())["accuracy"]
        assert rec["n"] == 60 and rec["settings"]["pgd"]["steps"] == TINY_AUDIT["pgd"]["steps"]
        assert set(rec["flags"]) == set(af.FLAG_NAMES)
        assert float(rows[model]["claimed_pgd_xent"]) == pytest.approx(claimed["whitebox_pgd5_xent"], abs=0.006)
        assert float(rows[model]["strongest"]) <= float(rows[model]["autoattack"]) + 1e-9
        assert rows[model]["masking_suspected"] in ("yes", "no")
    tex = (tiny_copy / "reports/tiny/tables/audit.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and "AutoAttack" in tex
    assert (tiny_copy / "results/tiny/logs/audit").is_dir()


@pytest.mark.slow
def test_snakemake_refuses_a_bad_audit_block(tiny_copy: Path, tmp_path: Path) -> None:
    cfg = _tiny_config_with_audit(tmp_path / "config.yaml", {"pgd": {"restarts": 0}})
    proc = run_snakemake(tiny_copy, "-n", "reports/tiny/tables/audit.csv", configfile=cfg, check=False)
    assert proc.returncode != 0
    assert "config error: studies.tiny.audit.pgd.restarts" in proc.stderr + proc.stdout
