"""Projected device-hours of a study on this machine's device, before launching it.

Times a few steps of every kind of job the study's grid holds (smoothsqueeze.projection) and
scales them by the grid's iteration and attack counts. Writes a CSV (one row per model, one per
black-box set, a TOTAL row; seconds per stage, device-hours, Slurm runtimes with a margin), the
summary line beside it (<out stem>.txt) and prints both.

    python benchmarks/project_cost.py --study mnist --steps 3 --out projection.csv
    python benchmarks/project_cost.py --study mnist cifar10 --out 'projection-{study}.csv' --json timings.json
    python benchmarks/project_cost.py --study digits --device cpu --out p.csv
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:  # an installed (or editable) package wins; a fresh clone imports it from workflow/
    import smoothsqueeze  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "workflow"))

from smoothsqueeze import projection  # noqa: E402
from smoothsqueeze.cli_support import exit_status  # noqa: E402
from smoothsqueeze.config import load_config  # noqa: E402
from smoothsqueeze.errors import PipelineError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--study", nargs="+", required=True, help="studies of the config to project")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"), help="config file (validated like the workflow's)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per kind of job")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training iterations before the timed ones")
    parser.add_argument("--attack-batch", type=int, default=None, help="images per timed attack batch (default: the study's on a GPU, <= 64 on a CPU)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: a free GPU when present, else the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=sorted(projection.CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (CPU device only; with --threads 1, core-seconds not inflated by other load)")
    parser.add_argument("--out", required=True, help="CSV path; with several studies it must hold '{study}'")
    parser.add_argument("--json", default=None, help="also write timings, rows and lines of every study to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def action() -> None:
        if args.steps < 1 or args.warmup < 1:
            raise PipelineError(f"--steps {args.steps} --warmup {args.warmup}: both must be >= 1")
        if len(args.study) > 1 and "{study}" not in args.out:
            raise PipelineError(f"--out {args.out!r}: with several studies it must hold '{{study}}'")
        import torch

        from smoothsqueeze.device import pick_device

        if args.threads:
            torch.set_num_threads(args.threads)
        config = load_config(args.config)
        for name in args.study:
            projection.study_config(config, name)  # unknown study: one line before anything is timed
        device = pick_device(args.device)
        print(f"# projecting {', '.join(args.study)} on {projection.device_name(device)} ({device}), {args.steps} timed steps per kind, {args.clock} clock", flush=True)
        report: dict[str, object] = {}
        for name in args.study:
            timings = projection.measure(config, name, device, steps=args.steps, warmup=args.warmup, attack_batch=args.attack_batch, clock=args.clock)
            rows = projection.project(config, name, timings)
            out = Path(args.out.replace("{study}", name))
            line = projection.summary_line(rows, timings)
            text = projection.write_projection(rows, out, timings, line)
            biggest = sorted((r for r in rows if r["kind"] not in ("", projection.CRAFT)), key=lambda r: -r["total_s"])[:5]
            for row in biggest:
                print(f"  {row['model']:40s} {row['kind']:12s} k={row['k']:<8} {row['device_hours']:8.2f} h "
                      f"(train {row['train_s'] / 3600:.2f} h, audit <= {row['audit_s'] / 3600:.2f} h)")
            print(line, flush=True)
            print(f"wrote {out} and {text}")
            report[name] = {"timings": projection.timings_dict(timings), "rows": rows, "line": line, "csv": str(out)}
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.json}")

    return exit_status(action)


if __name__ == "__main__":
    sys.exit(main())
