"""A user's own tasks and specs, outside the checkout: spec paths, imported modules that register
tasks, errors that name the spec key before any job runs, constructed backbones, the accuracy floor
on every path, and sections a spec does not use."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from plotlib.config import ConfigError, load_run, load_yaml, resolve_benchmark
from plotlib.io import read_json, write_json
from workflow_runs import ROOT, snakemake

SCHEMAS = ROOT / "workflow" / "schemas"
BENCHMARKS = ROOT / "benchmarks"
USER_MODULE = textwrap.dedent('''
    """A user's task: hierarchical equality under another name, from a module plotlib never imports itself."""
    from plotlib.tasks import register_task
    from plotlib.tasks.hierarchical_equality import HierarchicalEquality


    @register_task("user_equality")
    class UserEquality(HierarchicalEquality):
        pass


    class NotATask:
        pass
''')


def _user_spec(folder: Path, **changes) -> Path:
    """A copy of the hierarchical equality spec in ``folder`` whose task lives in a module beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "user_tasks_mod.py").write_text(USER_MODULE)
    spec = {**load_yaml(BENCHMARKS / "hierarchical_equality.yaml"), "task": "user_equality", "imports": ["user_tasks_mod.py"], **changes}
    path = folder / "my_equality.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_benchmark_may_be_a_spec_file_anywhere(tmp_path):
    path = tmp_path / "elsewhere" / "my_bench.yaml"
    path.parent.mkdir()
    shutil.copy(BENCHMARKS / "hierarchical_equality.yaml", path)
    run = load_run({"benchmarks": [str(path), "binary_addition"]}, SCHEMAS, BENCHMARKS)
    assert list(run.benchmarks) == ["my_bench", "binary_addition"] and run.spec_files["my_bench"] == path
    with pytest.raises(ConfigError, match=r"'benchmarks\[0\]': spec file not found"):
        load_run({"benchmarks": [str(tmp_path / "missing.yaml")]}, SCHEMAS, BENCHMARKS)
    twin = tmp_path / "other" / "my_bench.yaml"
    shutil.copytree(path.parent, twin.parent)
    with pytest.raises(ConfigError, match=r"'benchmarks\[1\]': a second benchmark named 'my_bench'"):
        load_run({"benchmarks": [str(path), str(twin)]}, SCHEMAS, BENCHMARKS)


def test_an_imported_user_module_registers_its_task_for_the_dag_and_every_job(tmp_path):
    path = _user_spec(tmp_path / "mine")
    run = load_run({"benchmarks": [str(path)]}, SCHEMAS, BENCHMARKS)
    imports = run.benchmarks["my_equality"]["imports"]
    assert imports == [str((tmp_path / "mine" / "user_tasks_mod.py").resolve())]
    # a job is a fresh process that knows only the resolved spec: no PYTHONPATH, another working directory
    code = f"from plotlib.tasks import make_task; print(type(make_task('user_equality', {{}}, 0, None, {imports!r})).__name__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, capture_output=True, text=True)
    assert done.stdout.strip() == "UserEquality", done.stderr
    # the config's imports work the same way, for every benchmark
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({**load_yaml(path), "imports": []}))
    run = load_run({"benchmarks": [str(plain)], "imports": [str(tmp_path / "mine" / "user_tasks_mod.py")]}, SCHEMAS, BENCHMARKS)
    assert run.benchmarks["plain"]["task"] == "user_equality"


@pytest.mark.parametrize("task, imports, key, message", [
    ("no_such_task", [], "task", "unknown task 'no_such_task'"),
    ("user_tasks_mod:Missing", [], "task", "has no class 'Missing'"),
    ("user_tasks_mod:NotATask", [], "task", "not a plotlib.tasks.Task subclass"),
    ("no_such_module:Task", [], "task", "cannot import 'no_such_module'"),
    ("user_equality", ["absent_file.py"], "imports", "no such file"),
])
def test_a_wrong_task_or_import_is_named_before_any_job(tmp_path, task, imports, key, message):
    path = _user_spec(tmp_path, task=task, imports=imports or ["user_tasks_mod.py"])
    with pytest.raises(ConfigError, match=rf"my_equality.yaml key '{key}': .*{message}"):
        resolve_benchmark(path, "default", load_yaml(SCHEMAS / "benchmark.schema.yaml"))
    if key == "task":  # the workflow stops at parse time with the same message, and runs nothing
        done = snakemake(tmp_path, "--dry-run", config={"benchmarks": [str(path)]})
        output = done.stdout + done.stderr
        assert done.returncode != 0 and f"key '{key}'" in output and "Job stats" not in output, output[-2000:]


def test_a_constructed_backbone_is_built_for_its_seed_and_judged_by_the_floor(tmp_path):
    """backbone.kind constructed: the task builds the network, nothing trains it, and min_accuracy still
    applies (here an untrained MLP, at chance, is excluded with its reason)."""
    from plotlib import pipeline

    path = _user_spec(tmp_path, backbone={"kind": "constructed", "hidden": [8]}, training={"eval_size": 500, "below_floor": "exclude"})
    spec = resolve_benchmark(path, "default", load_yaml(SCHEMAS / "benchmark.schema.yaml"))
    assert spec["training"]["min_accuracy"] == 0.99  # the floor's default, with no training section to write
    write_json({"name": "my_equality", "scale": "default", "spec": spec}, tmp_path / "spec.json")
    run = pipeline.Run(str(tmp_path / "spec.json"), 0, str(tmp_path / "run"))
    pipeline.stage_train(run)
    metrics = read_json(run.paths.train_metrics)
    assert metrics["steps"] == 0 and metrics["factual_accuracy"] < 0.9
    assert "below training.min_accuracy 0.99 as built (constructed for seed 0)" in metrics["excluded"]


def test_sections_a_spec_does_not_use_are_not_required(tmp_path):
    spec = load_yaml(BENCHMARKS / "hierarchical_equality.yaml")
    for section in ("training", "das", "scales"):
        spec.pop(section)
    path = tmp_path / "handles_only.yaml"
    path.write_text(yaml.safe_dump({**spec, "methods": ["PLOT", "brute-force"]}))
    schema = load_yaml(SCHEMAS / "benchmark.schema.yaml")
    assert resolve_benchmark(path, "default", schema)["methods"] == ["PLOT", "brute-force"]
    path.write_text(yaml.safe_dump({**spec, "methods": ["PLOT", "Full DAS"]}))
    with pytest.raises(ConfigError, match="handles_only key 'das': required by Full DAS"):
        resolve_benchmark(path, "default", schema)


def test_malformed_or_empty_spec_files_are_named(tmp_path):
    schema = load_yaml(SCHEMAS / "benchmark.schema.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("task: hierarchical_equality\nbanks: {fit: 10\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML") as err:
        resolve_benchmark(bad, "default", schema)
    assert len(str(err.value).splitlines()) < 10
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"empty\.yaml: a benchmark spec must be a mapping .* this file is empty"):
        resolve_benchmark(empty, "default", schema)


@pytest.mark.parametrize("section, key, value, message", [
    ("refine", "native_groups", [128, 8], r"'refine\.native_groups': \[128\] exceed the narrowest coarse location \(emb@last, 64 wide\)"),
    ("refine", "pca_prefixes", [65], r"'refine\.pca_prefixes': \[65\]"),
    ("das", "dims", [1, 512], r"'das\.dims': \[512\] exceed the widest coarse location \(emb@choices, 256 wide\)"),
])
def test_stage_b_and_das_sizes_larger_than_the_sites_are_rejected_before_any_job(section, key, value, message):
    from plotlib.pipeline import check_site_sizes

    spec = resolve_benchmark(BENCHMARKS / "mcqa.yaml", "default", load_yaml(SCHEMAS / "benchmark.schema.yaml"))
    check_site_sizes(spec, "mcqa.yaml")  # the shipped spec fits (das.dims 256 is the choices span's width)
    spec[section][key] = value
    with pytest.raises(ConfigError, match=r"benchmark spec mcqa\.yaml key " + message):
        check_site_sizes(spec, "mcqa.yaml")


def test_the_floor_also_judges_chance_and_a_zero_floor_judges_nothing():
    from plotlib.training import accuracy_floor_failure

    at_chance = {"factual_accuracy": 0.52, "chance": 0.52, "steps": 100}
    assert "no better than chance (0.5200" in accuracy_floor_failure(at_chance, 0.3)
    assert "below training.min_accuracy 0.99 after 100" in accuracy_floor_failure(at_chance, 0.99)
    assert accuracy_floor_failure(at_chance, 0.0) is None
    assert accuracy_floor_failure({**at_chance, "factual_accuracy": 0.9}, 0.8) is None
