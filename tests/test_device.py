"""smoothsqueeze.device.pick_device with CUDA reported present or absent (torch.cuda.is_available
monkeypatched; no GPU is touched): the automatic choice, the SMOOTHSQUEEZE_DEVICE override, and
one GPU claim per process; a value that is no device is refused in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smoothsqueeze import device as ssdevice
from smoothsqueeze.device import pick_device
from smoothsqueeze.errors import PipelineError


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


@pytest.mark.slow
def test_a_device_that_is_not_one_is_refused_in_one_line_by_the_command(tmp_path: Path) -> None:
    """SMOOTHSQUEEZE_DEVICE=banana through the real command: one line naming the variable and its
    value, exit non-zero, nothing written (the device is picked before any file is read)."""
    out = tmp_path / "record.json"
    spec = json.dumps({"whitebox": [], "batch_size": 10, "seed": 0})
    proc = subprocess.run(
        [sys.executable, "-m", "smoothsqueeze", "evaluate", "--spec", spec, "--checkpoint", str(tmp_path / "m.pt"),
         "--data", str(tmp_path / "d.npz"), "--out", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "SMOOTHSQUEEZE_DEVICE": "banana"},
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "SMOOTHSQUEEZE_DEVICE" in lines[0] and "'banana'" in lines[0], lines[0]
    assert not out.exists()


def test_a_device_argument_that_is_not_one_names_the_option(claims: list[int]) -> None:
    with pytest.raises(PipelineError, match=r"^--device='cuda:x' is not a device"):
        pick_device("cuda:x")
