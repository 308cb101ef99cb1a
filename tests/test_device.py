"""smoothsqueeze.device.pick_device with CUDA reported present or absent (torch.cuda.is_available
monkeypatched; no GPU is touched): the automatic choice, the SMOOTHSQUEEZE_DEVICE override, and
one GPU claim per process."""
from __future__ import annotations

import pytest
import torch

from smoothsqueeze import device as ssdevice
from smoothsqueeze.device import pick_device


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A fresh process state: no claim held, no override; claim_device records its calls and hands
    out cuda:1 (as if cuda:0 belonged to another job)."""
    monkeypatch.delenv("SMOOTHSQUEEZE_DEVICE", raising=False)
    monkeypatch.setattr(ssdevice, "_CLAIM", None)
    calls: list[int] = []

    def fake_claim() -> str:
        calls.append(1)
        return "cuda:1"

    monkeypatch.setattr(ssdevice, "claim_device", fake_claim)
    return calls


def _cuda(monkeypatch: pytest.MonkeyPatch, present: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)


def test_without_cuda_auto_is_the_cpu_and_claims_nothing(claims: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda(monkeypatch, False)
    assert pick_device() == torch.device("cpu")
    assert pick_device("auto") == torch.device("cpu")
    assert claims == []


def test_with_cuda_auto_claims_a_free_gpu_once_per_process(claims: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda(monkeypatch, True)
    assert pick_device() == torch.device("cuda:1")
    assert pick_device("auto") == torch.device("cuda:1")
    assert claims == [1]  # the second call reuses the first claim


def test_explicit_cuda_falls_back_to_the_cpu_only_when_cuda_is_absent(claims: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda(monkeypatch, False)
    assert pick_device("cuda") == torch.device("cpu")
    assert pick_device("cuda:1") == torch.device("cpu")
    _cuda(monkeypatch, True)
    assert pick_device("cuda:1") == torch.device("cuda:1")
    assert pick_device("cuda") == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
    assert claims == []  # a named device is taken as it is, unclaimed


def test_environment_overrides_auto_and_the_argument_overrides_the_environment(claims: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda(monkeypatch, True)
    monkeypatch.setenv("SMOOTHSQUEEZE_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    assert pick_device("cuda:0") == torch.device("cuda:0")
    monkeypatch.setenv("SMOOTHSQUEEZE_DEVICE", "cuda:1")
    assert pick_device() == torch.device("cuda:1")
    _cuda(monkeypatch, False)
    assert pick_device() == torch.device("cpu")
    assert claims == []
