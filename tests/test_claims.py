"""The claims ledger (smoothsqueeze.claims): planted records drive every claim's verdict to each value
its rule allows; a missing input gives "not testable here"; a difference inside the noise floor gives
"within noise"; the audit's strongest attack turns "holds" into "holds under the paper's attacks
only" and back; C21 both ways. Torch-free, except the slow test at the end, which builds the tiny
study and checks the ledger's files and when the ledger is rebuilt.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smoothsqueeze import study as plan_mod
from smoothsqueeze.claims import console, inputs, ledger, measure, registry
from smoothsqueeze.claims.measure import FAILS, HOLDS, NOT_TESTABLE, PAPER_ONLY, WITHIN_NOISE
from smoothsqueeze.evidence import per_image

N, N_AUDIT = 200, 150
ADV = {"steps": 10, "step_size": 0.05, "eps": 0.2}
ADV2 = {"steps": 2, "step_size": 0.1, "eps": 0.2}
WHITEBOX = {"pgd40_xent": {"method": "pgd", "loss": "xent"}, "pgd40_cw": {"method": "pgd", "loss": "cw"},
            "fgsm_xent": {"method": "fgsm", "loss": "xent", "random_start": False}}
BLACKBOX = {"fgsm_cw": {"method": "fgsm", "loss": "cw"}, "pgd40_cw": {"method": "pgd", "loss": "cw"}}


def first(k: int, n: int = N) -> np.ndarray:
    """k correct images: the first k (so two such masks are nested: the paired test sees every difference)."""
    return np.arange(n) < k


def planted_arrays(seed: int, n: int = N, **centre: float) -> dict[str, np.ndarray]:
    """Analysis arrays around the given centres (defaults: a natural-looking model)."""
    rng = np.random.default_rng(seed)
    c = {"logit_gap": 10.0, "grad_gap": 2.0, "cos": 0.2, "z_y": 12.0, "grad_norm_y": 3.0, "cos_spread": 0.05, "dead": 0.0} | centre

    def around(mu: float, shape: tuple[int, ...], rel: float = 0.1) -> np.ndarray:
        return mu + rng.normal(0, abs(mu) * rel + 1e-3, shape)

    gap = around(c["logit_gap"], (n, 9))
    grad = np.abs(around(c["grad_gap"], (n, 9)))
    feats = np.abs(rng.normal(5, 1, 1024))
    feats[: int(c["dead"] * 1024)] = 0.0
    return {
        "labels": np.zeros(n, int), "predictions": np.zeros(n, int), "logit_gap_all": gap, "grad_gap_all": grad, "eps_l_all": gap / grad,
        "cos_all": c["cos"] + rng.normal(0, c["cos_spread"], (n, 9)), "z_y": around(c["z_y"], (n,)),
        "grad_norm_y": np.abs(around(c["grad_norm_y"], (n,))), "eps": np.float64(0.2), "feature_abs_sum": feats,
    }


#: Analysis arrays of each kind, as the paper describes them (a test may override any value).
KIND_ARRAYS: dict[str, dict[str, float]] = {
    "natural": {}, "noise": {"grad_gap": 1.5, "logit_gap": 11.0}, "ls": {"logit_gap": 3.0, "grad_gap": 1.8},
    "ls_noise": {"grad_gap": 0.5, "grad_norm_y": 0.5, "cos": 0.4}, "lsq": {"logit_gap": 4.0},
    "lsq_noise": {"grad_gap": 0.5, "grad_norm_y": 0.5, "cos_spread": 0.3, "logit_gap": 14.0},
    "adv": {"logit_gap": 5.0, "grad_gap": 0.3, "cos": 0.3, "z_y": 5.0, "dead": 0.4},
}


class Lab:
    """A planted study: models with records, audits, analysis arrays, metrics and costs, built in memory."""

    def __init__(self, dataset: str = "digits", eps: float = 0.2) -> None:
        self.dataset, self.eps = dataset, eps
        self.models: dict[str, inputs.Model] = {}
        self.source: str | None = None

    def add(self, entry: dict[str, Any], *, clean: int = 190, pgd: int = 10, fgsm: int = 40, bb: int = 20, strongest: int | None = None,
            collapsed: bool = False, seed: int | None = None, per_image: bool = True, arrays: dict[str, float] | None = None,
            cost: float | None = 10.0, passes: int | None = None, guard: bool = False, audit: bool = True, record: bool = True,
            eq4: int | None = None) -> inputs.Model:
        entry = {"k": 1000, **entry}
        mid = plan_mod.model_id(entry) + (f"_seed{seed}" if seed else "")
        group = plan_mod.model_id(entry)
        masks = {"test": first(clean), "whitebox_pgd40_xent": first(pgd), "whitebox_pgd40_cw": first(pgd), "whitebox_fgsm_xent": first(fgsm),
                 "blackbox_fgsm_cw": first(bb + 10), "blackbox_pgd40_cw": first(bb)}
        rec = {
            "model_id": mid, "entry": entry, "n_test": N, "group": group, "train_seed": seed or 0,
            "accuracy": {"train": 15.0 if collapsed else 99.0, **{k: 100 * m.mean() for k, m in masks.items()}},
            "attacks": {"whitebox": WHITEBOX, "blackbox": BLACKBOX}, "training": {"collapsed": collapsed},
        }
        if per_image:
            rec["per_image"] = per_image_block(N, masks)
        s = pgd if strongest is None else strongest
        aud = {"n": N_AUDIT, "accuracy": {"clean": 100 * first(clean, N_AUDIT).mean(), "strongest": 100 * first(s, N_AUDIT).mean()}}
        if per_image:
            aud["per_image"] = per_image_block(N_AUDIT, {"clean": first(clean, N_AUDIT), "strongest": first(min(s, pgd), N_AUDIT)})
        arr = planted_arrays(len(self.models), **(KIND_ARRAYS.get(plan_mod.kind(entry), {}) | (arrays or {})))
        if eq4 is not None:  # eq4 images predicted robust: eps_L above eps on every wrong class for the first eq4
            arr["eps_l_all"] = np.where(first(eq4)[:, None], 1.0, 0.0) * np.ones((N, 9))
        metrics = {"training_passes": passes} if passes is not None else {}
        if guard:
            metrics["guard"] = {"overfitting_detected": True, "reason": "planted"}
        m = inputs.Model(mid, entry, group, seed or 0, {"record": f"records/{mid}.json", "audit": f"audit/{mid}.json", "analysis": f"analysis/{mid}.npz"},
                         rec if record else None, aud if audit else None, metrics,
                         {"model": mid, "k": entry["k"], "train_loop_cpu_s_per_1k_iter": cost} if cost is not None else None, arr)
        self.models[mid] = m
        return m

    def evidence(self) -> inputs.StudyEvidence:
        return inputs.StudyEvidence("planted", self.dataset, self.eps, 1.0, self.source, dict(self.models))


def per_image_block(n: int, masks: dict[str, np.ndarray]) -> dict[str, Any]:
    return per_image.encode_results(np.arange(n), masks)


def verdict(lab: Lab, cid: str) -> dict[str, Any]:
    return ledger.evaluate_claim(registry.CLAIMS[cid], lab.evidence())


def base_lab(dataset: str = "digits") -> Lab:
    """Natural, noise, LS, LS + noise, LSQ, LSQ + noise and two PGD adversarial models, all plausible."""
    lab = Lab(dataset)
    lab.add({}, pgd=2, bb=2)
    lab.source = "natural_k1000"
    lab.add({"sigma": 0.3}, pgd=20, bb=120)
    lab.add({"alpha": 0.95}, pgd=0, bb=30)
    lab.add({"alpha": 0.95, "sigma": 0.3}, pgd=100, bb=140)
    lab.add({"beta": 2}, pgd=0, bb=30)
    lab.add({"beta": 2, "sigma": 0.3}, pgd=110, bb=150)
    lab.add({"adversarial": ADV}, pgd=120, bb=160, cost=110.0)
    lab.add({"adversarial": ADV2}, pgd=90, bb=150, cost=30.0)
    return lab


# ---------------------------------------------------------------- the registry itself


def test_every_claim_is_registered_once_with_its_rule_in_words_and_code() -> None:
    assert list(registry.CLAIMS) == [f"C{i}" for i in range(1, 22)]
    for c in registry.CLAIMS.values():
        assert c.statement and c.where and c.paper and c.needs and len(c.rule_text) > 60, c.id
        assert set(c.reads) <= set(registry.ARTIFACTS) and callable(c.rule)


def test_the_claims_ids_and_statements_follow_claims_md() -> None:
    md = Path(__file__).resolve().parents[1].parent / "shared" / "paper" / "claims.md"
    if not md.exists():
        pytest.skip("shared/paper/claims.md is not beside the repository")
    ids = re.findall(r"^\| (C\d+) \|", md.read_text(), re.M)
    assert ids == list(registry.CLAIMS)


def test_the_rule_reads_exactly_what_the_claims_read() -> None:
    """The claims rule's inputs are the artifact kinds the registry's claims read (records, audits, analysis, metrics, cost)."""
    config = {"results_dir": "results", "reports_dir": "reports", "data_dir": "data", "default_study": "s",
              "studies": {"s": {"dataset": "digits", "seed": 0, "attack": {"eps": 0.2}, "blackbox": {"source": "natural_k10"},
                                "grid": [{"k": 10}, {"k": 10, "sigma": 0.3}]}}}
    kinds = set(plan_mod.Plan(config).claims_inputs("s"))
    read = {k for c in registry.CLAIMS.values() for k in c.reads}
    assert kinds == read == set(registry.ARTIFACTS)


def test_published_numbers_come_from_the_resource_csv() -> None:
    text = ledger.published("C13")
    assert "Mosbach" in text and "70.6" in text and "88.43" in text
    assert "Croce" in ledger.published("C15") and "Wong" in ledger.published("C21")
    assert ledger.published("C1") == ""


# ---------------------------------------------------------------- noise floors


def test_unpaired_interval_is_newcombe_from_two_wilsons() -> None:
    d = measure.unpaired_diff(60.0, 200, 40.0, 200)
    assert d.diff == pytest.approx(20.0)
    # Newcombe's method 10 for 120/200 vs 80/200, by hand from the two Wilson score intervals
    z, (p1, p2) = 1.959963984540054, (0.6, 0.4)

    def wilson(p: float, n: int) -> tuple[float, float]:
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
        return centre - half, centre + half

    (l1, u1), (l2, u2) = wilson(p1, 200), wilson(p2, 200)
    lo = 100 * (p1 - p2 - ((p1 - l1) ** 2 + (u2 - p2) ** 2) ** 0.5)
    hi = 100 * (p1 - p2 + ((u1 - p1) ** 2 + (p2 - l2) ** 2) ** 0.5)
    assert (d.lo, d.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert 10 < d.lo < 11 and 29 < d.hi < 30 and "unpaired" in d.how


def test_bootstrap_and_seed_intervals() -> None:
    a, b = planted_arrays(0, logit_gap=10.0), planted_arrays(1, logit_gap=8.0)
    d = measure.bootstrap_diff(a["logit_gap_all"], b["logit_gap_all"])
    assert d.lo > 0 and d.decide() == "raised" and "paired" in d.how
    same = measure.bootstrap_diff(a["logit_gap_all"], planted_arrays(2)["logit_gap_all"])
    assert same.decide() == "within noise"
    s = measure.seed_diff([1.0, 1.2, 0.9], [0.0, 0.1, -0.1])
    assert s.lo > 0 and "Welch" in s.how
    assert measure.seed_diff([1.0, 3.0, -1.0], [0.0, 0.1, -0.1]).decide() == "within noise"


def test_combine_precedence() -> None:
    P = measure.Part
    assert measure.combine([P("a", HOLDS, ""), P("b", FAILS, "")])[0] == FAILS
    assert measure.combine([P("a", HOLDS, ""), P("b", PAPER_ONLY, ""), P("c", WITHIN_NOISE, "")])[0] == PAPER_ONLY
    assert measure.combine([P("a", HOLDS, ""), P("b", WITHIN_NOISE, "")])[0] == WITHIN_NOISE
    assert measure.combine([P("a", HOLDS, ""), measure.untested("b", "x")])[0] == HOLDS
    assert measure.combine([measure.untested("b", "x")])[0] == NOT_TESTABLE


def test_records_without_per_image_results_fall_back_to_aggregates_and_say_so() -> None:
    lab = base_lab()
    for m in lab.models.values():
        m.record.pop("per_image")
        m.audit.pop("per_image")
    row = verdict(lab, "C7")
    assert row["verdict"] in (HOLDS, PAPER_ONLY)
    assert "unpaired Wilson/Newcombe" in row["measured"] and "no per-image results" in row["measured"]


# ---------------------------------------------------------------- the gradient-masking check (C7, the brief's example)


def test_strongest_attack_far_below_then_equal_turns_paper_only_into_holds() -> None:
    lab = base_lab()
    combo = lab.models["ls0.95_noise0.3_k1000"]
    # the audit breaks it: the strongest attack leaves LS + noise at the level of its twins
    lab.add({"alpha": 0.95, "sigma": 0.3}, pgd=100, bb=140, strongest=2)
    assert verdict(lab, "C7")["verdict"] == PAPER_ONLY
    # the strongest attack equal to the claim: nothing masked
    lab.add({"alpha": 0.95, "sigma": 0.3}, pgd=100, bb=140, strongest=100)
    lab.add({"beta": 2, "sigma": 0.3}, pgd=110, bb=150, strongest=110)
    row = verdict(lab, "C7")
    assert row["verdict"] == HOLDS, row["measured"]
    assert combo.id in row["models"]


def test_a_difference_inside_the_noise_floor_is_within_noise() -> None:
    lab = base_lab()
    lab.add({"alpha": 0.95, "sigma": 0.3}, pgd=22, bb=140)  # noise alone: 20 of 200
    lab.add({"beta": 2, "sigma": 0.3}, pgd=21, bb=150)
    row = verdict(lab, "C7")
    assert row["verdict"] == WITHIN_NOISE, row["measured"]


def test_synergy_reversed_fails() -> None:
    lab = base_lab()
    lab.add({"alpha": 0.95, "sigma": 0.3}, pgd=5, bb=140)
    assert verdict(lab, "C7")["verdict"] == FAILS


def test_seeds_that_disagree_are_within_noise() -> None:
    lab = base_lab()
    lab.add({"alpha": 0.95, "sigma": 0.3}, pgd=100, strongest=100)
    lab.add({"beta": 2, "sigma": 0.3}, pgd=110, strongest=110)
    lab.add({"alpha": 0.95, "sigma": 0.3}, pgd=100, strongest=100, seed=1)
    assert verdict(lab, "C7")["verdict"] == HOLDS
    lab.add({"alpha": 0.95, "sigma": 0.3}, pgd=3, strongest=3, seed=2)  # a seed where LS + noise did nothing
    row = verdict(lab, "C7")
    assert row["verdict"] == WITHIN_NOISE and "seed pairs" in row["measured"]


# ---------------------------------------------------------------- missing inputs and datasets


def test_a_missing_input_is_not_testable_and_named() -> None:
    lab = base_lab()
    lab.models["ls0.95_noise0.3_k1000"].audit = None
    row = verdict(lab, "C7")
    assert row["verdict"] == NOT_TESTABLE and "missing input: the audit of ls0.95_noise0.3_k1000" in row["untested"]
    lab.models["natural_k1000"].record = None
    assert "the evaluation record of natural_k1000" in verdict(lab, "C1")["untested"]


def test_cifar_claims_are_not_testable_on_digits_and_say_what_they_need() -> None:
    lab = base_lab()
    for cid in ("C14", "C15", "C16", "C17"):
        row = verdict(lab, cid)
        assert row["verdict"] == NOT_TESTABLE and "CIFAR-10 study" in row["untested"], cid


def test_missing_kinds_are_not_testable() -> None:
    lab = Lab()
    lab.add({}, eq4=0)
    rows = {r["id"]: r for r in ledger.evaluate(lab.evidence())}
    assert all(r["verdict"] == NOT_TESTABLE and r["untested"] for cid, r in rows.items() if cid not in ("C4", "C19"))
    # what a natural model alone can show (Eq. 4 predicts 0%, no neuron inactive) is tested, the rest named
    assert rows["C4"]["verdict"] == HOLDS and "an adversarially trained model" in rows["C4"]["untested"]
    assert rows["C19"]["verdict"] == HOLDS and "adversarial training, LS + noise or LSQ + noise" in rows["C19"]["untested"]


# ---------------------------------------------------------------- one test per claim, each verdict its rule allows


def test_c1_c2_c3_adversarial_training_through_eq4() -> None:
    lab = Lab()
    lab.add({}, arrays={"logit_gap": 10, "grad_gap": 2, "cos": 0.1, "z_y": 12})
    lab.add({"adversarial": ADV2}, arrays={"logit_gap": 6, "grad_gap": 0.5, "cos": 0.2, "z_y": 8})
    lab.add({"adversarial": ADV}, arrays={"logit_gap": 5, "grad_gap": 0.3, "cos": 0.3, "z_y": 5})
    assert [verdict(lab, c)["verdict"] for c in ("C1", "C2", "C3")] == [HOLDS, HOLDS, HOLDS]
    lab.add({"adversarial": ADV}, arrays={"logit_gap": 5, "grad_gap": 3, "cos": 0.05, "z_y": 13})  # eps_L falls, cos falls, logits up
    assert [verdict(lab, c)["verdict"] for c in ("C1", "C2", "C3")] == [FAILS, FAILS, FAILS]
    lab.add({"adversarial": ADV}, arrays={"logit_gap": 10, "grad_gap": 2, "cos": 0.1, "z_y": 8})  # as natural: within noise
    assert verdict(lab, "C2")["verdict"] == WITHIN_NOISE
    lab2 = Lab()
    lab2.add({})
    lab2.add({"adversarial": ADV})
    assert verdict(lab2, "C3")["verdict"] == NOT_TESTABLE


def test_c4_eq4_prediction_paired_with_fgsm() -> None:
    lab = Lab()
    lab.add({}, eq4=0, fgsm=20)
    lab.add({"adversarial": ADV}, eq4=110, fgsm=130)
    assert verdict(lab, "C4")["verdict"] == HOLDS
    lab.add({"adversarial": ADV}, eq4=10, fgsm=190)  # 90 points off: beyond MNIST's ballpark
    assert verdict(lab, "C4")["verdict"] == FAILS
    lab.add({"adversarial": ADV}, eq4=55, fgsm=130)  # 37.5 points off, the interval reaches past 40
    assert verdict(lab, "C4")["verdict"] == WITHIN_NOISE
    lab.add({}, eq4=30, fgsm=20)  # a natural model predicted robust
    lab.add({"adversarial": ADV}, eq4=110, fgsm=130)
    assert verdict(lab, "C4")["verdict"] == FAILS


def test_c5_regularisers_alone() -> None:
    lab = base_lab()
    lab.models["natural_k1000"]._arrays = planted_arrays(0, logit_gap=10)
    for mid in ("ls0.95_k1000", "sq2_k1000"):
        lab.models[mid]._arrays = planted_arrays(9, logit_gap=3)
    assert verdict(lab, "C5")["verdict"] == HOLDS
    lab.add({"alpha": 0.95}, pgd=40)
    assert verdict(lab, "C5")["verdict"] == FAILS
    lab.add({"alpha": 0.95}, pgd=4, arrays={"logit_gap": 3})  # 2% [0.8, 5.0]
    assert verdict(lab, "C5")["verdict"] == WITHIN_NOISE


def test_c6_noise_alone() -> None:
    lab = base_lab()
    assert verdict(lab, "C6")["verdict"] == HOLDS
    lab.add({"sigma": 0.3}, pgd=120, bb=120)  # white-box gain as large as black-box gain
    assert verdict(lab, "C6")["verdict"] == FAILS
    lab.add({"sigma": 0.3}, pgd=3, bb=4)
    assert verdict(lab, "C6")["verdict"] == WITHIN_NOISE


def sigma_lab(fgsm: tuple[int, int], pgd: tuple[int, int], eps_l: tuple[float, float], strongest_large: int | None = None) -> Lab:
    lab = base_lab()
    lab.add({"alpha": 0.95, "sigma": 0.1}, fgsm=fgsm[0], pgd=pgd[0], arrays={"logit_gap": eps_l[0]})
    lab.add({"alpha": 0.95, "sigma": 0.5}, fgsm=fgsm[1], pgd=pgd[1], arrays={"logit_gap": eps_l[1]}, strongest=strongest_large)
    return lab


def test_c8_sigma_trends() -> None:
    assert verdict(base_lab(), "C8")["verdict"] == NOT_TESTABLE
    assert verdict(sigma_lab((150, 100), (80, 120), (12, 6)), "C8")["verdict"] == HOLDS
    assert verdict(sigma_lab((150, 100), (80, 120), (12, 6), strongest_large=5), "C8")["verdict"] == PAPER_ONLY
    assert verdict(sigma_lab((100, 150), (80, 120), (12, 6)), "C8")["verdict"] == FAILS


def test_c9_c10_gradients_of_the_regularisers() -> None:
    lab = base_lab()
    lab.models["natural_k1000"]._arrays = planted_arrays(0, grad_norm_y=3.0, cos=0.1, logit_gap=10)
    lab.add({"alpha": 0.95, "sigma": 0.3}, pgd=100, arrays={"grad_norm_y": 0.5, "cos": 0.4})
    row = verdict(lab, "C9")
    assert row["verdict"] == HOLDS and "larger alpha" in row["untested"]  # partly tested: one alpha
    lab.add({"alpha": 0.5, "sigma": 0.3}, pgd=90, arrays={"grad_norm_y": 0.2, "cos": 0.6})  # smaller alpha shrinks more
    assert verdict(lab, "C9")["verdict"] == FAILS
    lab.add({"beta": 2, "sigma": 0.3}, arrays={"grad_norm_y": 0.5, "cos_spread": 0.3, "logit_gap": 14})
    lab.add({"beta": 2}, arrays={"logit_gap": 4})
    assert verdict(lab, "C10")["verdict"] == HOLDS
    lab.add({"beta": 2}, arrays={"logit_gap": 14})  # without noise the rise stays
    assert verdict(lab, "C10")["verdict"] == FAILS


def test_c11_c12_sweeps() -> None:
    lab = base_lab()
    assert verdict(lab, "C11")["verdict"] == NOT_TESTABLE
    lab.add({"alpha": 0.95, "sigma": 0.3, "k": 3000}, pgd=150, strongest=150)
    assert verdict(lab, "C11")["verdict"] == HOLDS
    lab.add({"alpha": 0.95, "sigma": 0.3, "k": 3000}, pgd=150, strongest=10)
    assert verdict(lab, "C11")["verdict"] == PAPER_ONLY
    lab.add({"beta": 5, "sigma": 0.3}, pgd=150, strongest=150)
    row = verdict(lab, "C12")
    assert row["verdict"] == HOLDS and "larger alpha" in row["untested"] and "sigma > eps" in row["untested"]
    lab.add({"beta": 5, "sigma": 0.3}, pgd=50)
    assert verdict(lab, "C12")["verdict"] == FAILS
    lab.add({"beta": 5, "sigma": 0.3}, collapsed=True, pgd=150)  # a collapsed model is left out of the sweep
    assert verdict(lab, "C12")["verdict"] == NOT_TESTABLE


def test_c13_close_to_adversarial_training_at_a_fraction_of_the_cost() -> None:
    lab = base_lab()
    lab.add({"beta": 2, "sigma": 0.3}, pgd=110, strongest=110)
    assert verdict(lab, "C13")["verdict"] == HOLDS
    lab.add({"beta": 2, "sigma": 0.3}, pgd=110, strongest=20)  # the audit takes it far from adversarial training
    row = verdict(lab, "C13")
    assert row["verdict"] == PAPER_ONLY and "Mosbach" in row["published"]
    lab.add({"beta": 2, "sigma": 0.3}, pgd=150, strongest=150)  # beats adversarial training
    assert verdict(lab, "C13")["verdict"] == FAILS
    lab.add({"beta": 2, "sigma": 0.3}, pgd=110, strongest=110, cost=100.0)  # no cheaper
    assert verdict(lab, "C13")["verdict"] == FAILS
    assert verdict(base_lab("cifar10"), "C13")["verdict"] == NOT_TESTABLE


def cifar_lab() -> Lab:
    lab = Lab("cifar10", eps=8)
    lab.add({}, clean=190, pgd=0, fgsm=20, bb=0)
    lab.add({"adversarial": {"steps": 7, "step_size": 2, "eps": 8}}, clean=170, pgd=90, fgsm=110, bb=120)
    lab.add({"adversarial": {"steps": 7, "step_size": 2, "eps": 8}}, clean=170, pgd=90, fgsm=110, bb=120, seed=1)
    lab.source = "pgd7-eps8-step2_k1000"
    return lab


def test_c14_c15_c16_c17_on_cifar() -> None:
    lab = cifar_lab()
    lab.models["pgd7-eps8-step2_k1000_seed1"].group = "pgd7-eps8-step2_k1000_seed1"  # the twin: its own grid entry (legacy seed)
    lab.add({"alpha": 0.95, "sigma": 30}, clean=185, pgd=100, fgsm=150, bb=150, strongest=100)
    lab.add({"beta": 10, "sigma": 30}, clean=180, pgd=110, fgsm=160, bb=140, strongest=110)
    assert verdict(lab, "C14")["verdict"] == HOLDS
    assert verdict(lab, "C15")["verdict"] == HOLDS
    row = verdict(lab, "C16")
    assert row["verdict"] == HOLDS and "random start" in row["untested"]
    lab.add({"beta": 10, "sigma": 30}, clean=180, pgd=110, fgsm=160, bb=140, strongest=10)
    assert verdict(lab, "C15")["verdict"] == PAPER_ONLY
    lab.add({"alpha": 0.95, "sigma": 30}, clean=185, pgd=100, fgsm=150, bb=100, strongest=100)
    assert verdict(lab, "C14")["verdict"] == FAILS
    assert verdict(lab, "C17")["verdict"] == WITHIN_NOISE  # 0 of 1 run collapsed on either side
    for i in range(4):
        lab.add({"beta": 10, "sigma": 30, "k": 2000 + i}, collapsed=True)
        lab.add({"alpha": 0.5, "sigma": 30, "k": 2000 + i})
        lab.add({"alpha": 0.8, "sigma": 30, "k": 2000 + i})
    assert verdict(lab, "C17")["verdict"] == HOLDS


def test_c18_larger_sigma() -> None:
    lab = base_lab()
    lab.add({"sigma": 0.5}, clean=170, pgd=60)
    lab.add({"sigma": 1.0}, clean=120, pgd=5)
    assert verdict(lab, "C18")["verdict"] == HOLDS
    lab.add({"sigma": 1.0}, clean=195, pgd=5)
    assert verdict(lab, "C18")["verdict"] == FAILS


def test_c19_inactive_neurons() -> None:
    lab = base_lab()
    lab.models["natural_k1000"]._arrays = planted_arrays(0, dead=0.0)
    for mid in ("pgd10-eps0.2-step0.05_k1000", "ls0.95_noise0.3_k1000", "sq2_noise0.3_k1000"):
        lab.models[mid]._arrays = planted_arrays(1, dead=0.4)
    assert verdict(lab, "C19")["verdict"] == HOLDS
    lab.models["ls0.95_noise0.3_k1000"]._arrays = planted_arrays(1, dead=0.05)
    assert verdict(lab, "C19")["verdict"] == WITHIN_NOISE
    lab.models["natural_k1000"]._arrays = planted_arrays(0, dead=0.3)
    assert verdict(lab, "C19")["verdict"] == FAILS


def test_c20_measured_cost() -> None:
    lab = base_lab()  # PGD-10 at 11x, PGD-2 at 3x the 10 s of plain training
    assert verdict(lab, "C20")["verdict"] == HOLDS
    lab.models["pgd10-eps0.2-step0.05_k1000"].cost["train_loop_cpu_s_per_1k_iter"] = 20.0
    assert verdict(lab, "C20")["verdict"] == FAILS
    lab.models["pgd10-eps0.2-step0.05_k1000"].cost["train_loop_cpu_s_per_1k_iter"] = 110.0
    lab.models["noise0.3_k1000"].cost["train_loop_cpu_s_per_1k_iter"] = 25.0  # wide spread of plain models
    assert verdict(lab, "C20")["verdict"] in (WITHIN_NOISE, FAILS)


def c21_lab(reg_strongest: int, reg_passes: int = 1000, ss_passes: int = 2000, reg_pgd: int = 110) -> tuple[Lab, inputs.Model]:
    lab = Lab()
    lab.add({}, pgd=2, passes=1000)
    lab.add({"adversarial": ADV}, pgd=120, passes=11000)
    lab.add({"beta": 2, "sigma": 0.3}, pgd=reg_pgd, strongest=reg_strongest, passes=reg_passes)
    ss = lab.add({"adversarial": {"steps": 1, "step_size": 0.25, "eps": 0.2, "method": "fgsm_rs"}}, pgd=80, strongest=60, passes=ss_passes)
    return lab, ss


def test_c21_regulariser_vs_single_step_at_equal_cost_both_ways() -> None:
    assert verdict(base_lab(), "C21")["verdict"] == NOT_TESTABLE
    assert "fgsm_rs or nfgsm" in verdict(base_lab(), "C21")["untested"]
    row = verdict(c21_lab(reg_strongest=100)[0], "C21")
    assert row["verdict"] == HOLDS and "fgsm_rs" in row["measured"] and "Wong" in row["published"]
    assert "cost vs natural 1.00x and 2.00x (passes)" in row["measured"]
    assert verdict(c21_lab(reg_strongest=10)[0], "C21")["verdict"] == PAPER_ONLY  # better under PGD only
    assert verdict(c21_lab(reg_strongest=10, reg_pgd=40)[0], "C21")["verdict"] == FAILS
    assert verdict(c21_lab(reg_strongest=61)[0], "C21")["verdict"] == WITHIN_NOISE
    # the regulariser costs more than the single-step model: nothing to compare at equal cost
    assert verdict(c21_lab(reg_strongest=100, reg_passes=3000)[0], "C21")["verdict"] == NOT_TESTABLE
    # a single-step model the catastrophic-overfitting guard flagged is left out
    lab, ss = c21_lab(reg_strongest=100)
    ss.metrics["guard"] = {"overfitting_detected": True}
    assert verdict(lab, "C21")["verdict"] == NOT_TESTABLE
    # without pass counts, the cost table's measured seconds decide what is cheaper
    lab, ss = c21_lab(reg_strongest=100)
    for m in lab.models.values():
        m.metrics.pop("training_passes")
    ss.cost["train_loop_cpu_s_per_1k_iter"] = 20.0
    row = verdict(lab, "C21")
    assert row["verdict"] == HOLDS and "(CPU s)" in row["measured"]


# ---------------------------------------------------------------- files: the stage, the overview, the console


def write_study(tmp_path: Path, lab: Lab, name: str = "planted") -> dict[str, Any]:
    """Write a Lab's artifacts as files and return the claims spec that lists them."""
    models = []
    for m in lab.models.values():
        paths = {k: str(tmp_path / name / k / f"{m.id}.{'npz' if k == 'analysis' else 'json'}") for k in ("record", "audit", "analysis", "metrics")}
        for key, obj in (("record", m.record), ("audit", m.audit), ("metrics", m.metrics)):
            Path(paths[key]).parent.mkdir(parents=True, exist_ok=True)
            if obj is not None:
                Path(paths[key]).write_text(json.dumps(obj))
        Path(paths["analysis"]).parent.mkdir(parents=True, exist_ok=True)
        np.savez(paths["analysis"], **m._arrays)
        models.append({"model_id": m.id, "entry": m.entry, **paths})
    cost = tmp_path / name / "cost.csv"
    with open(cost, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["model", "k", "train_loop_cpu_s_per_1k_iter"])
        w.writeheader()
        w.writerows(m.cost for m in lab.models.values() if m.cost)
    return {"study": name, "dataset": lab.dataset, "eps": lab.eps, "pixel_units": 1, "seed": 0, "blackbox_source": lab.source,
            "cost": str(cost), "models": models}


def test_stage_writes_the_ledger_and_the_overview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from smoothsqueeze import cli

    spec = write_study(tmp_path, base_lab())
    out = {ext: str(tmp_path / "reports" / "planted" / f"claims.{ext}") for ext in ("csv", "md", "tex", "html")}
    assert cli.main(["claims", "--study", "planted", "--spec", json.dumps(spec), *(w for ext, p in out.items() for w in (f"--{ext}", p))]) == 0
    rows = ledger.read_ledger(out["csv"])
    assert [r["id"] for r in rows] == list(registry.CLAIMS)
    assert all(r["verdict"] in measure.VERDICTS for r in rows)
    assert {r["id"]: r["verdict"] for r in rows}["C14"] == NOT_TESTABLE
    md = Path(out["md"]).read_text()
    assert md.count("\n## C") == 21 and "*Rule:*" in md
    assert r"\begin{table}" in Path(out["tex"]).read_text() and "<table>" in Path(out["html"]).read_text()
    # a second study missing its audits: those claims say so
    spec2 = write_study(tmp_path, base_lab(), "other")
    for m in spec2["models"]:
        Path(m["audit"]).unlink()
    ledger.run(spec2, {"csv": str(tmp_path / "reports" / "other" / "claims.csv")})
    other = {r["id"]: r for r in ledger.read_ledger(tmp_path / "reports" / "other" / "claims.csv")}
    assert other["C7"]["verdict"] == NOT_TESTABLE and "missing input: the audit" in other["C7"]["untested"]
    # across studies
    ov = {ext: str(tmp_path / "reports" / f"claims.{ext}") for ext in ("csv", "md", "html")}
    assert cli.main(["claims-overview", "--ledgers", out["csv"], str(tmp_path / "reports" / "other" / "claims.csv"),
                     *(w for ext, p in ov.items() for w in (f"--{ext}", p))]) == 0
    overview = ledger.read_ledger(ov["csv"])
    assert len(overview) == 21 and {"planted", "other"} <= set(overview[0])
    assert "Mosbach" in next(r for r in overview if r["id"] == "C13")["published"]
    # --print: the verdicts side by side, one line per claim, the same as the files'
    capsys.readouterr()
    assert cli.main(["claims-overview", "--ledgers", out["csv"], str(tmp_path / "reports" / "other" / "claims.csv"), "--print"]) == 0
    printed = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if re.match(r"\| C\d+ ", line)]
    assert [(p[0][2:], p[2], p[3].rstrip(" |")) for p in printed] == [(r["id"], r["planted"], r["other"]) for r in overview]
    # the console's lines
    lines = console.console_lines("planted", tmp_path / "reports")
    assert len(lines) == 22 and "claims.md" in lines[0] and lines[1].split()[0] == "C1"
    assert console.console_lines("absent", tmp_path / "reports") == []


def test_print_computes_the_ledger_from_the_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from smoothsqueeze import cli

    spec = write_study(tmp_path, base_lab())
    assert cli.main(["claims", "--study", "planted", "--spec", json.dumps(spec), "--print"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Claims ledger: study `planted`") and "| C21 |" in out
    assert not (tmp_path / "reports").exists()
    # --brief: one table row per claim, the verdict and what decided it, the same verdicts
    assert cli.main(["claims", "--study", "planted", "--spec", json.dumps(spec), "--print", "--brief"]) == 0
    brief = capsys.readouterr().out
    rows = [line for line in brief.splitlines() if re.match(r"\| C\d+ ", line)]
    assert brief.startswith("Claims ledger of `planted`") and len(rows) == 21
    full_verdicts = re.findall(r"^## (C\d+): .* -- (.+)$", out, re.M)
    assert [(r.split(" | ")[0][2:].split()[0], r.split(" | ")[1]) for r in rows] == full_verdicts
    assert not (tmp_path / "reports").exists()


def test_requested_studies_and_the_overview_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"results_dir": "results", "reports_dir": "reports", "data_dir": "data", "default_study": "a",
              "studies": {name: {"dataset": "digits", "seed": 0, "attack": {"eps": 0.2}, "blackbox": {"source": "natural_k10"}, "grid": [{"k": 10}]}
                          for name in ("a", "b", "c")}}
    p = plan_mod.Plan(config)
    assert p.requested_studies([]) == ["a"] and p.requested_studies(["all"]) == ["a"]
    assert p.requested_studies(["b", "reports/c/report.html", "results/a/records/x.json", "reports/claims.md"]) == ["b", "c", "a"]
    monkeypatch.chdir(tmp_path)
    assert p.claims_overview_inputs(["b"], os.path.exists) == ["reports/b/claims.csv"]
    (tmp_path / "reports" / "c").mkdir(parents=True)
    (tmp_path / "reports" / "c" / "claims.csv").write_text("")
    assert p.claims_overview_inputs([], os.path.exists) == ["reports/a/claims.csv", "reports/c/claims.csv"]
    targets = p.study_targets("a")
    assert "reports/a/claims.html" in targets and "reports/claims.md" in targets
    assert "reports/claims.md" not in p.report_inputs("a") and "reports/a/claims.html" in p.report_inputs("a")


# ---------------------------------------------------------------- the tiny study, built (slow)


@pytest.mark.slow
def test_tiny_study_ledger_is_built_and_rebuilt_only_when_its_inputs_change(tiny_copy: Path) -> None:
    from conftest import run_snakemake

    reports = tiny_copy / "reports"
    rows = ledger.read_ledger(reports / "tiny" / "claims.csv")
    assert [r["id"] for r in rows] == list(registry.CLAIMS) and all(r["verdict"] in measure.VERDICTS for r in rows)
    for ext in ("md", "tex", "html"):
        assert (reports / "tiny" / f"claims.{ext}").stat().st_size > 0
    assert [r["id"] for r in ledger.read_ledger(reports / "claims.csv")] == list(registry.CLAIMS)
    assert "claims" in (reports / "tiny" / "report.html").read_text()
    from test_latex_tables import _compile_all, latex_problems

    tex = (reports / "tiny" / "claims.tex").read_text()
    assert latex_problems(tex) == []
    if shutil.which("pdflatex"):  # one page at ICLR's text width, no overfull box
        _compile_all(shutil.which("pdflatex"), {"claims": tex}, tiny_copy)

    def jobs(*args: str) -> dict[str, int]:
        out = run_snakemake(tiny_copy, "-n", "--quiet", "rules", *args).stdout
        return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M) if m[1] not in ("total", "all", "tiny")}

    def change(path: Path) -> None:
        """A change of content (Snakemake ignores a new mtime when a file's checksum is unchanged)."""
        if path.suffix == ".json":
            path.write_text(json.dumps({**json.loads(path.read_text()), "changed_by_test": True}))
        else:
            path.write_text(path.read_text() + "\n")

    assert jobs() == {}
    # the cost table is read by the ledger, the frontier and the report only
    change(reports / "tiny" / "tables" / "cost.csv")
    assert jobs() == {"claims": 1, "claims_overview": 1, "frontier": 1, "html_report": 1}
    done = run_snakemake(tiny_copy)
    # the run ends by printing where the ledger is and one line per claim
    printed = done.stdout + done.stderr
    assert "Claims ledger of tiny" in printed and re.search(r"^\s+C21\s", printed, re.M), printed[-3000:]
    # a record: the ledger reruns with the other jobs that read it (audit, row, figures), nothing else
    change(tiny_copy / "results" / "tiny" / "records" / "natural_k40.json")
    rerun = jobs()
    assert rerun.get("claims") == 1 and "train" not in rerun and "evaluate" not in rerun
    # a file the ledger does not read: not rerun
    run_snakemake(tiny_copy)
    change(reports / "tiny" / "tables" / "accuracy.csv")
    assert "claims" not in jobs()
    summary = run_snakemake(tiny_copy, "--summary").stdout
    assert re.search(r"^reports/tiny/claims\.csv\t[^\t]*\tclaims\t[^\t]*\tok\tno update$", summary, re.M), summary


def test_the_report_landing_lists_every_claim_with_its_verdict_and_the_counts(tmp_path: Path) -> None:
    """The report's first screen is written from claims.csv: every claim's line and verdict, the counts, escaped HTML."""
    from smoothsqueeze.claims import render

    rows = [{"id": "C1", "title": "a <b> claim", "verdict": HOLDS, "untested": ""},
            {"id": "C2", "title": "another", "verdict": FAILS, "untested": "a GPU study"},
            {"id": "C3", "title": "third", "verdict": NOT_TESTABLE, "untested": "CIFAR-10"}]
    with (tmp_path / "claims.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ledger.FIELDS))
        writer.writeheader()
        writer.writerows({**{f: "" for f in ledger.FIELDS}, **r} for r in rows)
    render.write_landing(tmp_path / "claims.csv", "demo", tmp_path / "landing.html")
    html = (tmp_path / "landing.html").read_text()
    assert "Claims ledger of study demo" in html and "holds: 1, fails: 1, not testable here: 1" in html
    assert "C1 a &lt;b&gt; claim</td><td>holds</td>" in html and "<td>fails (partly tested)</td>" in html
    assert "<td>not testable here</td>" in html and html.count("<tr><td") == 3
