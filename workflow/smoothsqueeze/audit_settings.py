"""Settings of the gradient-masking audit: code defaults under each study's `audit:` block.

Kept free of torch, since the Snakefile resolves them when it loads (also in every cluster job).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import jsonschema

from .config import merge
from .errors import PipelineError

AA_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
#: AutoAttack attack name -> accuracy key in the record.
AA_KEYS = {"apgd-ce": "apgd_ce", "apgd-t": "apgd_t", "fab-t": "fab_t", "square": "square"}

#: Code defaults: sized so the digits demo (8 models, 360 images) audits in about 2-3 min
#: on 2 CPU cores. Studies that report numbers set AutoAttack's standard budgets (see README).
DEFAULTS: dict[str, Any] = {
    "n_examples": None,  # first N test images; null = the study's attack.max_examples (all if null)
    "batch_size": None,  # null = the study's attack.batch_size
    "seed": None,  # null = the study's seed
    "autoattack": {
        "attacks": list(AA_ATTACKS),
        "apgd_iter": 50,  # standard: 100
        "apgd_t_targets": 3,  # standard: 9
        "fab_iter": 30,  # standard: 100
        "fab_targets": 3,  # standard: 9
        "square_queries": 1000,  # standard: 5000
    },
    "pgd": {"steps": 100, "restarts": 2, "losses": ["xent", "cw"], "step_factor": 2.5},
    "sweep_steps": [10, 40, 100],  # single-restart PGD x-ent, step size step_factor * eps / steps
    "large_eps": None,  # in the study's pixel_units; null = half the pixel range (0.5 in [0, 1])
    "large_eps_steps": 50,
    "large_eps_max_accuracy": 5.0,  # flag (c) above this accuracy (%)
    "noise_z": 2.0,  # standard errors a difference must exceed to count
    "xent_gap_pp": 10.0,  # flag (e): x-ent attacks trail margin attacks by more points than this
    "overstated_pp": 10.0,  # flag (f): strongest below claimed by at least these points ...
    "overstated_fraction": 0.5,  # ... and by at least this fraction of the claim
}

_POS_INT = {"type": "integer", "minimum": 1}
SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "n_examples": {"type": ["integer", "null"], "minimum": 1},
        "batch_size": {"type": ["integer", "null"], "minimum": 1},
        "seed": {"type": ["integer", "null"], "minimum": 0},
        "autoattack": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "attacks": {"type": "array", "items": {"enum": list(AA_ATTACKS)}, "uniqueItems": True},
                "apgd_iter": _POS_INT,
                "apgd_t_targets": {"type": "integer", "minimum": 1, "maximum": 9},
                "fab_iter": _POS_INT,
                "fab_targets": {"type": "integer", "minimum": 1, "maximum": 9},
                "square_queries": _POS_INT,
            },
        },
        "pgd": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "steps": _POS_INT,
                "restarts": _POS_INT,
                "losses": {"type": "array", "items": {"enum": ["xent", "cw"]}, "uniqueItems": True},
                "step_factor": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "sweep_steps": {"type": "array", "items": _POS_INT, "uniqueItems": True},
        "large_eps": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "large_eps_steps": _POS_INT,
        "large_eps_max_accuracy": {"type": "number", "minimum": 0, "maximum": 100},
        "noise_z": {"type": "number", "minimum": 0},
        "xent_gap_pp": {"type": "number", "minimum": 0},
        "overstated_pp": {"type": "number", "minimum": 0},
        "overstated_fraction": {"type": "number", "minimum": 0, "maximum": 1},
    },
}


def resolve_settings(study: Mapping[str, Any], study_name: str) -> dict[str, Any]:
    """The study's `audit:` block over DEFAULTS, checked, with eps values in [0, 1] units."""
    given = study.get("audit") or {}
    errors = list(jsonschema.Draft202012Validator(SETTINGS_SCHEMA).iter_errors(given))
    if errors:
        err = max(errors, key=lambda e: len(e.absolute_path))
        where = ".".join(str(p) for p in err.absolute_path)
        raise PipelineError(f"config error: studies.{study_name}.audit{'.' + where if where else ''}: {err.message}")
    s = merge(DEFAULTS, copy.deepcopy(dict(given)))
    units = float(study.get("pixel_units", 1))
    attack = study["attack"]
    s["eps"] = attack["eps"] / units
    s["large_eps"] = (s["large_eps"] if s["large_eps"] is not None else 0.5 * units) / units
    s["batch_size"] = s["batch_size"] or attack.get("batch_size", 500)
    s["n_examples"] = s["n_examples"] or attack.get("max_examples")
    s["seed"] = study["seed"] if s["seed"] is None else s["seed"]
    s["pixel_units"] = units
    return s
