"""Which logit-squeeze normalisation reproduces the paper's MNIST pattern?

The paper adds ``beta * ||z||_2`` to the loss without saying over what it is normalised; the
pipeline offers the readings in `smoothsqueeze.losses.SQUEEZE_NORMS` (per_example, batch,
batch_unscaled; see losses.py). This script trains, with the pipeline's own
`smoothsqueeze.train.train_model` (no Snakemake; one temporary work dir per run), the study's
model (madry_cnn for digits / Fashion-MNIST) with Gaussian noise of std `--sigma` for every
normalisation x beta, plus one beta-0 reference (the normalisation does not matter at beta 0),
and reports per run:

- train acc: training accuracy over the last logged window of the history (noisy training
  batches, as train_model logs it); train acc clean: the whole training set without noise;
- test acc: the test set (clean);
- mean logit norm: mean per-example ||z_i||_2 over that last window (noisy batches);
- collapsed: train acc < 2x chance (20% for 10 classes);
- seconds: wall time of train_model (the final accuracy passes included).

Next to it, the paper's MNIST numbers (workflow/smoothsqueeze/resources/paper/mnist_table5.csv, read, never typed: the
regularised rows with alpha 0 and sigma 0.5) and one verdict per normalisation, computed by one
rule applied alike to our runs and to the paper's rows:

    a beta "trains"   when it did not collapse and its test accuracy is within 10 points of the
                      beta-0 reference (same noise, same k);
    a beta is "degraded" otherwise (collapsed, or test accuracy > 10 points below the reference);
    verdict = "matches the paper's MNIST pattern" when beta 2 and beta 5 train and beta 10 is
              degraded; "does not match (...)" with the betas that break the pattern otherwise;
              "undetermined" when beta 0, 2, 5 or 10 was not run.

The script prints the rule's verdict on the paper's own rows too (per k): it should say
"matches" there, which checks the rule.

    python benchmarks/calibrate_squeeze.py --data data/digits.npz --study digits --jobs 2
    python benchmarks/calibrate_squeeze.py --data data/fashion_mnist.npz --study fashion --k 3000
    python benchmarks/calibrate_squeeze.py --data data/digits.npz --norms batch --betas 1 2 5 10
    python benchmarks/calibrate_squeeze.py --data data/digits.npz --quick
"""
from __future__ import annotations

import argparse
import concurrent.futures
import copy
import csv
import inspect
import math
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401  (puts workflow/ on sys.path in a fresh clone)
import pandas as pd
import torch
from common import ROOT, fmt, print_table
from smoothsqueeze import config as sscfg
from smoothsqueeze import train as sstrain
from smoothsqueeze.data import Dataset, load_dataset
from smoothsqueeze.losses import SQUEEZE_NORMS
from smoothsqueeze.paper import PAPER_DIR

BETAS = (0.5, 1.0, 2.0, 5.0, 10.0)
QUICK_BETAS = (2.0, 5.0, 10.0)
QUICK_K = 10
#: Noise std ([0, 1] pixel units) per dataset when --sigma is not given (see the module docstring).
DEFAULT_SIGMA = {"digits": 0.3, "fashion_mnist": 0.2, "mnist": 0.5}
#: The verdict rule (module docstring): points of test accuracy a beta may lose against beta 0 and still "train".
TOLERANCE = 10.0
#: The paper's rows the verdict is computed on (MNIST Table 5: alpha 0, noise 0.5).
PAPER_SIGMA = 0.5
PAPER_CSV = PAPER_DIR / "mnist_table5.csv"
PATTERN_BETAS = {"train": (2.0, 5.0), "degraded": (10.0,)}
NUM_CLASSES = 10
COLLAPSE = 2 * 100.0 / NUM_CLASSES  # train accuracy below 2x chance
REFERENCE = "none"  # the `norm` of the beta-0 run

COLUMNS = ["norm", "beta", "sigma", "k", "train_accuracy", "train_accuracy_clean", "test_accuracy", "logit_norm", "collapsed", "seconds", "error"]


# --- settings ---------------------------------------------------------------------------------

def find_study(config: dict[str, Any], name: str) -> str:
    """The study called `name`, or the one study whose name or dataset starts with it ('fashion')."""
    studies = config["studies"]
    if name in studies:
        return name
    hits = [s for s, st in studies.items() if s.startswith(name) or str(st.get("dataset", "")).startswith(name)]
    if len(hits) == 1:
        return hits[0]
    raise SystemExit(
        f"config has no study {name!r} (have {sorted(studies)}); any study with a madry_cnn recipe trains on --data, "
        "e.g. --study digits"
    )


def study_k(study: dict[str, Any]) -> int:
    """The k of the study's logit-squeezing models (the most common k of its grid when it has none)."""
    squeezed = [e["k"] for e in study["grid"] if e.get("beta")]
    ks = squeezed or [e["k"] for e in study["grid"]]
    return max(set(ks), key=ks.count)


def make_settings(config: dict[str, Any], study: str, norm: str, beta: float, sigma: float, k: int, log_every: int | None) -> dict[str, Any]:
    """Settings as `config.resolve_model` gives them, for a grid of this one model."""
    cfg = copy.deepcopy(config)
    units = cfg["studies"][study].get("pixel_units", 1)
    entry: dict[str, Any] = {"k": k}
    if beta:
        entry["beta"] = beta
    if sigma:
        entry["sigma"] = sigma * units
    cfg["studies"][study]["grid"] = [entry]
    settings = sscfg.resolve_model(cfg, study, sscfg.model_id(entry))
    settings["train"]["squeeze_norm"] = norm if beta else "per_example"
    settings["train"]["checkpoint_every"] = 10**9  # train_model still writes one at k, into the temporary dir
    if log_every:
        settings["train"]["log_every"] = log_every
    return settings


# --- one training run (in a worker process) ---------------------------------------------------

_DATA: dict[tuple[str, str], Dataset] = {}


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train one model in a temporary work dir; the row of the results table."""
    device = torch.device(task["device"])
    key = (task["data"], str(device))
    if key not in _DATA:
        _DATA[key] = load_dataset(task["data"]).to(device)
    settings = task["settings"]
    row: dict[str, Any] = {
        "norm": task["norm"], "beta": float(settings["beta"]), "sigma": float(settings["sigma01"]), "k": settings["k"],
        "train_accuracy": math.nan, "train_accuracy_clean": math.nan, "test_accuracy": math.nan, "logit_norm": math.nan,
        "collapsed": True, "seconds": math.nan, "error": "",
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="calibrate_squeeze.") as tmp:
        try:
            _, metrics = sstrain.train_model(settings, _DATA[key], Path(tmp), device, log=lambda line: None)
        except sstrain.TrainingDiverged as err:  # a result, not a crash of the calibration
            row.update(seconds=time.perf_counter() - start, error=str(err).splitlines()[0][:200])
            return row
    last = metrics["history"][-1]
    row.update(
        train_accuracy=last["accuracy"], train_accuracy_clean=metrics["train_accuracy"], test_accuracy=metrics["test_accuracy"],
        logit_norm=last["logit_norm"], collapsed=last["accuracy"] < COLLAPSE, seconds=time.perf_counter() - start,
    )
    return row


def run_all(tasks: list[dict[str, Any]], jobs: int, threads: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        print(
            f"  {row['norm']:>14s} beta {row['beta']:<5g} train {fmt(row['train_accuracy'], '.1f'):>5s}%  "
            f"test {fmt(row['test_accuracy'], '.1f'):>5s}%  |z| {fmt(row['logit_norm'], '.3f'):>7s}  "
            f"{row['seconds']:.1f} s{'  ' + row['error'] if row['error'] else ''}",
            flush=True,
        )

    if jobs <= 1:
        _init_worker(threads)
        for task in tasks:
            report(run_one(task))
        return rows
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # the spawned workers inherit it
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that has started torch's thread pools
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        for future in concurrent.futures.as_completed([pool.submit(run_one, task) for task in tasks]):
            report(future.result())
    return rows


# --- the verdict ------------------------------------------------------------------------------

def verdict(tests: dict[float, float], collapsed: dict[float, bool], reference: float | None, reference_collapsed: bool = False) -> str:
    """The rule of the module docstring: `tests` / `collapsed` per beta, `reference` = beta-0 test accuracy."""
    needed = [*PATTERN_BETAS["train"], *PATTERN_BETAS["degraded"]]
    missing = [b for b in needed if b not in tests]
    no_reference = reference is None or math.isnan(reference)
    if no_reference or missing:
        what = [f"beta {b:g}" for b in missing] + (["a beta-0 reference"] if no_reference else [])
        return f"undetermined (needs {', '.join(what)})"
    if reference_collapsed:
        return f"undetermined (the beta-0 reference did not train: test {reference:.1f}%; more iterations?)"

    def trains(beta: float) -> bool:
        test = tests[beta]
        return not collapsed[beta] and not math.isnan(test) and test >= reference - TOLERANCE

    def state(beta: float) -> str:
        if collapsed[beta]:
            return f"beta {beta:g} collapsed (test {fmt(tests[beta], '.1f')}%)"
        return f"beta {beta:g} {'trains' if trains(beta) else 'degraded'} (test {fmt(tests[beta], '.1f')}% vs {reference:.1f}% at beta 0)"

    broken = [state(b) for b in PATTERN_BETAS["train"] if not trains(b)]
    broken += [state(b) for b in PATTERN_BETAS["degraded"] if trains(b)]
    if not broken:
        return "matches the paper's MNIST pattern"
    return "does not match (" + "; ".join(broken) + ")"


def paper_pattern(path: Path = PAPER_CSV) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """The paper's regularised MNIST rows with alpha 0 and noise PAPER_SIGMA, and the verdict rule applied to each k."""
    table = pd.read_csv(path)
    rows = table[(table["defense"] == "regularized") & (table["alpha"] == 0) & (table["sigma"] == PAPER_SIGMA)]
    rows = rows.drop_duplicates(subset=["beta", "k"], keep="first").sort_values(["k", "beta"])  # Table 5 repeats some rows
    out = [
        {"row": int(r.row), "beta": float(r.beta), "sigma": float(r.sigma), "k": int(r.k), "train": float(r.train), "test": float(r.test),
         "collapsed": float(r.train) < COLLAPSE}
        for r in rows.itertuples()
    ]
    verdicts = {}
    for k in sorted({r["k"] for r in out}):
        at_k = [r for r in out if r["k"] == k]
        ref = next((r for r in at_k if r["beta"] == 0), None)
        verdicts[k] = verdict(
            {r["beta"]: r["test"] for r in at_k if r["beta"]}, {r["beta"]: r["collapsed"] for r in at_k if r["beta"]},
            ref["test"] if ref else None, bool(ref and ref["collapsed"]),
        )
    return out, verdicts


def norm_verdicts(rows: list[dict[str, Any]], norms: list[str]) -> dict[str, str]:
    ref_rows = [r for r in rows if r["norm"] == REFERENCE]
    reference = ref_rows[0]["test_accuracy"] if ref_rows else None
    reference_collapsed = bool(ref_rows and ref_rows[0]["collapsed"])
    out = {}
    for norm in norms:
        mine = [r for r in rows if r["norm"] == norm]
        out[norm] = verdict({r["beta"]: r["test_accuracy"] for r in mine}, {r["beta"]: r["collapsed"] for r in mine}, reference, reference_collapsed)
    return out


# --- output -----------------------------------------------------------------------------------

RUN_TABLE = [
    ("norm", "norm", ""), ("beta", "beta", "g"), ("train_accuracy", "train acc (last window) %", ".1f"),
    ("train_accuracy_clean", "train acc clean %", ".1f"), ("test_accuracy", "test acc %", ".1f"), ("logit_norm", "mean logit norm (last window)", ".3f"),
    ("collapsed", "collapsed", ""), ("seconds", "seconds", ".1f"),
]
PAPER_TABLE = [("row", "Table 5 row", ""), ("beta", "beta", "g"), ("sigma", "sigma", "g"), ("k", "k", ""), ("train", "train %", ".2f"),
               ("test", "test %", ".2f"), ("collapsed", "collapsed", "")]


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    cell = lambda row, key, spec: ("yes" if row.get(key) else "no") if isinstance(row.get(key), bool) else fmt(row.get(key), spec)  # noqa: E731
    lines = ["| " + " | ".join(head for _, head, _ in columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(row, key, spec) for key, _, spec in columns) + " |" for row in rows]
    return "\n".join(lines)


def yes_no(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: ("yes" if v else "no") if isinstance(v, bool) else v for k, v in row.items()} for row in rows]


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def squeeze_norm_wired() -> bool:
    """Does train_model read settings['train']['squeeze_norm'] yet? (Until it does, every norm trains as per_example.)"""
    return "squeeze_norm" in inspect.getsource(sstrain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", required=True, help="a prepared dataset .npz (python -m smoothsqueeze prepare-data digits --out data/digits.npz)")
    parser.add_argument("--study", default="digits", help="study of config.yaml whose training recipe (optimizer, lr, batch) is used; "
                        "'fashion' finds the Fashion-MNIST study")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"), help="config file")
    parser.add_argument("--k", type=int, default=None, help="training iterations (default: the study's k for logit squeezing)")
    parser.add_argument("--sigma", type=float, default=None, help="Gaussian noise std in [0, 1] pixel units "
                        f"(default per dataset: {', '.join(f'{d} {s:g}' for d, s in DEFAULT_SIGMA.items())}; 0.3 otherwise)")
    parser.add_argument("--norms", nargs="+", choices=SQUEEZE_NORMS, default=list(SQUEEZE_NORMS))
    parser.add_argument("--betas", nargs="+", type=float, default=list(BETAS), help="beta 0 (the reference) is always added")
    parser.add_argument("--jobs", type=int, default=2, help="trainings run in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out-dir", default=None, help="default: benchmarks_out/calibration/<dataset file name>/")
    parser.add_argument("--quick", action="store_true", help=f"k = {QUICK_K}, betas {' '.join(f'{b:g}' for b in QUICK_BETAS)}: checks the script runs")
    args = parser.parse_args()

    config = sscfg.load_config(args.config)
    study = find_study(config, args.study)
    st = config["studies"][study]
    if st["architecture"] != "madry_cnn":
        print(f"note: study {study!r} trains {st['architecture']}, not Madry's CNN")
    data_path = Path(args.data).resolve()
    data = load_dataset(data_path)
    dataset = data_path.stem
    sigma = args.sigma if args.sigma is not None else DEFAULT_SIGMA.get(dataset, 0.3)
    k = QUICK_K if args.quick else (args.k or study_k(st))
    betas = sorted({b for b in (QUICK_BETAS if args.quick else args.betas) if b > 0})
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    log_every = max(1, k // 2) if args.quick else None
    out_dir = Path(args.out_dir) if args.out_dir else Path("benchmarks_out") / "calibration" / dataset

    wired = squeeze_norm_wired()
    recipe = {key: st["train"][key] for key in ("optimizer", "lr", "batch_size") if key in st["train"]}
    window = min(k, log_every or st["train"].get("log_every", 100))
    header = (
        f"# {dataset} ({len(data.x_train)} train / {len(data.x_test)} test, {tuple(data.image_shape)}), study {study} "
        f"({st['architecture']}, {', '.join(f'{a} {b}' for a, b in recipe.items())}), k {k}, noise sigma {sigma:g}, "
        f"{args.jobs} jobs x {args.threads} thread(s) on {device}; last window = the last {window} iterations"
    )
    print(header)
    if not wired:
        print("WARNING: smoothsqueeze/train.py does not read settings['train']['squeeze_norm'] yet: every norm trains as per_example")

    tasks = [{"norm": REFERENCE, "settings": make_settings(config, study, "per_example", 0.0, sigma, k, log_every)}]
    tasks += [{"norm": n, "settings": make_settings(config, study, n, b, sigma, k, log_every)} for n in args.norms for b in betas]
    for task in tasks:
        task.update(data=str(data_path), device=str(device))
    print(f"training {len(tasks)} models:", flush=True)
    t0 = time.perf_counter()
    rows = run_all(tasks, args.jobs, args.threads)
    order = {n: i for i, n in enumerate([REFERENCE, *SQUEEZE_NORMS])}
    rows.sort(key=lambda r: (order[r["norm"]], r["beta"]))
    elapsed = time.perf_counter() - t0

    verdicts = norm_verdicts(rows, args.norms)
    paper_rows, paper_verdicts = paper_pattern()

    print_table(yes_no(rows), RUN_TABLE, title=f"Logit squeezing + noise {sigma:g} on {dataset}, k {k} ({elapsed:.0f} s in all)")
    print_table(yes_no(paper_rows), PAPER_TABLE, title=f"The paper's MNIST pattern (Table 5, alpha 0, noise {PAPER_SIGMA:g}; {shown(PAPER_CSV)})")
    print()
    for pk, text in paper_verdicts.items():
        print(f"paper, k {pk}: {text}")
    print(f"\n## Verdict per normalisation (rule: beta {' and '.join(f'{b:g}' for b in PATTERN_BETAS['train'])} within "
          f"{TOLERANCE:g} points of beta 0 and not collapsed, beta {' '.join(f'{b:g}' for b in PATTERN_BETAS['degraded'])} degraded or collapsed)\n")
    for norm, text in verdicts.items():
        print(f"- {norm}: {text}")
    if not wired:
        print("\n(train.py ignored squeeze_norm in this run: the three normalisations trained identically)")

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "calibration.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row[c] for c in COLUMNS})
    md = [
        f"# Logit-squeeze normalisation calibration: {dataset}", "", header.removeprefix("# "), "",
        *([] if wired else ["**train.py ignored squeeze_norm in this run: every norm trained as per_example.**", ""]),
        markdown_table(rows, RUN_TABLE), "",
        f"## The paper's MNIST pattern (Table 5, alpha 0, noise {PAPER_SIGMA:g}; {shown(PAPER_CSV)})", "", markdown_table(paper_rows, PAPER_TABLE), "",
        *[f"- paper, k {pk}: {text}" for pk, text in paper_verdicts.items()], "",
        "## Verdict per normalisation", "",
        f"Rule: a beta trains when it does not collapse (train accuracy >= {COLLAPSE:g}%) and its test accuracy is within "
        f"{TOLERANCE:g} points of the beta-0 run; the pattern is beta {' and '.join(f'{b:g}' for b in PATTERN_BETAS['train'])} train, "
        f"beta {' '.join(f'{b:g}' for b in PATTERN_BETAS['degraded'])} does not.", "",
        *[f"- {norm}: {text}" for norm, text in verdicts.items()], "",
    ]
    (out_dir / "calibration.md").write_text("\n".join(md))
    print(f"\nwrote {out_dir / 'calibration.csv'} and {out_dir / 'calibration.md'}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
