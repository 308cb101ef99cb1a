"""Per-image results and noise floors (smoothsqueeze.evidence): hand-computed values, tampering, decisions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from smoothsqueeze.errors import PipelineError
from smoothsqueeze.evidence import intervals as iv
from smoothsqueeze.evidence import per_image as pi


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100 * (centre - half), 100 * (centre + half)


@pytest.mark.parametrize("k,n", [(0, 200), (13, 200), (100, 200), (200, 200), (7, 60), (313, 360)])
def test_wilson_matches_the_formula(k: int, n: int) -> None:
    lo, hi = iv.wilson(k, n)
    want = _wilson_by_hand(k, n)
    assert lo == pytest.approx(want[0], abs=1e-9) and hi == pytest.approx(want[1], abs=1e-9)
    assert lo <= 100 * k / n <= hi


def test_wilson_of_a_known_case() -> None:
    # 60 of 200: centre 0.3, z = 1.96 -> [24.07, 36.68] (computed by hand above, fixed here).
    lo, hi = iv.wilson(60, 200)
    assert (round(lo, 2), round(hi, 2)) == (24.07, 36.68)
    assert iv.wilson_of_accuracy(30.0, 200) == iv.wilson(60, 200)
    assert all(math.isnan(v) for v in iv.wilson(0, 0))
    with pytest.raises(ValueError):
        iv.wilson(201, 200)


def test_paired_counts_discordant_images_only() -> None:
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0, 1], dtype=bool)
    p = iv.paired(a, b)
    assert (p.only_a, p.only_b, p.n) == (2, 1, 8)
    assert p.diff_pp == pytest.approx(100 * (5 - 4) / 8)
    assert p.lo_pp <= p.diff_pp <= p.hi_pp
    # McNemar exact: two-sided binomial test of 2 of 3 against 1/2 is 1.0
    assert p.p_value == pytest.approx(1.0)


def test_paired_interval_is_symmetric_with_no_discordant_image() -> None:
    same = np.ones(200, dtype=bool)
    p = iv.paired(same, same)
    assert p.diff_pp == 0 and p.lo_pp == pytest.approx(-p.hi_pp) and p.hi_pp > 0
    assert p.hi_pp == pytest.approx(iv.wilson(0, 200)[1])


def test_decide_three_ways_and_across_seeds() -> None:
    assert iv.decide(12.0, 20.0, 10.0) == iv.RAISED
    assert iv.decide(1.0, 10.0, 10.0) == iv.NOT_RAISED
    assert iv.decide(8.0, 14.0, 10.0) == iv.WITHIN_NOISE
    assert iv.decide(math.nan, 1.0, 0.0) == iv.NOT_CHECKED
    assert iv.across_seeds([iv.RAISED, iv.RAISED]) == iv.RAISED
    assert iv.across_seeds([iv.RAISED, iv.NOT_RAISED]) == iv.WITHIN_NOISE
    assert iv.across_seeds([iv.NOT_CHECKED, iv.NOT_RAISED]) == iv.NOT_RAISED
    assert iv.across_seeds([]) == iv.NOT_CHECKED


def test_flag_is_one_sided() -> None:
    assert iv.flag(15.0, 12.0, 20.0, 10.0) == iv.RAISED
    assert iv.flag(11.0, 8.0, 14.0, 10.0) == iv.WITHIN_NOISE  # above the threshold, not beyond noise
    assert iv.flag(9.0, 6.0, 12.0, 10.0) == iv.NOT_RAISED  # the estimate is not above it
    same = iv.paired(np.ones(50, bool), np.ones(50, bool))
    assert iv.flag(same.diff_pp, same.lo_pp, same.hi_pp, 0.0) == iv.NOT_RAISED  # identical results: nothing to flag
    assert iv.decide(same.lo_pp, same.hi_pp, 0.0) == iv.WITHIN_NOISE  # two-sided: cannot tell
    assert iv.flag(math.nan, 0.0, 1.0, 0.0) == iv.NOT_CHECKED


def test_a_planted_drop_on_both_sides_of_a_threshold() -> None:
    """A claim against the strongest attack on the same 200 images, threshold 10 points."""
    claim = np.zeros(200, dtype=bool)
    claim[:80] = True  # claimed 40%
    far = claim.copy()
    far[:60] = False  # strongest 10%: drop 30 points
    near = claim.copy()
    near[:4] = False  # strongest 38%: drop 2 points
    edge = claim.copy()
    edge[:21] = False  # drop 10.5 points: the threshold is inside the interval
    verdict = lambda s: iv.decide(*(lambda p: (p.lo_pp, p.hi_pp))(iv.paired(claim, s)), 10.0)  # noqa: E731
    assert verdict(far) == iv.RAISED
    assert verdict(near) == iv.NOT_RAISED
    assert verdict(edge) == iv.WITHIN_NOISE


def test_over_seeds() -> None:
    s = iv.over_seeds([40.0, 44.0, None, 42.0])
    assert (s.mean, s.n, s.lo, s.hi) == (42.0, 3, 40.0, 44.0)
    assert s.sd == pytest.approx(2.0)
    assert iv.over_seeds([5.0]).sd == 0.0
    assert iv.over_seeds([]).n == 0
    assert iv.pooled_wilson([50.0, 25.0], [100, 100]) == iv.wilson(75, 200)


def test_masks_round_trip_and_refuse_tampering() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random(1001) < 0.4
    enc = pi.encode_mask(mask)
    assert np.array_equal(pi.decode_mask(enc), mask)
    assert len(enc["bits"]) <= 4 * ((1001 + 7) // 8 + 2) // 3 + 4
    flipped = bytearray(__import__("base64").b64decode(enc["bits"]))
    flipped[3] ^= 1
    bad = {**enc, "bits": __import__("base64").b64encode(bytes(flipped)).decode()}
    with pytest.raises(PipelineError, match="sha256"):
        pi.decode_mask(bad, "record x whitebox_pgd")


def test_indices_round_trip_compactly_and_refuse_tampering() -> None:
    enc = pi.encode_indices(range(10000))
    assert len(enc["data"]) < 200
    assert np.array_equal(pi.decode_indices(enc), np.arange(10000))
    odd = [5, 3, 9, 0]
    assert list(pi.decode_indices(pi.encode_indices(odd))) == odd
    with pytest.raises(PipelineError, match="sha256"):
        pi.decode_indices({**enc, "sha256": "0" * 64})


def test_results_block_and_restriction() -> None:
    masks = {"test": np.array([1, 1, 0, 1], bool), "whitebox_pgd": np.array([1, 0, 0, 0], bool)}
    block = pi.encode_results([0, 1, 2, 3], masks)
    idx, back = pi.decode_results(block, "rec")
    assert list(idx) == [0, 1, 2, 3] and all(np.array_equal(back[k], masks[k]) for k in masks)
    sub = pi.restrict(idx, back, np.array([0, 1]))
    assert list(sub["test"]) == [True, True] and list(sub["whitebox_pgd"]) == [True, False]
    with pytest.raises(PipelineError, match="not attacked"):
        pi.restrict(idx, back, np.array([7]))
    with pytest.raises(PipelineError, match="no per-image results"):
        pi.decode_results(None, "record of m")
