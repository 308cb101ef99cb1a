"""Architectures: Madry et al.'s MNIST CNN and CIFAR-10 wide ResNet, and a small ResNet.

Every model takes images in [0, 1], NCHW, and exposes `features(x)` (the penultimate
activations) and `head` (the final linear layer), so analysis can read both layers.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class MadryCNN(nn.Module):
    """conv5x5-32, max-pool, conv5x5-64, max-pool, fc-1024, fc-10 (Madry et al. 2017, MNIST).

    'SAME' padding as in their TensorFlow code; the fc input is sized from the image, so the
    same network fits 28x28 MNIST and 8x8 scikit-learn digits.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        side = -(-(-(-image_size // 2)) // 2)  # two ceil-halvings, as TF 'SAME' pooling
        self.fc1 = nn.Linear(64 * side * side, 1024)
        self.head = nn.Linear(1024, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, ceil_mode=True)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, ceil_mode=True)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def per_image_standardization(x: torch.Tensor) -> torch.Tensor:
    """tf.image.per_image_standardization: (x - mean) / max(std, 1/sqrt(numel)) per image."""
    flat = x.flatten(1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, unbiased=False, keepdim=True)
    adjusted = torch.clamp(std, min=1.0 / flat.shape[1] ** 0.5)
    return ((flat - mean) / adjusted).view_as(x)


class _Unit(nn.Module):
    """Pre-activation residual unit with Madry's average-pool + zero-pad shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, activate_before_residual: bool, slope: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, momentum=0.1, eps=1e-3)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, momentum=0.1, eps=1e-3)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.stride, self.in_ch, self.out_ch = stride, in_ch, out_ch
        self.activate_before_residual, self.slope = activate_before_residual, slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.leaky_relu(self.bn1(x), self.slope)
        shortcut = act if self.activate_before_residual else x
        out = self.conv1(act)
        out = self.conv2(F.leaky_relu(self.bn2(out), self.slope))
        if self.in_ch != self.out_ch or self.stride != 1:
            shortcut = F.avg_pool2d(shortcut, self.stride) if self.stride != 1 else shortcut
            pad = (self.out_ch - self.in_ch) // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, pad, self.out_ch - self.in_ch - pad))
        return out + shortcut


class PreActResNet(nn.Module):
    """Madry et al.'s CIFAR-10 wide ResNet (widths 16/160/320/640, 5 units a stage) and smaller kin.

    Leaky ReLU 0.1, per-image standardization inside the model, global average pooling.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        widths: tuple[int, int, int, int] = (16, 160, 320, 640),
        units: int = 5,
        slope: float = 0.1,
    ) -> None:
        super().__init__()
        del image_size  # global pooling makes the net size-agnostic
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        for stage, stride in enumerate((1, 2, 2)):
            in_ch, out_ch = widths[stage], widths[stage + 1]
            for unit in range(units):
                layers.append(_Unit(in_ch if unit == 0 else out_ch, out_ch, stride if unit == 0 else 1, stage == 0 and unit == 0, slope))
        self.units = nn.Sequential(*layers)
        self.bn_last = nn.BatchNorm2d(widths[-1], momentum=0.1, eps=1e-3)
        self.head = nn.Linear(widths[-1], num_classes)
        self.slope = slope

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.units(self.stem(per_image_standardization(x)))
        x = F.leaky_relu(self.bn_last(x), self.slope)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _small_resnet(**kwargs: int) -> PreActResNet:
    return PreActResNet(widths=(16, 16, 32, 64), units=3, **kwargs)


#: Registry: architecture name in config.yaml -> constructor(in_channels, image_size, num_classes).
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "madry_cnn": MadryCNN,
    "wide_resnet": PreActResNet,
    "resnet_small": _small_resnet,
}


INIT_SCHEMES = ("madry", "pytorch")


@torch.no_grad()
def madry_init(model: nn.Module) -> None:
    """Madry et al.'s initialisation (MadryLab/mnist_challenge and cifar10_challenge, model.py).

    MNIST CNN: every weight truncated normal with std 0.1 (cut at 2 std, as tf.truncated_normal),
    every bias 0.1. Wide ResNet: conv kernels normal with std sqrt(2 / (k * k * out_channels)),
    the final linear layer uniform unit scaling (U(-sqrt(3 / fan_in), +sqrt(3 / fan_in))) with
    zero bias, batch norm scale 1 and shift 0.
    """
    if isinstance(model, MadryCNN):
        for layer in (model.conv1, model.conv2, model.fc1, model.head):
            nn.init.trunc_normal_(layer.weight, std=0.1, a=-0.2, b=0.2)
            nn.init.constant_(layer.bias, 0.1)
        return
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            nn.init.normal_(module.weight, std=math.sqrt(2.0 / (k_h * k_w * module.out_channels)))
        elif isinstance(module, nn.Linear):
            bound = math.sqrt(3.0 / module.in_features)
            nn.init.uniform_(module.weight, -bound, bound)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build_model(architecture: str, in_channels: int, image_size: int, num_classes: int, init: str = "pytorch") -> nn.Module:
    """A new model; `init` = 'madry' (Madry et al.'s scheme, see `madry_init`) or 'pytorch' (PyTorch's defaults)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown initialisation {init!r}; known: {list(INIT_SCHEMES)}")
    model = ARCHITECTURES[architecture](in_channels=in_channels, image_size=image_size, num_classes=num_classes)
    if init == "madry":
        madry_init(model)
    return model
