"""What every stage's command line shares: JSON spec arguments and one-line error exits."""
from __future__ import annotations

import argparse
import errno
import json
import sys
from typing import Any, Callable, NoReturn

from .errors import PipelineError


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, `error: <prog>: <message>` (exit 2).

    argparse's own prints the usage first; a wrong stage name, a missing option or a --spec that
    is not a JSON object then reads as the one line every other input error gives. Sub-parsers
    (`add_subparsers`) inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


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
    """Run a stage: a PipelineError prints as one line `error: ...` (a config error as the workflow prints it,
    `config error: ...`; exit 2), Ctrl-C as one line (130)."""
    try:
        action()
    except PipelineError as err:
        text = str(err)
        print(text if text.startswith("config error: ") else f"error: {text}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; rerun the workflow to resume", file=sys.stderr)
        return 130
    return 0


def os_error_line(err: OSError) -> str:
    """A file-system error as `<path>: <what is wrong>`: a file where a folder must go, a full disk, ..."""
    path = err.filename2 if getattr(err, "filename2", None) is not None else err.filename
    if path is None:
        return str(err)
    reasons = {
        errno.EEXIST: "a file is in the way of a folder this stage must create",
        errno.ENOTDIR: "a part of this path is a file, not a folder",
        errno.EISDIR: "is a folder, not a file",
    }
    return f"{path}: {reasons.get(err.errno, err.strerror or type(err).__name__)}"
