"""Architectures: shapes, Madry's layer sizes, per-image standardization."""
from __future__ import annotations

import pytest
import torch

from smoothsqueeze.models import ARCHITECTURES, MadryCNN, PreActResNet, build_model, per_image_standardization


@pytest.mark.parametrize(("arch", "shape"), [("madry_cnn", (1, 28, 28)), ("madry_cnn", (1, 8, 8)), ("resnet_small", (3, 32, 32))])
def test_models_map_images_to_ten_logits(arch: str, shape: tuple[int, int, int]) -> None:
    model = build_model(arch, shape[0], shape[1], 10).eval()
    x = torch.rand(3, *shape)
    assert model(x).shape == (3, 10)
    assert torch.allclose(model.head(model.features(x)), model(x))


def test_madry_cnn_layer_sizes() -> None:
    mnist, digits = MadryCNN(1, 28), MadryCNN(1, 8)
    assert mnist.fc1.in_features == 7 * 7 * 64 and digits.fc1.in_features == 2 * 2 * 64
    assert mnist.fc1.out_features == 1024 and mnist.conv1.kernel_size == (5, 5) and mnist.conv2.out_channels == 64


def test_wide_resnet_is_madrys() -> None:
    model = PreActResNet()
    widths = [unit.conv1.out_channels for unit in model.units]
    assert widths == [160] * 5 + [320] * 5 + [640] * 5
    assert model.head.in_features == 640 and model.stem.out_channels == 16
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) > 40e6  # ~46M parameters, as Madry's model


def test_per_image_standardization_matches_tf_definition() -> None:
    x = torch.rand(2, 3, 4, 4)
    out = per_image_standardization(x)
    flat = out.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(2), atol=1e-5)
    constant = per_image_standardization(torch.full((1, 3, 4, 4), 0.5))
    assert torch.equal(constant, torch.zeros_like(constant))  # std clamped at 1/sqrt(N), not a division by 0


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        build_model("vgg", 1, 28, 10)
    assert set(ARCHITECTURES) == {"madry_cnn", "wide_resnet", "resnet_small"}
