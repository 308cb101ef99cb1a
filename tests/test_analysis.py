"""Analysis stage: Eq. 4 quantities against closed forms, batching, activation sums, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from smoothsqueeze.analysis import eq4 as analysis
from smoothsqueeze.cli import main as cli_main
from smoothsqueeze.artifacts import read_npz, write_npz
from smoothsqueeze.checkpoints import save_model
from smoothsqueeze.models import build_model
from smoothsqueeze.study import STAGE_VERSIONS


class LinearNet(nn.Module):
    """z = W x + b on flattened images: the gradients of z_i are the rows of W."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.head = nn.Linear(weight.shape[1], weight.shape[0]).double()
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _linear(num_classes: int, dim: int = 9, seed: int = 0) -> LinearNet:
    g = torch.Generator().manual_seed(seed)
    return LinearNet(torch.randn(num_classes, dim, generator=g, dtype=torch.float64), torch.randn(num_classes, generator=g, dtype=torch.float64))


def _images(n: int, seed: int = 1, shape: tuple[int, ...] = (1, 3, 3), dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_linear_classifier_matches_closed_forms() -> None:
    model = _linear(num_classes=5)
    x = _images(40)
    y = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(2))
    out = analysis.analyze_model(model, x, y, batch_size=7)

    w, b = model.head.weight.detach().numpy(), model.head.bias.detach().numpy()
    logits = x.flatten(1).numpy() @ w.T + b
    yy = y.numpy()
    masked = logits.copy()
    masked[np.arange(40), yy] = -np.inf
    ybar = masked.argmax(1)
    w_y, w_ybar = w[yy], w[ybar]
    gap = logits[np.arange(40), yy] - logits[np.arange(40), ybar]
    grad_gap = np.abs(w_y - w_ybar).sum(1)
    cos = (w_y * w_ybar).sum(1) / (np.linalg.norm(w_y, axis=1) * np.linalg.norm(w_ybar, axis=1))

    np.testing.assert_array_equal(out["ybar"], ybar)
    np.testing.assert_array_equal(out["predictions"], logits.argmax(1))
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-12)
    np.testing.assert_allclose(out["logit_gap"], gap, rtol=1e-12)
    np.testing.assert_allclose(out["grad_gap"], grad_gap, rtol=1e-12)
    np.testing.assert_allclose(out["eps_l"], gap / grad_gap, rtol=1e-12)
    np.testing.assert_allclose(out["cos"], cos, rtol=1e-12)
    np.testing.assert_allclose(out["grad_norm_y"], np.abs(w_y).sum(1), rtol=1e-12)
    # Every wrong class: (N, C-1), increasing class order without y.
    wrong_classes = np.array([[j for j in range(5) if j != t] for t in yy])
    np.testing.assert_array_equal(out["wrong_classes"], wrong_classes)
    w_j = w[wrong_classes]  # (N, 4, dim)
    gap_all = logits[np.arange(40), yy][:, None] - np.take_along_axis(logits, wrong_classes, 1)
    grad_gap_all = np.abs(w_y[:, None, :] - w_j).sum(2)
    cos_all = (w_y[:, None, :] * w_j).sum(2) / (np.linalg.norm(w_y, axis=1)[:, None] * np.linalg.norm(w_j, axis=2))
    np.testing.assert_allclose(out["logit_gap_all"], gap_all, rtol=1e-12)
    np.testing.assert_allclose(out["grad_gap_all"], grad_gap_all, rtol=1e-12)
    np.testing.assert_allclose(out["eps_l_all"], gap_all / grad_gap_all, rtol=1e-12)
    np.testing.assert_allclose(out["cos_all"], cos_all, rtol=1e-12)
    # Misclassified images have ybar above y: a negative gap and eps_L.
    wrong = logits.argmax(1) != yy
    assert wrong.any() and (~wrong).any()
    assert np.all(out["eps_l"][wrong] < 0) and np.all(out["eps_l"][~wrong] > 0)


def test_pixel_units_scale_gradients_and_eps_l() -> None:
    """Gradients per 1/255 unit are 255 times smaller, so eps_L is 255 times larger."""
    model = _linear(num_classes=4)
    x, y = _images(10), torch.arange(10) % 4
    unit = analysis.analyze_model(model, x, y)
    per255 = analysis.analyze_model(model, x, y, pixel_units=255.0)
    np.testing.assert_allclose(per255["grad_gap"], unit["grad_gap"] / 255, rtol=1e-12)
    np.testing.assert_allclose(per255["eps_l"], unit["eps_l"] * 255, rtol=1e-12)
    np.testing.assert_allclose(per255["cos"], unit["cos"], rtol=1e-12)
    np.testing.assert_allclose(per255["grad_gap_all"], unit["grad_gap_all"] / 255, rtol=1e-12)
    np.testing.assert_allclose(per255["eps_l_all"], unit["eps_l_all"] * 255, rtol=1e-12)
    np.testing.assert_allclose(per255["cos_all"], unit["cos_all"], rtol=1e-12)


def test_binary_linear_eps_l_is_the_linf_distance_to_the_boundary() -> None:
    """For two classes, x - eps_L * sign(w_y - w_ybar) lies exactly on the decision boundary."""
    model = _linear(num_classes=2, dim=16, seed=3)
    x = _images(30, seed=4, shape=(1, 4, 4))
    y = torch.randint(0, 2, (30,), generator=torch.Generator().manual_seed(5))
    out = analysis.analyze_model(model, x, y, batch_size=8)
    w = model.head.weight.detach()
    yy, ybar = y, torch.from_numpy(out["ybar"])
    eps_l = torch.from_numpy(out["eps_l"])[:, None]
    direction = torch.sign(w[yy] - w[ybar])  # the worst L-inf direction against the margin
    flat = x.flatten(1)

    def margin(scale: float) -> torch.Tensor:
        z = model(flat - scale * eps_l * direction)
        return z.gather(1, yy[:, None]).squeeze(1) - z.gather(1, ybar[:, None]).squeeze(1)

    with torch.no_grad():
        assert torch.allclose(margin(1.0), torch.zeros(30, dtype=torch.float64), atol=1e-9)
        before, after = margin(0.999), margin(1.001)
    # Short of eps_L the class holds, just past it the class flips (either side of the boundary).
    assert torch.all(torch.sign(before) == torch.sign(torch.from_numpy(out["logit_gap"])))
    assert torch.all(torch.sign(after) == -torch.sign(torch.from_numpy(out["logit_gap"])))
    # No other L-inf perturbation of size eps_L moves the margin further: |w . d| <= eps ||w||_1.
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for _ in range(20):
            d = (torch.rand(flat.shape, generator=g, dtype=torch.float64) * 2 - 1) * eps_l.abs()
            z = model(flat + d)
            shifted = z.gather(1, yy[:, None]).squeeze(1) - z.gather(1, ybar[:, None]).squeeze(1)
            moved = (shifted - torch.from_numpy(out["logit_gap"])).abs()
            assert torch.all(moved <= torch.from_numpy(out["logit_gap"]).abs() + 1e-9)


def test_ten_classes_give_nine_eq4_values_per_image() -> None:
    torch.manual_seed(0)
    model = build_model("madry_cnn", 1, 8, 10).eval()
    x = _images(7, seed=9, shape=(1, 8, 8), dtype=torch.float32)
    y = torch.tensor([0, 3, 9, 5, 5, 1, 8])
    out = analysis.analyze_model(model, x, y, batch_size=3)
    for key in analysis.PER_WRONG_CLASS:
        assert out[key].shape == (7, 9), key
    for t, row in zip(y.tolist(), out["wrong_classes"]):
        assert row.tolist() == [j for j in range(10) if j != t]
    # The top wrong class is one of the nine, with the same Eq. 4 values as the top-class arrays.
    for i in range(7):
        (col,) = np.flatnonzero(out["wrong_classes"][i] == out["ybar"][i])
        for top, every in (("logit_gap", "logit_gap_all"), ("grad_gap", "grad_gap_all"), ("eps_l", "eps_l_all"), ("cos", "cos_all")):
            assert out[every][i, col] == pytest.approx(float(out[top][i]), rel=1e-5, abs=1e-6), top
        # ybar has the largest wrong logit, so the smallest logit gap.
        assert out["logit_gap_all"][i].min() == pytest.approx(float(out["logit_gap"][i]), rel=1e-6, abs=1e-6)
    # The top-class arrays equal what two backward passes (z_y and z_ybar only) give, as before.
    xr = x.clone().requires_grad_(True)
    z = model(xr)
    ybar = torch.from_numpy(out["ybar"])
    z_y, z_ybar = z.gather(1, y[:, None]).squeeze(1), z.gather(1, ybar[:, None]).squeeze(1)
    (g_y,) = torch.autograd.grad(z_y.sum(), xr, retain_graph=True)
    (g_ybar,) = torch.autograd.grad(z_ybar.sum(), xr)
    g_y, g_ybar = g_y.flatten(1), g_ybar.flatten(1)
    np.testing.assert_allclose(out["logit_gap"], (z_y - z_ybar).detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["grad_gap"], (g_y - g_ybar).abs().sum(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["cos"], torch.nn.functional.cosine_similarity(g_y, g_ybar, dim=1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["grad_norm_y"], g_y.abs().sum(1).numpy(), rtol=1e-5, atol=1e-6)


def test_one_image_by_hand_every_wrong_class() -> None:
    """A 3-pixel, 4-class linear model: grad_x z_j = W_j, so eps_L(j) = (z_y - z_j) / ||W_y - W_j||_1 by hand."""
    w = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [-1.0, 0.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([0.5, 0.0, -0.5, 0.0], dtype=torch.float64)
    model = LinearNet(w, b)
    x = torch.tensor([[1.0, 0.5, 0.25]], dtype=torch.float64)  # z = (2.75, 0.5, 1.25, -0.25): class 0 is right
    out = analysis.analyze_model(model, x, torch.tensor([0]))
    # Wrong classes 1, 2, 3:
    #   j=1: gap 2.75-0.5 = 2.25, ||(2,-1,1)||_1 = 4, eps_L = 0.5625, cos = 0 / (sqrt5 * 1) = 0
    #   j=2: gap 2.75-1.25 = 1.5, ||(1,-1,0)||_1 = 2, eps_L = 0.75,   cos = 3 / (sqrt5 * sqrt3)
    #   j=3: gap 2.75+0.25 = 3.0, ||(3,0,-2)||_1 = 5, eps_L = 0.6,    cos = 1 / (sqrt5 * sqrt10)
    assert out["wrong_classes"].tolist() == [[1, 2, 3]]
    np.testing.assert_allclose(out["logit_gap_all"], [[2.25, 1.5, 3.0]], rtol=1e-12)
    np.testing.assert_allclose(out["grad_gap_all"], [[4.0, 2.0, 5.0]], rtol=1e-12)
    np.testing.assert_allclose(out["eps_l_all"], [[0.5625, 0.75, 0.6]], rtol=1e-12)
    np.testing.assert_allclose(out["cos_all"], [[0.0, 3 / np.sqrt(15), 1 / np.sqrt(50)]], rtol=1e-12, atol=1e-15)
    # The top wrong class is 2 (largest wrong logit, 1.25); its arrays are unchanged in meaning.
    assert out["ybar"].tolist() == [2] and out["predictions"].tolist() == [0]
    np.testing.assert_allclose(out["logit_gap"], [1.5], rtol=1e-12)
    np.testing.assert_allclose(out["grad_gap"], [2.0], rtol=1e-12)
    np.testing.assert_allclose(out["eps_l"], [0.75], rtol=1e-12)
    np.testing.assert_allclose(out["cos"], [3 / np.sqrt(15)], rtol=1e-12)
    np.testing.assert_allclose(out["grad_norm_y"], [3.0], rtol=1e-12)
    # The nearest boundary is class 1's (0.5625), not the top class's (0.75): at eps 0.6 the top
    # class alone predicts robust, every class does not; at 0.5 both do, at 0.8 neither.
    for eps, nearest, top in ((0.6, 0.0, 100.0), (0.5, 100.0, 100.0), (0.8, 0.0, 0.0)):
        summary = analysis.summarize(out, eps)
        assert summary["predicted_robust_accuracy"] == nearest and summary["predicted_robust_accuracy_top"] == top, eps
        assert summary["predicted_robust_count"] == nearest / 100 and summary["predicted_robust_count_top"] == top / 100


@pytest.mark.parametrize("architecture,shape", [("madry_cnn", (1, 8, 8)), ("resnet_small", (3, 8, 8))])
def test_batching_does_not_mix_examples(architecture: str, shape: tuple[int, int, int]) -> None:
    """Gradients of the batch sum equal one-image-at-a-time gradients (eval mode, batch norm included)."""
    torch.manual_seed(0)
    model = build_model(architecture, shape[0], shape[1], 10).eval()
    x = _images(6, seed=7, shape=shape, dtype=torch.float32)
    y = torch.arange(6) % 10
    together = analysis.analyze_model(model, x, y, batch_size=6)
    alone = analysis.analyze_model(model, x, y, batch_size=1)
    for key in analysis.PER_IMAGE:
        np.testing.assert_allclose(together[key], alone[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_activation_sums_match_a_direct_computation() -> None:
    torch.manual_seed(1)
    model = build_model("madry_cnn", 1, 8, 10).eval()
    x = _images(23, seed=8, shape=(1, 8, 8), dtype=torch.float32)
    y = torch.arange(23) % 10
    out = analysis.analyze_model(model, x, y, batch_size=5)
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert out["feature_abs_sum"].shape == (1024,)
    np.testing.assert_allclose(out["feature_abs_sum"], feats.abs().sum(0).double().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["logit_abs_sum"], logits.abs().sum(0).double().numpy(), rtol=1e-5, atol=1e-5)


def test_predicted_robust_needs_a_correct_class_and_eps_strictly_below_eps_l() -> None:
    nan = np.nan
    arrays = {
        "labels": np.array([0, 1, 2, 3, 4, 0]),
        "predictions": np.array([0, 1, 2, 0, 4, 0]),
        "eps_l": np.array([0.3, 0.2, 0.1, 0.5, nan, 0.4]),  # the top wrong class
        # three wrong classes per image; the top class's eps_L is among them
        "eps_l_all": np.array([[0.3, 0.25, 0.9], [0.2, 0.2, 0.2], [0.1, 1.0, 1.0], [0.5, 0.6, 0.7], [nan, 1.0, 1.0], [0.4, 0.15, 0.5]]),
        "logit_gap": np.zeros(6), "grad_gap": np.ones(6), "cos": np.zeros(6), "grad_norm_y": np.ones(6), "z_y": np.ones(6),
        "logit_gap_all": np.zeros((6, 3)), "grad_gap_all": np.ones((6, 3)), "cos_all": np.zeros((6, 3)),
        "feature_abs_sum": np.array([0.0, 1.0, 0.0]),
    }
    # Image 5: its top class alone (0.4) says robust at 0.2, another class is nearer (0.15).
    assert analysis.predicted_robust_top(arrays, 0.2).tolist() == [True, False, False, False, False, True]
    assert analysis.predicted_robust(arrays, 0.2).tolist() == [True, False, False, False, False, False]
    summary = analysis.summarize(arrays, 0.2)
    assert summary["predicted_robust_accuracy"] == pytest.approx(100 / 6) and summary["predicted_robust_count"] == 1
    assert summary["predicted_robust_accuracy_top"] == pytest.approx(200 / 6) and summary["predicted_robust_count_top"] == 2
    assert summary["clean_accuracy"] == pytest.approx(500 / 6)
    assert summary["inactive_features"] == 2 and summary["n_test"] == 6 and summary["num_classes"] == 4
    assert summary["median_all"]["eps_l"] is None  # a NaN entry: no finite median
    assert summary["median_all"]["grad_gap"] == 1.0


def test_cli_writes_arrays_and_summary(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "digits.npz"
    write_npz(
        data, x_train=rng.integers(0, 17, (20, 1, 8, 8), dtype=np.uint8), y_train=np.arange(20) % 10,
        x_test=rng.integers(0, 17, (15, 1, 8, 8), dtype=np.uint8), y_test=np.arange(15) % 10, max_value=np.float32(16),
    )
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    save_model(ckpt, build_model("madry_cnn", 1, 8, 10), "madry_cnn", (1, 8, 8), 10)
    spec = {"eps": 0.2, "batch_size": 4, "max_examples": 11, "architecture": "madry_cnn", "info": {"model_id": "m"}}
    out, summary = tmp_path / "a" / "m.npz", tmp_path / "a" / "m.json"
    code = cli_main(["analysis", "--spec", json.dumps(spec), "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--summary", str(summary), "--device", "cpu"])
    assert code == 0
    arrays = read_npz(out, required=(*analysis.PER_IMAGE, "feature_abs_sum", "logit_abs_sum", "eps"))
    assert len(arrays["labels"]) == 11 and arrays["logits"].shape == (11, 10)
    record = json.loads(summary.read_text())
    assert record["model_id"] == "m" and record["n_test"] == 11
    assert (record["provenance"]["stage"], record["provenance"]["stage_version"]) == ("analyze", STAGE_VERSIONS["analyze"])
    assert arrays["eps_l_all"].shape == (11, 9) and arrays["wrong_classes"].dtype.kind == "i"
    # Expected values from the stored arrays, by hand: correct and eps below every wrong class's eps_L.
    correct = arrays["predictions"] == arrays["labels"]
    nearest = correct & np.all(arrays["eps_l_all"] > 0.2, axis=1)
    top = correct & (arrays["eps_l"] > 0.2)
    assert record["predicted_robust_accuracy"] == pytest.approx(100.0 * nearest.mean())
    assert record["predicted_robust_count"] == int(nearest.sum())
    assert record["predicted_robust_accuracy_top"] == pytest.approx(100.0 * top.mean())
    assert record["predicted_robust_count_top"] == int(top.sum())
    assert record["predicted_robust_accuracy"] <= record["predicted_robust_accuracy_top"]
    assert set(record["median"]) == set(analysis.MEDIANS)


def test_cli_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys) -> None:
    code = cli_main(["analysis", "--spec", '{"eps": 0.2}', "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path / "d.npz"),
                          "--out", str(tmp_path / "o.npz"), "--summary", str(tmp_path / "o.json"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "none.pt" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.npz").exists()
