"""Same config, same seed, same results on the CPU; every artifact says how it was made."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_snakemake
from smoothsqueeze.artifacts import read_npz
from smoothsqueeze.study import STAGE_VERSIONS

# A record needs its model and both black-box sets (crafted on natural_k40); the two other
# models add adversarial training (PGD random starts) and noise to what is compared.
TARGETS = (
    "results/tiny/records/natural_k40.json",
    "results/tiny/models/pgd3-eps0.2-step0.1_k30/model.pt",
    "results/tiny/models/sq0.5_noise0.3_k40/model.pt",
)
PROVENANCE_KEYS = {"torch", "torchvision", "numpy", "python", "device", "device_name", "code_version", "torch_threads", "stage", "stage_version"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_same_config_twice_gives_the_same_records_and_checkpoints(tiny_study: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    run_snakemake(again, *TARGETS, "--resources", "gpu=2")
    first, second = tiny_study / "results" / "tiny", again / "results" / "tiny"

    models = sorted(p.name for p in (second / "models").iterdir())
    assert models == ["natural_k40", "pgd3-eps0.2-step0.1_k30", "sq0.5_noise0.3_k40"]
    for mid in models:
        a = torch.load(first / "models" / mid / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
        b = torch.load(second / "models" / mid / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[name], b[name]) for name in a), mid
        assert sha256(first / "models" / mid / "model.pt") == sha256(second / "models" / mid / "model.pt"), mid
        metrics = [json.loads((d / "models" / mid / "metrics.json").read_text()) for d in (first, second)]
        assert metrics[0]["history"] == metrics[1]["history"], mid

    for name in ("fgsm_cw", "pgd5_cw"):
        a, b = (read_npz(d / "blackbox" / f"{name}.npz") for d in (first, second))
        assert np.array_equal(a["x_adv"], b["x_adv"]) and np.array_equal(a["y"], b["y"]), name
        meta = [json.loads(str(x["meta"])) for x in (a, b)]
        assert without(meta[0], "provenance") == without(meta[1], "provenance"), name

    records = [json.loads((d / "records" / "natural_k40.json").read_text()) for d in (first, second)]
    assert records[0]["accuracy"] == records[1]["accuracy"]
    # Everything else too, the checkpoint's checksum included. Provenance (host, git commit) may differ
    # between runs, and with it the black-box sets' bytes: those were compared array by array above.
    for record in records:
        for detail in record["attacks"]["blackbox"].values():
            detail.pop("set_sha256")
    assert without(records[0], "provenance") == without(records[1], "provenance")


def assert_written_by(record: dict, stage: str) -> None:
    """The record names the stage that wrote it and that stage's own version (the one its rule passes)."""
    assert (record["provenance"]["stage"], record["provenance"]["stage_version"]) == (stage, STAGE_VERSIONS[stage])


def without(obj: dict, key: str) -> dict:
    return {k: v for k, v in obj.items() if k != key}


@pytest.mark.slow
def test_every_artifact_records_seed_versions_and_device(tiny_study: Path) -> None:
    study = tiny_study / "results" / "tiny"
    data_sha = sha256(tiny_study / "data" / "digits.npz")
    for model_dir in sorted((study / "models").iterdir()):
        saved = json.loads((model_dir / "settings.json").read_text())
        assert saved["settings"]["seed"] == 0 and saved["settings"]["model_id"] == model_dir.name
        assert PROVENANCE_KEYS <= set(saved["provenance"]) and saved["provenance"]["torch"] == torch.__version__
        assert saved["provenance"]["device"] == "cpu" and saved["provenance"]["numpy"] == np.__version__
        assert saved["data_sha256"] == data_sha
        assert_written_by(saved, "train")
        for stage, record_path in (("analyze", study / "analysis" / f"{model_dir.name}.json"), ("audit", study / "audit" / f"{model_dir.name}.json")):
            assert_written_by(json.loads(record_path.read_text()), stage)

        record = json.loads((study / "records" / f"{model_dir.name}.json").read_text())
        assert record["seed"] == 0 and PROVENANCE_KEYS <= set(record["provenance"])
        assert record["provenance"]["device"] == "cpu"
        assert_written_by(record, "evaluate")
        assert record["inputs"]["checkpoint_sha256"] == sha256(model_dir / "model.pt")

    for blackbox in sorted((study / "blackbox").glob("*.npz")):
        meta = json.loads(str(read_npz(blackbox)["meta"]))
        assert meta["seed"] == 0 and PROVENANCE_KEYS <= set(meta["provenance"]), blackbox.name
        assert meta["source_sha256"] == sha256(study / "models" / "natural_k40" / "model.pt")
        assert_written_by(meta, "craft_blackbox")
