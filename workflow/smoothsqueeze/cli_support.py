"""What every stage's command line shares: JSON spec arguments and one-line error exits."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from .errors import PipelineError


def json_object(option: str, required: tuple[str, ...] = ()) -> Callable[[str], dict[str, Any]]:
    """An argparse `type=` that parses a JSON object holding the `required` keys."""

    def parse(text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"{option} is not valid JSON: {err}") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{option} must be a JSON object")
        missing = [key for key in required if key not in value]
        if missing:
            raise argparse.ArgumentTypeError(f"{option} lacks {missing}")
        return value

    return parse


def exit_status(action: Callable[[], object]) -> int:
    """Run a stage: a PipelineError prints as one line `error: ...` (exit 2), Ctrl-C as one line (130)."""
    try:
        action()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; rerun the workflow to resume", file=sys.stderr)
        return 130
    return 0
