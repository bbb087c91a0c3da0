"""Run configuration and benchmark specs: JSON-Schema validation (draft 2020-12) with defaults.

Errors name the offending key path (for example ``config key 'seeds[1]'``) and are raised before any
job runs: the Snakefile calls :func:`load_run` at parse time.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from plotlib.methods import METHODS, REFINE_GRIDS, missing_parents
from plotlib.methods import get as get_method


class ConfigError(ValueError):
    """Invalid configuration; the message names the key."""


def _with_defaults(cls):
    """A validator class that also fills in ``default`` values of object properties."""
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(Draft202012Validator)


def _key_path(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def validate(instance: dict, schema: dict, what: str) -> dict:
    """Fill defaults into a copy of ``instance`` and validate it; raise :class:`ConfigError` naming the key."""
    instance = copy.deepcopy(instance)
    errors = sorted(_Validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            key = _key_path(err.absolute_path)
            if err.validator == "additionalProperties":
                extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
                key = ", ".join(_key_path([*err.absolute_path, e]) for e in extra)
                lines.append(f"{what} key {key!r} is not allowed (unknown key)")
            else:
                lines.append(f"{what} key {key!r}: {err.message}")
        raise ConfigError("invalid " + what + ":\n  " + "\n  ".join(lines))
    return instance


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"file not found: {path}")
    return yaml.safe_load(path.read_text()) or {}


def load_spec(spec_path: str | Path, seen: tuple[Path, ...] = ()) -> dict:
    """A benchmark spec as written; a spec with ``base: <name>`` is that sibling spec (itself resolved
    the same way) with this one's keys merged over it, so variants (e.g. depths) restate only what differs."""
    path = Path(spec_path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a benchmark spec must be a mapping")
    if "base" not in raw:
        return raw
    parent = path.with_name(f"{raw.pop('base')}.yaml")
    if parent.resolve() in seen or parent.resolve() == path.resolve():
        raise ConfigError(f"benchmark spec {path.name} key 'base': circular inheritance through {parent.name}")
    if not parent.exists():
        raise ConfigError(f"benchmark spec {path.name} key 'base': no spec {parent.name} beside it")
    return deep_merge(load_spec(parent, (*seen, path.resolve())), raw)


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def select_methods(spec: dict, wanted: list[str] | None, name: str) -> dict:
    """The spec with ``methods`` narrowed to ``wanted`` (the run config's list; None keeps all), after
    checking that every method has what it builds on."""
    methods = [m for m in spec["methods"] if wanted is None or m in wanted]
    if not methods:
        raise ConfigError(f"config key 'methods': none of {wanted} is a method of benchmark {name} ({spec['methods']})")
    for method, parent in missing_parents(methods):
        raise ConfigError(f"config key 'methods' (benchmark {name}): {method} needs {parent}, which is not selected")
    if any(get_method(m).grid in REFINE_GRIDS for m in methods) and "refine" not in spec:
        raise ConfigError(f"benchmark spec {name} key 'refine': required by the Stage B methods in {methods}")
    return {**spec, "methods": methods}


def resolve_benchmark(spec_path: str | Path, scale: str, schema: dict, methods: list[str] | None = None) -> dict:
    """A benchmark spec with its ``scales[scale]`` overrides merged in, validated, defaults filled, and
    its methods narrowed to ``methods`` (None keeps the spec's own list)."""
    raw = load_spec(spec_path)
    scales = raw.pop("scales", {}) or {}
    if scale != "default":
        if scale not in scales:
            raise ConfigError(f"config key 'scale': {scale!r} is not a scale of {spec_path} (has: default, {', '.join(sorted(scales))})")
        raw = deep_merge(raw, scales[scale])
    # the method names come from the method table, so a method is added in one place
    schema = {**schema, "$defs": {**schema["$defs"], "method": {"enum": list(METHODS)}}}
    spec = validate(raw, schema, f"benchmark spec {Path(spec_path).name}")
    training = spec["training"]
    if training["warmup_steps"] >= training["steps"]:
        raise ConfigError(f"benchmark spec {Path(spec_path).name} key 'training.warmup_steps': {training['warmup_steps']} "
                          f"must be below training.steps ({training['steps']})")
    checkpoint = spec["backbone"].get("checkpoint")
    if checkpoint and not Path(checkpoint).exists():
        raise ConfigError(f"benchmark spec {Path(spec_path).name} key 'backbone.checkpoint': file not found: {checkpoint}")
    pretrained = spec["backbone"].get("pretrained")
    if spec["backbone"].get("kind") == "pretrained" and not pretrained:
        raise ConfigError(f"benchmark spec {Path(spec_path).name} key 'backbone.pretrained': required when backbone.kind is pretrained")
    if pretrained and pretrained.startswith((".", "/", "~")) and not Path(pretrained).expanduser().exists():
        raise ConfigError(f"benchmark spec {Path(spec_path).name} key 'backbone.pretrained': no such directory: {pretrained}")
    return select_methods(spec, methods, Path(spec_path).stem)


@dataclass(frozen=True)
class Run:
    """A validated run: the config with defaults, and each benchmark's resolved spec."""

    config: dict
    benchmarks: dict[str, dict]


def _typed_cli_lists(config: dict) -> dict:
    """Snakemake parses ``--config seeds=[0,1]`` with YAML's BaseLoader, so list items arrive as
    strings ('0'); read each such item as a YAML scalar so the schema sees the types a user wrote."""
    def scalar(v):
        return yaml.safe_load(v) if isinstance(v, str) and v.strip() else v

    return {k: [scalar(i) for i in v] if isinstance(v, list) else v for k, v in config.items()}


def load_run(config: dict, schema_dir: str | Path, benchmarks_dir: str | Path) -> Run:
    """Validate the run config and every benchmark spec it names."""
    schema_dir, benchmarks_dir = Path(schema_dir), Path(benchmarks_dir)
    config = validate(_typed_cli_lists(config), load_yaml(schema_dir / "config.schema.yaml"), "config")
    bench_schema = load_yaml(schema_dir / "benchmark.schema.yaml")
    specs = {}
    for i, name in enumerate(config["benchmarks"]):
        path = benchmarks_dir / f"{name}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in benchmarks_dir.glob("*.yaml"))
            raise ConfigError(f"config key 'benchmarks[{i}]': unknown benchmark {name!r}; known: {known}")
        specs[name] = resolve_benchmark(path, config["scale"], bench_schema, config["methods"])
    return Run(config, specs)
