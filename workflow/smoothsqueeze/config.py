"""Loading, validating and resolving config.yaml.

The Snakefile and the CLI share this module, so `--config` overrides and hand-written
files are checked by the same JSON schema (draft 2020-12) and give the same one-line errors.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from .errors import PipelineError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


class ConfigError(PipelineError):
    """A config value the schema or a cross-check refuses."""


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _with_defaults(validator_class: type) -> type:
    """Extend a validator so that validating also fills in schema defaults."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "$ref" in subschema and "default" not in subschema:
                    subschema = validator._resolver.lookup(subschema["$ref"]).contents
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    path = _key_path(error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return f"config error: {_key_path([*error.absolute_path, missing])} is missing"
    if error.validator == "additionalProperties":
        return f"config error: {path}: unknown key ({error.message})"
    value = error.instance
    if isinstance(value, (dict, list)):
        return f"config error: {path}: {error.message}"
    reason = error.message
    if error.validator == "enum":
        reason = f"must be one of {error.validator_value}"
    elif error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        reason = f"must be {words[str(error.validator)]} {error.validator_value}"
    elif error.validator == "type":
        reason = f"must be of type {error.validator_value}"
    return f"config error: {path} = {value!r}: {reason}"


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check `config` in place (filling defaults) and return it; raise ConfigError with one line."""
    validator_class = _with_defaults(jsonschema.Draft202012Validator)
    validator = validator_class(load_schema())
    errors = list(validator.iter_errors(config))
    if errors:
        # The deepest error names the most specific key (e.g. grid[2].alpha, not grid).
        raise ConfigError(_describe(max(errors, key=lambda e: len(e.absolute_path))))
    _cross_check(config)
    return config


def _cross_check(config: dict[str, Any]) -> None:
    default = config.get("default_study", "digits")
    if default not in config["studies"]:
        raise ConfigError(f"config error: default_study = {default!r}: no such study (have {sorted(config['studies'])})")
    for name, study in config["studies"].items():
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"config error: studies.{name}: study names may hold letters, digits, '-' and '_' only")
        ids = [model_id(entry) for entry in study["grid"]]
        seen: set[str] = set()
        for index, mid in enumerate(ids):
            if mid in seen:
                raise ConfigError(f"config error: studies.{name}.grid[{index}] repeats model {mid!r}")
            seen.add(mid)
        if study["blackbox"]["source"] not in seen:
            raise ConfigError(
                f"config error: studies.{name}.blackbox.source = {study['blackbox']['source']!r}: not a model of the grid (have {ids})"
            )
        for section in ("whitebox",):
            _unique_names(study["attack"][section], f"studies.{name}.attack.{section}")
        _unique_names(study["blackbox"]["attacks"], f"studies.{name}.blackbox.attacks")


def _unique_names(attacks: list[dict[str, Any]], where: str) -> None:
    names = [a["name"] for a in attacks]
    for index, attack_name in enumerate(names):
        if names.index(attack_name) != index:
            raise ConfigError(f"config error: {where}[{index}].name = {attack_name!r}: used twice")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, apply nested `overrides`, validate."""
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config error: {path}: file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config error: {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if overrides:
        config = merge(config, overrides)
    return validate_config(config)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _num(value: float) -> str:
    return format(value, "g")


def model_id(entry: dict[str, Any]) -> str:
    """Directory name of a grid entry, built from its parameters (e.g. 'ls0.95_noise0.3_k3000')."""
    parts = []
    if entry.get("alpha"):
        parts.append(f"ls{_num(entry['alpha'])}")
    if entry.get("beta"):
        parts.append(f"sq{_num(entry['beta'])}")
    if entry.get("sigma"):
        parts.append(f"noise{_num(entry['sigma'])}")
    adv = entry.get("adversarial")
    if adv:
        tag = f"pgd{adv['steps']}-eps{_num(adv['eps'])}-step{_num(adv['step_size'])}"
        parts.append(tag if adv.get("random_start", True) else tag + "-norand")
    return "_".join(parts or ["natural"]) + f"_k{entry['k']}"


def study(config: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in config["studies"]:
        raise ConfigError(f"config error: unknown study {name!r} (have {sorted(config['studies'])})")
    return config["studies"][name]


def model_ids(config: dict[str, Any], study_name: str) -> list[str]:
    return [model_id(entry) for entry in study(config, study_name)["grid"]]


def grid_entry(config: dict[str, Any], study_name: str, mid: str) -> dict[str, Any]:
    for entry in study(config, study_name)["grid"]:
        if model_id(entry) == mid:
            return entry
    raise ConfigError(f"config error: study {study_name!r} has no model {mid!r} (have {model_ids(config, study_name)})")


def resolve_attack(attack: dict[str, Any], eps: float, units: float) -> dict[str, Any]:
    """An attack's settings in [0, 1] pixel units, ready for `attacks.pgd`."""
    return {
        "name": attack["name"],
        "method": attack["method"],
        "loss": attack["loss"],
        "eps": eps / units,
        "steps": 1 if attack["method"] == "fgsm" else attack.get("steps", 1),
        "step_size": eps / units if attack["method"] == "fgsm" else attack.get("step_size", 0) / units,
        "random_start": attack.get("random_start", False),
        "restarts": attack.get("restarts", 1),
    }


def resolve_model(config: dict[str, Any], study_name: str, mid: str) -> dict[str, Any]:
    """Everything that determines one trained model, in [0, 1] pixel units."""
    st = study(config, study_name)
    entry = grid_entry(config, study_name, mid)
    units = st.get("pixel_units", 1)
    adv = entry.get("adversarial")
    return {
        "study": study_name,
        "model_id": mid,
        "dataset": st["dataset"],
        "architecture": st["architecture"],
        "seed": st["seed"],
        "alpha": entry.get("alpha", 0),
        "beta": entry.get("beta", 0),
        "sigma": entry.get("sigma", 0) / units,
        "k": entry["k"],
        "adversarial": None
        if not adv
        else {
            "steps": adv["steps"],
            "step_size": adv["step_size"] / units,
            "eps": adv["eps"] / units,
            "random_start": adv.get("random_start", True),
        },
        "train": copy.deepcopy(st["train"]),
        "config_entry": copy.deepcopy(entry),
        "pixel_units": units,
    }
