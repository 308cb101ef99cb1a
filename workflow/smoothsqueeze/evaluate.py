"""Black-box crafting and white-box / black-box evaluation stages.

Every adversarial batch is checked against its budget before it is used (attacks.check_budget);
a violation stops the job, it never becomes a number in a table.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .artifacts import read_json, read_npz, sha256_file, write_json, write_npz
from .attacks import check_budget, correct, pgd
from .data import Dataset
from .errors import PipelineError
from .evidence.per_image import encode_results
from .inference import accuracy
from .prologue import open_stage
from .provenance import provenance


#: A model whose training accuracy is below this multiple of chance (1 / classes) failed to train.
COLLAPSE_FACTOR = 2.0


def training_status(train_accuracy: float, num_classes: int, guard: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Whether a model failed to train: training accuracy below twice chance (20% for 10 classes); and
    whether its training's robust check (`guard`: metrics.json's "guard", train.robust_check) saw
    catastrophic overfitting.

    Such a model is not a robustness result: the tables, the audit table and the report mark it
    'training collapsed' (or 'catastrophic overfitting') wherever its numbers appear.
    """
    threshold = COLLAPSE_FACTOR * 100.0 / num_classes
    collapsed = bool(train_accuracy < threshold)
    reason = (
        f"training collapsed: training accuracy {train_accuracy:.2f}% < {threshold:.0f}% (twice chance)" if collapsed
        else f"trained: training accuracy {train_accuracy:.2f}% >= {threshold:.0f}% (twice chance)"
    )
    overfitted = bool(guard and guard.get("overfitting_detected"))
    status = {"collapsed": collapsed, "reason": reason, "threshold": threshold, "train_accuracy": train_accuracy, "overfitted": overfitted}
    if guard:
        status["overfitting_reason"] = str(guard.get("reason", ""))
        if overfitted:
            status["reason"] = f"{reason}; {status['overfitting_reason']}"
    return status


def run_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """Apply one resolved attack (config.resolve_attack) to a float batch and check its budget."""
    x_adv = pgd(
        model, x, y, eps=attack["eps01"], step_size=attack["step_size01"], steps=attack["steps"], loss=attack["loss"],
        random_start=attack["random_start"], restarts=attack.get("restarts", 1), generator=generator,
    )
    check_budget(x, x_adv, attack["eps01"])
    return x_adv


def attack_dataset(
    model: nn.Module, data: Dataset, attack: dict[str, Any], n: int, batch_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adversarial copies of the first `n` test images; returns (x_adv in [0, 1], labels), on the CPU."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    outs = []
    for start in range(0, n, batch_size):
        xb = data.scale(data.x_test[start : min(start + batch_size, n)].to(device))
        yb = data.y_test[start : min(start + batch_size, n)].to(device)
        outs.append(run_attack(model, xb, yb, attack, generator).cpu())
    return torch.cat(outs), data.y_test[:n].cpu()


def craft_blackbox(spec: Mapping[str, Any], source_checkpoint: str | Path, data_path: str | Path, out: str | Path, device: str | None = None) -> None:
    """Craft one adversarial copy of the test set on the source model and store it once.

    `spec`: attack (resolved), batch_size, max_examples, seed, architecture.
    """
    stage = open_stage(source_checkpoint, data_path, spec.get("max_examples"), spec.get("architecture"), device, channels_last=bool(spec.get("channels_last")))
    attack, seed = spec["attack"], spec["seed"]
    x_adv, y = attack_dataset(stage.model, stage.data, attack, stage.n, spec["batch_size"], seed)
    source_acc = accuracy(stage.model, x_adv, y)
    meta = {
        "attack": attack, "source_checkpoint": str(source_checkpoint), "source_sha256": stage.inputs["checkpoint_sha256"],
        "data": str(data_path), "n": stage.n, "source_accuracy": source_acc, "seed": seed, "provenance": provenance(stage.device, "craft_blackbox"),
    }
    write_npz(out, x_adv=x_adv.numpy().astype(np.float32), y=y.numpy(), meta=np.array(json.dumps(meta)))
    print(f"crafted {attack['name']} on {source_checkpoint}: {stage.n} images, source-model accuracy {source_acc:.2f}%", flush=True)


def load_blackbox_set(path: str | Path, data: Dataset) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """A stored black-box set, checked against its budget and against the clean test images."""
    arrays = read_npz(path, required=("x_adv", "y", "meta"))
    try:
        meta = json.loads(str(arrays["meta"]))
        meta["attack"]["eps01"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise PipelineError(f"{path}: its metadata are unreadable; delete it and rerun craft-blackbox") from None
    x_adv, y = torch.from_numpy(arrays["x_adv"]), torch.from_numpy(arrays["y"]).long()
    n = len(y)
    if n > len(data.y_test) or not torch.equal(y, data.y_test[:n].cpu()):
        raise PipelineError(f"{path}: its labels do not match the study's test set; delete it and rerun")
    try:
        check_budget(data.scale(data.x_test[:n].cpu()), x_adv, meta["attack"]["eps01"])
    except Exception as err:
        raise PipelineError(f"{path}: black-box set violates its budget ({err})") from None
    return x_adv, y, meta


def evaluate(
    spec: Mapping[str, Any], checkpoint: str | Path, data_path: str | Path, blackbox_sets: Mapping[str, str | Path],
    out: str | Path, device: str | None = None, metrics: str | Path | None = None,
) -> dict[str, Any]:
    """Clean, white-box and black-box accuracy of one model; writes one JSON record.

    `spec`: whitebox (resolved attacks), batch_size, max_examples, seed, info (copied into the
    record), architecture. `blackbox_sets`: name -> stored set (craft_blackbox).
    """
    stage = open_stage(checkpoint, data_path, spec.get("max_examples"), spec.get("architecture"), device, channels_last=bool(spec.get("channels_last")))
    model, data, n = stage.model, stage.data, stage.n
    batch_size, seed = spec["batch_size"], spec["seed"]
    device = next(model.parameters()).device
    masks: dict[str, torch.Tensor] = {}

    def score(key: str, x: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy (%) of `key` on float images `x`, its per-image mask kept for the record."""
        masks[key] = correct(model, x.to(device), y.to(device), batch_size).cpu()
        return 100.0 * masks[key].float().mean().item() if len(masks[key]) else float("nan")

    acc: dict[str, float] = {
        "train": accuracy(model, data.x_train, data.y_train, data.max_value, batch_size),
        "test": score("test", data.scale(data.x_test[:n].to(device)), data.y_test[:n]),
    }
    guard = read_json(metrics).get("guard") if metrics is not None else None  # the training's robust check (train.robust_check)
    training = training_status(acc["train"], data.num_classes, guard)
    if training["collapsed"]:
        print(f"WARNING: {training['reason']}; its robustness numbers are marked 'training collapsed' everywhere", flush=True)
    if training["overfitted"]:
        print(f"WARNING: {training['overfitting_reason']}; its robustness numbers are marked 'catastrophic overfitting' everywhere", flush=True)
    details: dict[str, Any] = {"whitebox": {}, "blackbox": {}}
    for attack in spec["whitebox"]:
        x_adv, y = attack_dataset(model, data, attack, n, batch_size, seed)
        key = f"whitebox_{attack['name']}"
        acc[key] = score(key, x_adv, y)
        details["whitebox"][attack["name"]] = attack
        print(f"white-box {attack['name']}: {acc[key]:.2f}%", flush=True)
    for name, path in sorted(blackbox_sets.items()):
        x_adv, y, meta = load_blackbox_set(path, data)
        m = min(n, len(y))
        key = f"blackbox_{name}"
        if m < n:
            raise PipelineError(f"{path}: holds {m} images, the evaluation attacks {n}; delete it and rerun craft-blackbox")
        acc[key] = score(key, x_adv[:m], y[:m])
        details["blackbox"][name] = {
            **meta["attack"], "set": str(path), "set_sha256": sha256_file(path), "source_checkpoint": meta["source_checkpoint"], "n": m,
        }
        print(f"black-box {name}: {acc[key]:.2f}%", flush=True)
    record = {
        **spec.get("info", {}),
        "n_test": n,
        "n_train": len(data.x_train),
        "accuracy": acc,
        "training": training,
        "attacks": details,
        # Which attacked images (the first n of the test set) each result got right: one bit per image.
        "per_image": encode_results(range(n), {key: mask.numpy() for key, mask in masks.items()}),
        "inputs": stage.inputs,
        "seed": seed,
        "provenance": provenance(stage.device, "evaluate"),
    }
    write_json(out, record)
    return record
