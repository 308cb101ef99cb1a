"""The tiny study's black-box numbers recomputed from the stored sets: each evaluation record's
black-box accuracy is the model's accuracy on the stored .npz set (loaded here with numpy and run
with plain torch, not the evaluation code), every record names the same set with that file's
checksum, and each set was crafted on the study's source model as its metadata says."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY_CONFIG
from smoothsqueeze import load_model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return 100.0 * float((pred == y).mean())


@pytest.mark.slow
def test_blackbox_accuracies_recomputed_from_the_stored_sets(tiny_study: Path) -> None:
    tiny = yaml.safe_load(TINY_CONFIG.read_text())["studies"]["tiny"]
    names = [a["name"] for a in tiny["blackbox"]["attacks"]]
    source = tiny["blackbox"]["source"]
    records = {p.stem: json.loads(p.read_text()) for p in sorted((tiny_study / "results/tiny/records").glob("*.json"))}
    assert len(records) == len(tiny["grid"])
    for name in names:
        path = tiny_study / "results/tiny/blackbox" / f"{name}.npz"
        with np.load(path, allow_pickle=False) as arrays:
            x_adv, y, meta = arrays["x_adv"], arrays["y"], json.loads(str(arrays["meta"]))
        assert x_adv.dtype == np.float32 and len(x_adv) == len(y) == tiny["attack"]["max_examples"]
        # crafted once, on the source model, as its metadata says
        source_ckpt = tiny_study / f"results/tiny/models/{source}/model.pt"
        assert Path(meta["source_checkpoint"]).name == "model.pt" and source in meta["source_checkpoint"]
        assert meta["source_sha256"] == _sha256(source_ckpt)
        assert meta["source_accuracy"] == pytest.approx(_accuracy(load_model(source_ckpt), x_adv, y), abs=1e-4)
        checksum = _sha256(path)
        for mid, record in records.items():
            detail = record["attacks"]["blackbox"][name]
            # every record read this very file
            assert (tiny_study / detail["set"]).resolve() == path.resolve(), mid
            assert detail["set_sha256"] == checksum, mid
            assert detail["n"] == len(y) and detail["source_checkpoint"] == meta["source_checkpoint"], mid
            model = load_model(tiny_study / record["inputs"]["checkpoint"])
            assert _sha256(tiny_study / record["inputs"]["checkpoint"]) == record["inputs"]["checkpoint_sha256"], mid
            expected = _accuracy(model, x_adv[: detail["n"]], y[: detail["n"]])
            assert record["accuracy"][f"blackbox_{name}"] == pytest.approx(expected, abs=1e-4), (mid, name)
