"""Per-job overhead of the pipeline: interpreter start, imports, loading, and the digits demo.

Every Snakemake job is a fresh `python -m smoothsqueeze <stage>` process. This prints what a
job costs beyond its useful work:
- start-up: `python -c pass`, `import torch`, `import smoothsqueeze.train` / `.evaluate`;
- a train job with k = 1 on the digits (subprocess, as the rule runs it) vs the same
  `train.run` call in this warm process: the difference is interpreter + imports; the
  in-process time is loading, model building, one step, the final accuracy pass and writing;
- an evaluate job (clean accuracy + FGSM on the test set), the same two ways;
- `snakemake -n` on the digits study (parsing the workflow and building the DAG);
- with --demo: the whole digits demo in a temporary folder (about 3 minutes on 2 cores).

Job subprocesses get OMP_NUM_THREADS / MKL_NUM_THREADS = --job-threads (1, as Snakemake gives a
rule with `threads: 1`).

    python benchmarks/bench_pipeline.py
    python benchmarks/bench_pipeline.py --demo
    python benchmarks/bench_pipeline.py --quick
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import (
    ROOT,
    base_parser,
    machine_info,
    median,
    print_table,
    setup,
    write_json,
)
from smoothsqueeze import config as sscfg


class _Done(Exception):
    """--quick stops after the train and evaluate jobs."""


def run_timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 1800) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds and CPU seconds (user + sys of the children) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc


def in_process(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Wall and CPU seconds of one call in this process."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = base_parser(__doc__.split("\n")[0], repeats=5)
    parser.add_argument("--demo", action="store_true", help="also run the full digits demo in a temporary folder (about 3 min)")
    parser.add_argument("--job-threads", type=int, default=1, help="OMP/MKL threads of the job subprocesses (Snakemake gives threads: 1)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = parser.parse_args()
    device = setup(args)
    py = sys.executable
    env = {**os.environ, "OMP_NUM_THREADS": str(args.job_threads), "MKL_NUM_THREADS": str(args.job_threads), "SMOOTHSQUEEZE_DEVICE": str(device)}
    pkg_path = str(ROOT / "workflow")
    env["PYTHONPATH"] = pkg_path + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else pkg_path
    rows: list[dict[str, Any]] = []

    def add(name: str, walls: list[float], cpus: list[float], note: str = "") -> None:
        rows.append({"what": name, "wall_s": median(walls), "cpu_s": median(cpus) if cpus else None, "runs": len(walls), "note": note})
        print(f"{name:55s} {median(walls):7.2f} s wall" + (f"  {median(cpus):7.2f} s CPU" if cpus else ""), flush=True)

    starts = [("python -c pass", "pass"), ("python -c 'import torch'", "import torch"),
              ("python -c 'import torch, torch._dynamo'  (an optimizer's first use imports dynamo)", "import torch, torch._dynamo"),
              ("python -c 'import smoothsqueeze.train'", "import smoothsqueeze.train"),
              ("python -c 'import smoothsqueeze.evaluate'", "import smoothsqueeze.evaluate")]
    for name, code in [] if args.quick else starts:
        walls, cpus = [], []
        for _ in range(args.repeats):
            w, c, _ = run_timed([py, "-c", code], env)
            walls.append(w)
            cpus.append(c)
        add(name, walls, cpus)

    config = sscfg.load_config(ROOT / "config.yaml")
    study = "digits"
    st = config["studies"][study]
    mid = st["blackbox"]["source"]
    settings = {**sscfg.resolve_model(config, study, mid), "k": 1}

    tmp_ctx = tempfile.TemporaryDirectory() if not args.keep else None
    work = Path(args.keep or tmp_ctx.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    try:
        data_path = work / "digits.npz"
        if args.quick:
            from smoothsqueeze.data import prepare_digits

            prepare_digits(data_path)
        else:
            w, c, _ = run_timed([py, "-m", "smoothsqueeze", "prepare-data", "digits", "--out", str(data_path)], env)
            add("job: prepare-data digits", [w], [c])

        from smoothsqueeze import evaluate as ss_eval
        from smoothsqueeze import train as ss_train

        def train_cmd(out: Path) -> list[str]:
            return [py, "-m", "smoothsqueeze", "train", "--spec", json.dumps(settings), "--data", str(data_path), "--checkpoint", str(out / "model.pt"),
                    "--metrics", str(out / "metrics.json"), "--settings-out", str(out / "settings.json")]

        def train_here(out: Path) -> None:
            ss_train.run(settings, data_path, out / "model.pt", out / "metrics.json", out / "settings.json", device=str(device))

        attack = sscfg.resolve_attack({"name": "fgsm_xent", "method": "fgsm", "loss": "xent"}, st["attack"]["eps"], st.get("pixel_units", 1))
        spec = {"whitebox": [attack], "batch_size": st["attack"]["batch_size"], "max_examples": None, "seed": 0, "architecture": st["architecture"], "info": {}}

        def eval_cmd(ckpt: Path, out: Path) -> list[str]:
            return [py, "-m", "smoothsqueeze", "evaluate", "--spec", json.dumps(spec), "--checkpoint", str(ckpt), "--data", str(data_path), "--out", str(out)]

        def eval_here(ckpt: Path, out: Path) -> None:
            ss_eval.evaluate(spec, ckpt, data_path, {}, out, str(device))

        threads_before = torch.get_num_threads()
        torch.set_num_threads(args.job_threads)  # the in-process runs get the job's threads too
        quiet = contextlib.redirect_stdout(io.StringIO())  # the stage functions print progress lines
        with quiet:
            train_here(work / "warm")  # warm caches (imports, kernels) for the in-process runs
        ckpt = work / "warm" / "model.pt"
        walls_sub, cpus_sub, walls_esub, cpus_esub = [], [], [], []
        t_in: list[tuple[float, float]] = []
        t_ein: list[tuple[float, float]] = []
        for i in range(args.repeats):  # interleaved
            w, c, _ = run_timed(train_cmd(work / f"sub{i}"), env)
            walls_sub.append(w)
            cpus_sub.append(c)
            with contextlib.redirect_stdout(io.StringIO()):
                t_in.append(in_process(lambda i=i: train_here(work / f"in{i}")))
                t_ein.append(in_process(lambda i=i: eval_here(ckpt, work / f"eval_in{i}.json")))
            w, c, _ = run_timed(eval_cmd(ckpt, work / f"eval_sub{i}.json"), env)
            walls_esub.append(w)
            cpus_esub.append(c)
        torch.set_num_threads(threads_before)
        add("job: python -m smoothsqueeze train (digits, k=1)", walls_sub, cpus_sub)
        add("  the same train.run in a warm process", [w for w, _ in t_in], [c for _, c in t_in])
        add("  = interpreter + imports of a train job", [a - w for a, (w, _) in zip(walls_sub, t_in)], [a - c for a, (_, c) in zip(cpus_sub, t_in)])
        add("job: python -m smoothsqueeze evaluate (clean + FGSM, 360 images)", walls_esub, cpus_esub)
        add("  the same evaluate() in a warm process", [w for w, _ in t_ein], [c for _, c in t_ein])
        add("  = interpreter + imports of an evaluate job", [a - w for a, (w, _) in zip(walls_esub, t_ein)], [a - c for a, (_, c) in zip(cpus_esub, t_ein)])

        if args.quick:
            raise _Done
        smk = [py, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", str(ROOT / "config.yaml"), "--cores", "2", "--resources", "gpu=2"]
        dry = work / "dry"
        dry.mkdir(exist_ok=True)
        walls = []
        for _ in range(max(1, min(args.repeats, 3))):
            w, _, _ = run_timed([*smk, "-d", str(dry), "-n", "--quiet"], env)
            walls.append(w)
        add("snakemake -n (digits study: parse + DAG)", walls, [])

        demo = None
        if args.demo:
            demo = run_demo(smk, work / "demo", env)
            add(f"digits demo: snakemake --cores 2 ({demo['jobs']} jobs)", [demo["wall_s"]], [demo["cpu_s"]],
                f"train jobs' own wall_seconds sum {demo['train_wall_sum_s']:.0f} s")
    except _Done:
        demo = None
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()

    print_table(rows, [("what", "what", ""), ("wall_s", "wall s (median)", ".2f"), ("cpu_s", "CPU s (median)", ".2f"), ("runs", "runs", "d"), ("note", "note", "")],
                title=f"Per-job overhead (job threads {args.job_threads})")
    if demo:
        print_table(demo["jobs_table"], [("rule", "rule", ""), ("jobs", "jobs", "d"), ("sum_s", "sum of job s", ".1f"), ("max_s", "longest job s", ".1f"), ("cpu_s", "sum of job CPU s", ".1f"), ("source", "from", "")],
                    title=f"Digits demo: {demo['wall_s']:.0f} s wall for {demo['jobs']} jobs")
    write_json(args.json, {"machine": machine_info(device), "job_threads": args.job_threads, "rows": rows, "demo": demo})


def run_demo(smk: list[str], workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    """The full digits demo in `workdir`; job times from Snakemake benchmark files or train metrics."""
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"running the digits demo in {workdir} ...", flush=True)
    env = {k: v for k, v in env.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}  # Snakemake sets them per rule
    wall, cpu, proc = run_timed([*smk, "-d", str(workdir)], env, timeout=3600)
    log = proc.stdout + proc.stderr
    jobs = len(re.findall(r"Finished job(?:id)?[: ]", log))
    per_rule: dict[str, list[float]] = {}
    cpu_rule: dict[str, list[float]] = {}
    sources: dict[str, str] = {}
    for tsv in workdir.glob("**/benchmarks/**/*.tsv"):
        rule = tsv.relative_to(workdir).parts[tsv.relative_to(workdir).parts.index("benchmarks") + 1]
        with tsv.open() as fh:
            for rec in csv.DictReader(fh, delimiter="\t"):
                per_rule.setdefault(rule, []).append(float(rec["s"]))
                if rec.get("cpu_time") not in (None, "", "NA"):
                    cpu_rule.setdefault(rule, []).append(float(rec["cpu_time"]))
                sources[rule] = "benchmark .tsv"
    train_walls = []
    for metrics in workdir.glob("**/models/*/metrics.json"):
        train_walls.append(float(json.loads(metrics.read_text()).get("wall_seconds", 0.0)))
    if train_walls and "train" not in per_rule:
        per_rule["train (train_model only)"] = train_walls
        sources["train (train_model only)"] = "metrics.json wall_seconds"
    table = [
        {"rule": r, "jobs": len(v), "sum_s": sum(v), "max_s": max(v), "cpu_s": sum(cpu_rule[r]) if r in cpu_rule else None, "source": sources[r]}
        for r, v in sorted(per_rule.items())
    ]
    return {"wall_s": wall, "cpu_s": cpu, "jobs": jobs, "train_wall_sum_s": sum(train_walls), "jobs_table": table}


if __name__ == "__main__":
    main()
