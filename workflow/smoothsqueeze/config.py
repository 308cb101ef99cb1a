"""Loading, validating and resolving config.yaml.

The Snakefile and the CLI share this module, so `--config` overrides and hand-written
files are checked by the same JSON schema (draft 2020-12) and give the same one-line errors.
"""
from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from . import study as plan
from .errors import PipelineError
from .study import SCHEMA_FILE

SCHEMA_PATH = SCHEMA_FILE


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


def _describe(error: jsonschema.ValidationError, prefix: str | None = None) -> str:
    parts = [prefix, *error.absolute_path] if prefix else list(error.absolute_path)
    path = _key_path(parts)
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return f"config error: {_key_path([*parts, missing])} is missing"
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
    elif error.validator == "minLength":
        reason = "must not be empty"
    return f"config error: {path} = {value!r}: {reason}"


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check `config` in place (filling defaults) and return it; raise ConfigError with one line.

    Before the schema: strings that Snakemake's `--config` hands over for boolean / number /
    integer keys are converted (`_coerce`), and every number anywhere must be finite
    (`_check_finite`; JSON-schema bounds are false for NaN). After it: cross-checks, folder
    names normalised ('results/' -> 'results') and checked against the file system.
    """
    schema = load_schema()
    if isinstance(config, dict):
        _coerce(config, schema, schema)
    _check_finite(config, [])
    validator_class = _with_defaults(jsonschema.Draft202012Validator)
    validator = validator_class(schema)
    errors = list(validator.iter_errors(config))
    if errors:
        # The deepest error names the most specific key (e.g. grid[2].alpha, not grid).
        raise ConfigError(_describe(max(errors, key=lambda e: len(e.absolute_path))))
    _cross_check(config)
    _check_folders(config)
    return config


_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_NUMBER_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_FOLDER_KEYS = ("results_dir", "reports_dir", "data_dir", "data_root")


def _resolve_ref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            return {}
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema if isinstance(schema, dict) else {}


def _coerce_scalar(value: str, types: list[str]) -> Any:
    """`value` as the boolean / integer / number / null the schema wants, or unchanged.

    Only exact textual forms convert ('false', 'True', '3', '-0.5', '1e-3', 'null'); 'nan', 'inf',
    'yes' or '3 ' stay strings and fail validation with the usual one-line type error.
    """
    text = value
    if "string" in types or text != text.strip():
        return value
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "integer" in types and _INTEGER_TEXT.fullmatch(text):
        return int(text)
    if "number" in types and _NUMBER_TEXT.fullmatch(text):
        return int(text) if _INTEGER_TEXT.fullmatch(text) else float(text)
    if "integer" in types and _NUMBER_TEXT.fullmatch(text) and float(text).is_integer():
        return int(float(text))
    if "null" in types and text.lower() in ("null", "~"):
        return None
    return value


def _coerce(node: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Walk `node` alongside its schema; return it with `--config` strings converted (dicts and lists in place).

    Snakemake's `--config key=false` passes the string 'false', and every value inside a nested
    override (`--config 'studies={digits: {attack: {max_examples: 50}}}'`) arrives as a string.
    Only keys the schema types as boolean / number / integer (or null) are converted; integral
    floats given for an integer key (`k: 5.0`) become ints, so model ids read 'k5', not 'k5.0'.
    """
    schema = _resolve_ref(schema, root)
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if isinstance(node, str):
        return _coerce_scalar(node, types)
    if isinstance(node, float) and "integer" in types and "number" not in types and math.isfinite(node) and node.is_integer():
        return int(node)
    if isinstance(node, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in list(node):
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                node[key] = _coerce(node[key], sub, root)
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(node):
            node[index] = _coerce(item, schema["items"], root)
    return node


def _check_finite(node: Any, path: list[Any]) -> None:
    """Every number in the config is finite (JSON-schema bounds are false for NaN, so the schema cannot say it)."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"config error: {_key_path(path)} = {node!r}: must be a finite number")
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, [*path, key])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_finite(value, [*path, index])


def _check_folders(config: dict[str, Any]) -> None:
    """Folder settings: normalised ('./results/' -> 'results', so targets match), no file where a folder must go.

    Relative paths are checked from the working directory (Snakemake's --directory). A file in the
    way would otherwise surface as a traceback from Snakemake when the first job starts.
    """
    for key in _FOLDER_KEYS:
        value = config.get(key)
        if value is None:
            continue
        config[key] = value = os.path.normpath(value)
        folders = [Path(value)]
        if key in ("results_dir", "reports_dir"):
            folders += [Path(value) / name for name in config["studies"]]
        for path in folders:
            for folder in (path, *path.parents):
                if folder.exists() and not folder.is_dir():
                    raise ConfigError(f"config error: {key} = {value!r}: {str(folder)!r} is a file, not a folder")


def _cross_check(config: dict[str, Any]) -> None:
    default = config.get("default_study", "digits")
    if default not in config["studies"]:
        raise ConfigError(f"config error: default_study = {default!r}: no such study (have {sorted(config['studies'])})")
    for name, study in config["studies"].items():
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"config error: studies.{name}: study names may hold letters, digits, '-' and '_' only")
        for index, entry in enumerate(study["grid"]):
            if entry.get("seed") is not None and entry.get("seeds"):
                raise ConfigError(f"config error: studies.{name}.grid[{index}]: give either seed (one model) or seeds (one model per seed), not both")
            if entry.get("adversarial"):
                _complete_adversarial(entry["adversarial"], f"studies.{name}.grid[{index}].adversarial")
        _check_schedule(study["train"], f"studies.{name}.train")
        seen: set[str] = set()
        ids = []
        for index, entry in enumerate(study["grid"]):
            for _group, expanded in plan.model_entries({**study, "grid": [entry]}):
                mid = model_id(expanded)
                if mid in seen:
                    raise ConfigError(f"config error: studies.{name}.grid[{index}] repeats model {mid!r} (an id can stand for one model only; check its seeds)")
                seen.add(mid)
                ids.append(mid)
        if study["blackbox"]["source"] not in seen:
            raise ConfigError(
                f"config error: studies.{name}.blackbox.source = {study['blackbox']['source']!r}: not a model of the grid (have {ids})"
            )
        for section in ("whitebox",):
            _unique_names(study["attack"][section], f"studies.{name}.attack.{section}")
        _unique_names(study["blackbox"]["attacks"], f"studies.{name}.blackbox.attacks")
        _check_budgets(study, f"studies.{name}")
        if study["train"].get("adversarial_amp") and not study["train"].get("amp"):
            raise ConfigError(f"config error: studies.{name}.train.adversarial_amp = true needs train.amp = true "
                              "(it crafts training-time PGD under the training forward's bf16 autocast)")


def _complete_adversarial(adv: dict[str, Any], where: str) -> None:
    """Check an `adversarial:` block's method-specific keys and fill in the single-step methods' defaults (in place).

    fgsm_rs / nfgsm take one step (`steps` left out or 1, filled in as 1) and default step sizes (1.25 eps, eps);
    noise_factor belongs to nfgsm alone; neither single-step method runs without its random start / noise.
    """
    method = plan.adversarial_method(adv)
    if method != "nfgsm" and "noise_factor" in adv:
        raise ConfigError(f"config error: {where}.noise_factor = {adv['noise_factor']!r}: only method nfgsm has noise (method is {method!r})")
    if method == "pgd":
        return
    if adv.get("steps", 1) != 1:
        raise ConfigError(f"config error: {where}.steps = {adv['steps']!r}: method {method} takes one step (leave steps out)")
    if not adv.get("random_start", True):
        raise ConfigError(f"config error: {where}.random_start = false: method {method} always starts from random noise "
                          "(plain FGSM training is not offered)")
    adv["steps"] = 1
    adv["step_size"] = plan.adversarial_step_size(adv)
    if method == "nfgsm":
        adv["noise_factor"] = plan.noise_factor(adv)


def _check_schedule(train: dict[str, Any], where: str) -> None:
    """lr_schedule cyclic has no milestones: a study that sets both would silently lose one of them."""
    if train.get("lr_schedule") == "cyclic" and train.get("lr_milestones"):
        raise ConfigError(f"config error: {where}.lr_milestones = {train['lr_milestones']!r}: lr_schedule cyclic takes no milestones "
                          "(set lr_milestones: [] or lr_schedule: piecewise)")


def _check_budgets(study: dict[str, Any], where: str) -> None:
    """L-inf budgets fit the pixel range, and a PGD attack moves (its step_size defaults to 0)."""
    units = study.get("pixel_units", 1)
    budgets = [(f"{where}.attack.eps", study["attack"]["eps"])]
    budgets += [(f"{where}.grid[{i}].adversarial.eps", e["adversarial"]["eps"]) for i, e in enumerate(study["grid"]) if e.get("adversarial")]
    for key, eps in budgets:
        if eps > units:
            raise ConfigError(
                f"config error: {key} = {eps!r}: must be <= pixel_units ({units!r}); eps is in units of 1/pixel_units"
            )
    for section, attacks in (("attack.whitebox", study["attack"]["whitebox"]), ("blackbox.attacks", study["blackbox"]["attacks"])):
        for index, attack in enumerate(attacks):
            if attack["method"] == "pgd" and not attack.get("step_size"):
                raise ConfigError(
                    f"config error: {where}.{section}[{index}].step_size = {attack.get('step_size', 0)!r}: "
                    "must be > 0 for method pgd (it defaults to 0)"
                )


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


def model_id(entry: dict[str, Any]) -> str:
    """Directory name of a grid entry (see `study.model_id`)."""
    return plan.model_id(entry)


def study(config: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in config["studies"]:
        raise ConfigError(f"config error: unknown study {name!r} (have {sorted(config['studies'])})")
    return config["studies"][name]


def model_ids(config: dict[str, Any], study_name: str) -> list[str]:
    """Every model of a study, each grid entry once per seed (`study.model_entries`)."""
    return [model_id(entry) for _group, entry in plan.model_entries(study(config, study_name))]


def grid_entry(config: dict[str, Any], study_name: str, mid: str) -> dict[str, Any]:
    """The (seed-expanded) grid entry of model `mid`."""
    for _group, entry in plan.model_entries(study(config, study_name)):
        if model_id(entry) == mid:
            return entry
    raise ConfigError(f"config error: study {study_name!r} has no model {mid!r} (have {model_ids(config, study_name)})")


def resolve_attack(attack: dict[str, Any], eps: float, units: float) -> dict[str, Any]:
    """An attack's settings in [0, 1] pixel units (see `study.resolve_attack`)."""
    return plan.resolve_attack(attack, eps, units)


def resolve_model(config: dict[str, Any], study_name: str, mid: str) -> dict[str, Any]:
    """Everything that determines one trained model, in [0, 1] pixel units (see `study.resolve_model`)."""
    return plan.resolve_model(study(config, study_name), study_name, grid_entry(config, study_name, mid))


def validate_block(block: Any, pointer: str, where: str) -> dict[str, Any]:
    """Check one block of a study (e.g. `audit`) against its part of the schema, filling defaults; one-line errors.

    `pointer` is the block's schema location under the study (e.g. 'audit'), `where` its key path
    for messages (e.g. 'studies.digits.audit').
    """
    schema = load_schema()
    sub = {**schema["$defs"]["study"]["properties"][pointer], "$defs": schema["$defs"]}
    block = copy.deepcopy(block) if block is not None else {}
    _check_finite(block, [where])
    validator = _with_defaults(jsonschema.Draft202012Validator)(sub)
    errors = list(validator.iter_errors(block))
    if errors:
        raise ConfigError(_describe(max(errors, key=lambda e: len(e.absolute_path)), where))
    return block
