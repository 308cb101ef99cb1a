"""Settings of the gradient-masking audit: the study's `audit:` block, typed with its defaults in
the config schema (resources/config.schema.yaml), resolved by the plan (`study.audit_settings`).

Kept free of torch. The Snakefile never calls this module: config validation fills the block in.
It serves code and tests that start from a bare study mapping.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from .. import config as _config
from ..study import AA_ATTACKS, AA_KEYS, audit_settings

#: The schema's defaults of the `audit:` block (an empty block, validated).
DEFAULTS: dict[str, Any] = _config.validate_block({}, "audit", "audit")
#: The `audit:` block's part of the config schema.
SETTINGS_SCHEMA: dict[str, Any] = _config.load_schema()["$defs"]["study"]["properties"]["audit"]

__all__ = ["AA_ATTACKS", "AA_KEYS", "DEFAULTS", "SETTINGS_SCHEMA", "resolve_settings"]


def resolve_settings(study: Mapping[str, Any], study_name: str) -> dict[str, Any]:
    """The study's `audit:` block checked against the schema (defaults filled), with eps values in [0, 1] units."""
    block = _config.validate_block(study.get("audit"), "audit", f"studies.{study_name}.audit")
    return audit_settings({**copy.deepcopy(dict(study)), "audit": block})
