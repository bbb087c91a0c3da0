"""Run configuration and benchmark specs: JSON-Schema validation (draft 2020-12) with defaults.

Errors name the offending key path (for example ``config key 'seeds[1]'``) and are raised before any
job runs: the Snakefile calls :func:`load_run` at parse time.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from plotlib.methods import METHODS, REFINE_GRIDS, missing_parents
from plotlib.methods import get as get_method
from plotlib.tasks import task_class

#: Benchmark names (spec file names) are path parts and workflow wildcards.
NAME_PATTERN = r"[A-Za-z0-9_-]+"


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
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_spec(spec_path: str | Path, seen: tuple[Path, ...] = ()) -> dict:
    """A benchmark spec as written; a spec with ``base: <name>`` is that sibling spec (itself resolved
    the same way) with this one's keys merged over it, so variants (e.g. depths) restate only what differs."""
    path = Path(spec_path)
    raw = load_yaml(path)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: a benchmark spec must be a mapping of keys (task, backbone, banks, ...); "
                          f"this file is {'empty' if not raw else type(raw).__name__}")
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
    needs = {"plot": [m for m in methods if get_method(m).kind == "handle" or get_method(m).where == "guide"],
             "refine": [m for m in methods if get_method(m).grid in REFINE_GRIDS or get_method(m).parent in REFINE_GRIDS.values()],
             "das": [m for m in methods if get_method(m).kind == "das"]}
    for section, users in needs.items():
        if users and section not in spec:
            raise ConfigError(f"benchmark spec {name} key {section!r}: required by {', '.join(users)}")
    return {**spec, "methods": methods}


def _resolve_imports(entries: list[str], relative_to: Path) -> list[str]:
    """``imports`` entries with ``.py`` paths made absolute (relative ones are read from ``relative_to``)."""
    return [str((relative_to / Path(e).expanduser()).resolve()) if e.endswith(".py") else e for e in entries]


def resolve_benchmark(spec_path: str | Path, scale: str, schema: dict, methods: list[str] | None = None,
                      imports: list[str] = ()) -> dict:
    """A benchmark spec with its ``scales[scale]`` overrides merged in, validated, defaults filled, and
    its methods narrowed to ``methods`` (None keeps the spec's own list). ``imports`` (the run config's,
    already absolute) come before the spec's own; its task is looked up now, so a wrong ``task`` or
    ``imports`` stops the run before any job."""
    raw = load_spec(spec_path)
    scales = raw.pop("scales", {}) or {}
    if scale != "default":
        if scale not in scales:
            raise ConfigError(f"config key 'scale': {scale!r} is not a scale of {spec_path} (has: default, {', '.join(sorted(scales))})")
        raw = deep_merge(raw, scales[scale])
    # the method names come from the method table, so a method is added in one place
    schema = {**schema, "$defs": {**schema["$defs"], "method": {"enum": list(METHODS)}}}
    spec = validate(raw, schema, f"benchmark spec {Path(spec_path).name}")
    spec["imports"] = list(dict.fromkeys([*imports, *_resolve_imports(spec["imports"], Path(spec_path).parent)]))
    try:
        task_class(spec["task"], spec["imports"])
    except ImportError as err:
        raise ConfigError(f"benchmark spec {Path(spec_path).name} key 'imports': {err}") from err
    except ValueError as err:
        raise ConfigError(f"benchmark spec {Path(spec_path).name} key 'task': {err}") from err
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
    """A validated run: the config with defaults, each benchmark's resolved spec, its spec file, and the
    config's imports (absolute)."""

    config: dict
    benchmarks: dict[str, dict]
    spec_files: dict[str, Path]
    imports: list[str]


def _typed_cli_lists(config: dict) -> dict:
    """Snakemake parses ``--config seeds=[0,1]`` with YAML's BaseLoader, so list items arrive as
    strings ('0'); read each such item as a YAML scalar so the schema sees the types a user wrote."""
    def scalar(v):
        return yaml.safe_load(v) if isinstance(v, str) and v.strip() else v

    return {k: [scalar(i) for i in v] if isinstance(v, list) else v for k, v in config.items()}


def spec_file(entry: str, index: int, benchmarks_dir: Path) -> Path:
    """The spec file of a config ``benchmarks`` entry: a built-in name (``benchmarks/<name>.yaml``), or
    the path of a spec file anywhere (``.yaml``/``.yml``, relative to the working directory)."""
    if entry.endswith((".yaml", ".yml")) or "/" in entry:
        path = Path(entry).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"config key 'benchmarks[{index}]': spec file not found: {path}")
        if not re.fullmatch(NAME_PATTERN, path.stem):
            raise ConfigError(f"config key 'benchmarks[{index}]': the spec's file name {path.stem!r} is the benchmark's "
                              f"name and must match {NAME_PATTERN} (letters, digits, _ and -)")
        return path
    path = benchmarks_dir / f"{entry}.yaml"
    if not re.fullmatch(NAME_PATTERN, entry) or not path.exists():
        known = sorted(p.stem for p in benchmarks_dir.glob("*.yaml"))
        raise ConfigError(f"config key 'benchmarks[{index}]': unknown benchmark {entry!r}; built in: {known}, "
                          f"or give the path of a spec file")
    return path


def load_run(config: dict, schema_dir: str | Path, benchmarks_dir: str | Path) -> Run:
    """Validate the run config and every benchmark spec it names; a benchmark is named by its spec's file name."""
    schema_dir, benchmarks_dir = Path(schema_dir), Path(benchmarks_dir)
    config_schema = load_yaml(schema_dir / "config.schema.yaml")
    methods_enum = {"type": ["array", "null"], "minItems": 1, "uniqueItems": True, "items": {"enum": list(METHODS)}}
    config_schema["properties"]["methods"] = {**config_schema["properties"]["methods"], **methods_enum}
    config = validate(_typed_cli_lists(config), config_schema, "config")
    imports = _resolve_imports(config["imports"], Path.cwd())
    bench_schema = load_yaml(schema_dir / "benchmark.schema.yaml")
    specs, files = {}, {}
    for i, entry in enumerate(config["benchmarks"]):
        path = spec_file(entry, i, benchmarks_dir)
        if path.stem in specs:
            raise ConfigError(f"config key 'benchmarks[{i}]': a second benchmark named {path.stem!r} (names are spec file names)")
        specs[path.stem] = resolve_benchmark(path, config["scale"], bench_schema, config["methods"], imports)
        files[path.stem] = path
    return Run(config, specs, files, imports)
