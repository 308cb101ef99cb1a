"""User-facing errors: the CLI prints them as one line and exits non-zero."""
from __future__ import annotations


class PipelineError(Exception):
    """An error caused by input the user controls (config, files); printed as one line."""
