"""Command line: `python -m smoothsqueeze <stage> ...`; the Snakemake rules call these.

Errors the user can act on (PipelineError) print as one line and exit 2.
"""
from __future__ import annotations

import argparse
from typing import Callable

from .cli_support import OneLineParser, exit_status, json_object
from .errors import PipelineError

Handler = Callable[[argparse.Namespace], None]

#: Keys each JSON argument must hold (the workflow always passes them; a hand-written one may not).
TRAIN_SETTINGS_KEYS = ("study", "model_id", "architecture", "seed", "alpha", "beta", "sigma", "k", "adversarial", "train")
BLACKBOX_SPEC_KEYS = ("attack", "batch_size", "seed")
EVALUATE_SPEC_KEYS = ("whitebox", "batch_size", "seed")




def _prepare_data(args: argparse.Namespace) -> None:
    from .data import prepare

    prepare(args.dataset, args.out, data_root=args.data_root, download_dir=args.download_dir, verify=not args.no_verify)


def _train(args: argparse.Namespace) -> None:
    from .train import run

    run(args.settings, args.data, args.checkpoint, args.metrics, args.settings_out, device=args.device)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = OneLineParser(prog="smoothsqueeze", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    handlers: dict[str, Handler] = {}

    from .data import DATASETS  # numpy only: torch is imported when a stage runs

    p = sub.add_parser("prepare-data", help="write a dataset's train/test split as one .npz")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--out", required=True)
    p.add_argument("--data-root", default=None, help="folder with torchvision-layout files (no download)")
    p.add_argument("--download-dir", default=None)
    p.add_argument("--no-verify", action="store_true", help="skip MD5 checks")
    handlers["prepare-data"] = _prepare_data

    p = sub.add_parser("train", help="train one grid point")
    p.add_argument("--settings", type=json_object("--settings", TRAIN_SETTINGS_KEYS), required=True, help="resolved model settings (JSON)")
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--settings-out", required=True)
    p.add_argument("--device", default=None)
    handlers["train"] = _train

    p = sub.add_parser("craft-blackbox", help="craft one black-box adversarial test set on the source model")
    p.add_argument("--spec", type=json_object("--spec", BLACKBOX_SPEC_KEYS), required=True, help="attack, batch_size, max_examples, seed, architecture (JSON)")
    p.add_argument("--source", required=True, help="source model checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default=None)
    handlers["craft-blackbox"] = _craft_blackbox

    p = sub.add_parser("evaluate", help="clean, white-box and black-box accuracy of one model")
    p.add_argument("--spec", type=json_object("--spec", EVALUATE_SPEC_KEYS), required=True, help="whitebox attacks, batch_size, max_examples, seed, info (JSON)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--blackbox", nargs="*", default=[], metavar="NAME=PATH", help="stored black-box sets")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default=None)
    handlers["evaluate"] = _evaluate
    return parser, handlers


def _craft_blackbox(args: argparse.Namespace) -> None:
    from .evaluate import craft_blackbox

    s = args.spec
    craft_blackbox(args.source, args.data, s["attack"], args.out, s["batch_size"], s.get("max_examples"), s["seed"], s.get("architecture"), args.device)


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate

    sets = {}
    for item in args.blackbox:
        name, sep, path = item.partition("=")
        if not sep:
            raise PipelineError(f"--blackbox {item!r}: expected NAME=PATH")
        sets[name] = path
    s = args.spec
    evaluate(
        args.checkpoint, args.data, s["whitebox"], sets, args.out, s["batch_size"], s.get("max_examples"), s["seed"],
        s.get("info", {}), s.get("architecture"), args.device,
    )


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    return exit_status(lambda: handlers[args.stage](args))
