"""Gradient-masking audit: the checks on hand-made numbers, on a natural model and on a model
that masks its gradients on purpose, and the audit stage run by Snakemake on the tiny study."""
from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from conftest import TINY_CONFIG, run_snakemake
from smoothsqueeze.audit import model_audit as audit
from smoothsqueeze.audit import table as audit_table
from smoothsqueeze.cli import main as cli_main
from smoothsqueeze.evidence import intervals as iv
from smoothsqueeze.audit import flags as af
from smoothsqueeze.data import Dataset
from smoothsqueeze.errors import PipelineError
from smoothsqueeze.evidence.per_image import encode_results, record_masks
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
    assert result["masking_suspected"] in ("no", "within noise")
    assert result["restart_curves"]["pgd_xent"] == sorted(result["restart_curves"]["pgd_xent"], reverse=True)


def test_model_that_masks_gradients_is_flagged(natural: nn.Module, digits: Dataset) -> None:
    result = _audit(Quantized(natural), digits)
    acc = result["accuracy"]
    assert acc["clean"] > 80
    flags = result["flags"]
    assert flags["square_beats_gradients"]["raised"], flags["square_beats_gradients"]["evidence"]
    assert acc["square"] < acc["apgd_ce"] - 30
    assert result["masking_suspected"] == "yes"
    # AutoAttack's own check sees the zero gradients of the rounding.
    assert any("zero gradient" in message for message in result["autoattack_warnings"])


def test_claimed_robustness_from_the_record_is_checked(natural: nn.Module, digits: Dataset) -> None:
    """A record that claims far more robustness than the audit finds raises (f); a transfer
    attack that beats the white-box ones raises (a)."""
    # 100 attacked images (a record attacks at least the audited 80): what the record claims, image by image.
    planted = {"test": mask(100, 97), "whitebox_pgd40_xent": mask(100, 60), "whitebox_pgd40_cw": mask(100, 55, offset=5),
               "blackbox_pgd40_cw": mask(100, 20, offset=70)}
    record = {
        "n_test": 100,
        "accuracy": {key: 100.0 * m.mean() for key, m in planted.items()},
        "attacks": {"whitebox": {"pgd40_xent": {"method": "pgd", "loss": "xent"}, "pgd40_cw": {"method": "pgd", "loss": "cw"}}},
        "per_image": encode_results(range(100), planted),
    }
    result = _audit(natural, digits, record)
    # the claim is measured on the audited images: the first 80 of the record's 100
    assert result["claimed"]["n"] == N_IMAGES and result["claimed"]["n_record"] == 100
    assert result["claimed"]["pgd_xent"] == pytest.approx(100 * 60 / 80) and result["claimed"]["pgd_cw"] == pytest.approx(100 * 55 / 80)
    assert result["claimed"]["blackbox"]["pgd40_cw"] == pytest.approx(100 * 10 / 80)
    assert result["flags"]["claimed_overstated"]["verdict"] == "raised"
    assert result["flags"]["blackbox_beats_whitebox"]["verdict"] == "raised"
    # the strongest attack is per image over the audit's attacks and the record's, on the same images
    _idx, masks = record_masks(result, "audit")
    assert not (masks["strongest"] & ~masks["strongest_audit"]).any()
    assert not (masks["strongest"] & ~planted["whitebox_pgd40_cw"][:N_IMAGES]).any()
    assert not (masks["strongest"] & ~planted["blackbox_pgd40_cw"][:N_IMAGES]).any()
    assert result["accuracy"]["strongest"] == pytest.approx(100 * masks["strongest"].mean())
    pair = result["comparisons"]["claim_vs_strongest"]
    assert pair["claim"] == "record pgd_cw" and pair["only_b"] == 0
    assert pair["diff_pp"] == pytest.approx(result["claimed"]["pgd_cw"] - result["accuracy"]["strongest"])


def test_a_record_that_attacked_fewer_images_than_the_audit_is_refused(natural: nn.Module, digits: Dataset) -> None:
    few = {"test": mask(10, 9)}
    record = {"model_id": "m", "n_test": 10, "accuracy": {"test": 90.0}, "per_image": encode_results(range(10), few)}
    with pytest.raises(PipelineError, match="attacked 10 images, the audit 80"):
        _audit(natural, digits, record)


# ------------------------------------------------------------------ checks on numbers


def mask(n: int, right: int, offset: int = 0) -> np.ndarray:
    """n images, `right` of them correct (images offset .. offset + right - 1)."""
    out = np.zeros(n, dtype=bool)
    out[offset : offset + right] = True
    return out


def test_blackbox_flag_three_ways() -> None:
    n = 1000
    assert af.blackbox_beats_whitebox({"pgd": mask(n, 400)}, {"fgsm": mask(n, 100)}).verdict == "raised"
    # same images right: not raised (the interval of a zero difference reaches only the noise on 0 discordant images)
    assert af.blackbox_beats_whitebox({"pgd": mask(n, 400)}, {"fgsm": mask(n, 400)}).verdict == "not raised"
    # 3 images apart: within noise
    assert af.blackbox_beats_whitebox({"pgd": mask(n, 400)}, {"fgsm": mask(n, 397)}).verdict == "within noise"
    assert af.blackbox_beats_whitebox({"pgd": mask(n, 400)}, {}).verdict == "not checked"


def test_square_flag() -> None:
    n = 500
    flag = af.square_beats_gradients(mask(n, 25), {"apgd_ce": mask(n, 300), "pgd_cw": mask(n, 275)})
    assert flag.raised and "pgd_cw 55.0%" in flag.evidence and "250 images fall to Square alone" in flag.evidence
    assert af.square_beats_gradients(mask(n, 275), {"apgd_ce": mask(n, 300), "pgd_cw": mask(n, 275)}).verdict == "not raised"


def test_large_eps_flag() -> None:
    assert af.large_eps_not_broken(mask(200, 80), 0.5, 5.0).raised
    assert af.large_eps_not_broken(mask(200, 0), 0.5, 5.0).verdict == "not raised"  # Wilson upper bound 1.9% <= 5%
    assert af.large_eps_not_broken(mask(200, 8), 0.5, 5.0).verdict == "not raised"  # 4%: not above 5%
    assert af.large_eps_not_broken(mask(200, 12), 0.5, 5.0).verdict == "within noise"  # 6% [3.5, 10.2]: above, not beyond noise


def test_more_steps_flag() -> None:
    n = 1000
    assert af.more_steps_weaker({10: mask(n, 200), 40: mask(n, 450)}, {}).raised
    assert af.more_steps_weaker({10: mask(n, 200)}, {"pgd_xent": (100, 10, mask(n, 400))}).raised
    assert af.more_steps_weaker({10: mask(n, 300), 40: mask(n, 250), 100: mask(n, 240)}, {"pgd_xent": (100, 10, mask(n, 230))}).verdict == "not raised"
    # one more image right with more steps: within noise, not a verdict
    assert af.more_steps_weaker({10: mask(n, 300), 40: mask(n, 301)}, {}).verdict == "within noise"


def test_xent_gap_flag() -> None:
    n = 1000
    assert af.xent_gap({"apgd_ce": mask(n, 400)}, {"apgd_t": mask(n, 100)}, gap_pp=10).raised
    assert af.xent_gap({"apgd_ce": mask(n, 150)}, {"apgd_t": mask(n, 100)}, gap_pp=10).verdict == "not raised"


#: n large enough that the intervals (< 0.5 pp) never decide: each case below isolates one threshold.
BIG_N = 100_000


@pytest.mark.parametrize(
    ("claim", "strongest", "verdict"),
    [
        # "at least half the claim" (min_fraction 0.5), every drop far above the 10 pp minimum
        (80.0, 30.0, "raised"),   # drop 50 = 62% of the claim
        (80.0, 40.0, "not raised"),  # drop 40 = exactly half: not above the threshold
        (80.0, 39.9, "within noise"),  # drop 40.1: above half, but the threshold lies inside its interval
        (80.0, 42.0, "not raised"),  # drop 38 = 47%: 28 pp above the minimum, but less than half the claim
        (60.0, 50.0, "not raised"),  # drop 10 (17% of the claim) - fails both rules
        (80.0, 60.0, "not raised"),  # drop 20 = 25%: twice the pp minimum, half the fraction
        # "at least 10 points" (min_pp 10), every drop at least half the claim
        (15.0, 4.0, "raised"),    # drop 11 = 73%
        (15.0, 5.0, "not raised"),  # drop exactly 10 pp: not above the minimum
        (15.0, 4.9, "within noise"),  # drop 10.1 pp: above, inside the interval
        (15.0, 5.5, "not raised"),   # drop 9.5 pp = 63% of the claim
        (12.0, 4.0, "not raised"),   # drop 8 pp = 67% of the claim
    ],
)
def test_claimed_overstated_thresholds(claim: float, strongest: float, verdict: str) -> None:
    """The strongest attack is at most the claim image by image (it includes the claim's attack)."""
    c, s = mask(BIG_N, int(claim * BIG_N / 100)), mask(BIG_N, int(strongest * BIG_N / 100))
    flag = af.claimed_overstated({"pgd": c}, s, 10, 0.5)
    assert flag.verdict == verdict, flag.evidence
    assert flag.evidence.endswith(verdict)


def test_claimed_overstated_on_both_sides_of_the_threshold_at_a_small_n() -> None:
    """A planted claim of 40% on 200 images against the strongest attack: far below, near, and at the threshold."""
    claim = mask(200, 80)
    assert af.claimed_overstated({"pgd": claim}, mask(200, 20), 10, 0.5).verdict == "raised"  # 10%: drop 30 [21.2, 36.7]
    assert af.claimed_overstated({"pgd": claim}, mask(200, 76), 10, 0.5).verdict == "not raised"  # 38%: drop 2 [0, 5]
    assert af.claimed_overstated({"pgd": claim}, mask(200, 38), 10, 0.5).verdict == "within noise"  # 19%: drop 21 vs 20 = half the claim


def test_claimed_overstated_uses_its_parameters_and_the_lowest_claim() -> None:
    c12, s5 = mask(BIG_N, 12_000), mask(BIG_N, 5_000)
    assert af.claimed_overstated({"pgd": c12}, s5, 5, 0.5).raised  # 7 pp > 5, 58% >= 50%
    assert not af.claimed_overstated({"pgd": c12}, s5, 10, 0.5).raised  # 7 pp < 10
    c80, s60 = mask(BIG_N, 80_000), mask(BIG_N, 60_000)
    assert af.claimed_overstated({"pgd": c80}, s60, 10, 0.2).raised  # 25% > 20%
    assert not af.claimed_overstated({"pgd": c80}, s60, 10, 0.3).raised  # 25% < 30%
    # the lowest claim is the one compared: 16 vs 30 is a 14 pp drop but 47% of it (not raised);
    # against the higher claim of 90 it would be 82%
    lower, higher = mask(BIG_N, 30_000), mask(BIG_N, 90_000)
    assert af.claimed_overstated({"pgd_xent": higher, "pgd_cw": lower}, mask(BIG_N, 16_000), 10, 0.5).verdict == "not raised"
    assert af.claimed_overstated({"pgd_xent": higher, "pgd_cw": lower}, mask(BIG_N, 14_000), 10, 0.5).raised
    flag = af.claimed_overstated({}, mask(BIG_N, 0), 10, 0.5)
    assert flag.verdict == "not checked" and flag.evidence.startswith("not checked")


def test_masking_suspected_three_ways() -> None:
    up, down, noise = af.Flag("raised", ""), af.Flag("not raised", ""), af.Flag("within noise", "")
    assert af.masking_suspected({"a": down, "b": up}) == "yes"
    assert af.masking_suspected({"a": down, "b": noise}) == "within noise"
    assert af.masking_suspected({"a": down, "b": af.Flag("not checked", "")}) == "no"


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
        assert rows[model]["masking_suspected"] in ("yes", "no", "within noise")
        assert all(rec["flags"][name]["verdict"] in ("raised", "not raised", "within noise", "not checked") for name in af.FLAG_NAMES)
        # per-image results agree with the accuracies, and the strongest attack is at most every claim, image by image
        record = json.loads((tiny_copy / f"results/tiny/records/{model}.json").read_text())
        idx, rmasks = record_masks(record)
        assert list(idx) == list(range(record["n_test"]))
        assert set(rmasks) == set(claimed) - {"train"}
        for key, m in rmasks.items():
            assert 100 * m.mean() == pytest.approx(claimed[key])
        aidx, amasks = record_masks(rec, "audit")
        assert list(aidx) == list(range(rec["n"]))
        for key, m in amasks.items():
            if key.startswith("record_"):  # the record's own attacks, on the audited images
                section, _, name = key[len("record_"):].partition("_")
                assert (m == rmasks[f"{section}_{name}"][: rec["n"]]).all(), key
            else:
                assert 100 * m.mean() == pytest.approx(rec["accuracy"][key]), key
        for key, m in rmasks.items():
            assert not (amasks["strongest"] & ~m[: rec["n"]]).any(), key
    tex = (tiny_copy / "reports/tiny/tables/audit.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and "AutoAttack" in tex
    assert (tiny_copy / "results/tiny/logs/audit").is_dir()


@pytest.mark.slow
def test_snakemake_refuses_a_bad_audit_block(tiny_copy: Path, tmp_path: Path) -> None:
    cfg = _tiny_config_with_audit(tmp_path / "config.yaml", {"pgd": {"restarts": 0}})
    proc = run_snakemake(tiny_copy, "-n", "reports/tiny/tables/audit.csv", configfile=cfg, check=False)
    assert proc.returncode != 0
    assert "config error: studies.tiny.audit.pgd.restarts" in proc.stderr + proc.stdout


# ------------------------------------------------------------------ across seeds (audit table)

PLANT_SETTINGS = {"level": 0.95, "min_effect_pp": 2.0, "pgd": {"steps": 10, "restarts": 1, "losses": ["xent"]}, "large_eps01": 0.5,
                  "large_eps_max_accuracy": 5.0, "xent_gap_pp": 10.0, "overstated_pp": 10.0, "overstated_fraction": 0.5}


def planted_audit(seed: int, claim: np.ndarray, strongest: np.ndarray) -> dict:
    """An audit record of one seed with only the claim (the record's PGD) and the strongest attack."""
    masks = {"clean": np.ones(len(claim), bool), "strongest": strongest & claim, "record_whitebox_pgd40_xent": claim}
    flags = af.flags_from_masks(masks, PLANT_SETTINGS, {"pgd_xent": ["pgd40_xent"], "pgd_cw": []}, None)
    return {
        "model_id": f"m_k1_seed{seed}", "group": "m_k1", "entry": {"k": 1}, "n": len(claim), "settings": PLANT_SETTINGS,
        "claim_attacks": {"pgd_xent": ["pgd40_xent"], "pgd_cw": []},
        "accuracy": {"clean": 100.0, "strongest": 100 * (strongest & claim).mean(), "autoattack": None},
        "claimed": {"pgd_xent": 100 * claim.mean(), "pgd_cw": None},
        "comparisons": {"claim_vs_strongest": iv.paired(claim, strongest & claim).to_dict()},
        "flags": {name: flag.to_dict() for name, flag in flags.items()},
        "per_image": encode_results(range(len(claim)), masks),
    }


def test_a_flag_is_within_noise_when_two_seeds_disagree() -> None:
    claim = mask(200, 80)  # 40% claimed; threshold max(10, 20) = 20 points
    raised = planted_audit(0, claim, mask(200, 10))  # drop 35: raised
    calm = planted_audit(1, claim, mask(200, 76))  # drop 2: not raised
    assert raised["flags"]["claimed_overstated"]["verdict"] == "raised" and calm["flags"]["claimed_overstated"]["verdict"] == "not raised"
    row = audit_table.group_row([raised, calm])
    assert row["flag_claimed_overstated"] == "within noise" and "f?" in row["flags"]
    both = audit_table.group_row([raised, planted_audit(1, claim, mask(200, 12))])
    assert both["flag_claimed_overstated"] == "raised" and both["seeds"] == 2


def test_seeds_within_noise_alone_can_be_raised_on_their_pooled_images() -> None:
    """Each seed's drop (22 points against 20) is above the threshold but within its interval; three
    seeds' images pooled (600) resolve it."""
    claim = mask(200, 80)
    seeds = [planted_audit(s, claim, mask(200, 36)) for s in range(3)]
    assert all(a["flags"]["claimed_overstated"]["verdict"] == "within noise" for a in seeds)
    row = audit_table.group_row(seeds)
    assert row["flag_claimed_overstated"] == "within noise"  # 22 [~19.6, ~25.4] still straddles 20 with 600 images
    far = [planted_audit(s, claim, mask(200, 30)) for s in range(3)]  # drop 25 per seed: within noise alone
    assert all(a["flags"]["claimed_overstated"]["verdict"] == "within noise" for a in far)
    assert audit_table.group_row(far)["flag_claimed_overstated"] == "raised"
    assert af.combine_seeds(["not raised", "not raised"], "raised") == "not raised"
