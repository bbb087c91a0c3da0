"""Real Snakemake runs of a tiny config in temp dirs: outputs, schemas, figures, determinism, bad input."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from plotlib.backbones import load_backbone
from plotlib.config import ConfigError, load_yaml, resolve_benchmark
from workflow_runs import ROOT, snakemake, tiny_run

METHODS = ["PLOT", "PLOT-UOT", "cosine", "brute-force", "Full DAS", "PLOT-DAS"]


def test_summary_has_every_method_and_column(tiny_results):
    summary = pd.read_csv(tiny_results / "summary.csv")
    for col in ("benchmark", "method", "iia", "seconds", "speedup_vs_full_das", "delta_iia_vs_full_das"):
        assert col in summary.columns
    assert sorted(summary.method) == sorted(METHODS)
    assert summary.iia.between(0, 1).all() and (summary.seconds > 0).all()
    full = summary.set_index("method").loc["Full DAS"]
    assert full.speedup_vs_full_das == pytest.approx(1.0) and full.delta_iia_vs_full_das == pytest.approx(0.0)
    plot = summary.set_index("method").loc["PLOT"]
    assert plot.speedup_vs_full_das == pytest.approx(full.seconds / plot.seconds)


def test_long_tables_have_their_schemas(tiny_results):
    acc = pd.read_parquet(tiny_results / "accuracy.parquet")
    assert {"benchmark", "seed", "method", "variable", "split", "metric", "value", "n"} <= set(acc.columns)
    test = acc[acc.split == "test"]
    # every method reports sensitive, invariant and combined IIA for both variables
    assert len(test) == len(METHODS) * 2 * 3
    assert set(test.metric) == {"sensitive", "invariant", "combined"}
    assert (test[test.metric == "combined"].n == 120).all()
    runtime = pd.read_parquet(tiny_results / "runtime.parquet")
    assert list(runtime.columns) == ["benchmark", "seed", "method", "stage", "seconds_wall", "seconds_cpu"]
    assert {"shared", "signatures", "PLOT", "Full DAS", "PLOT-DAS"} <= set(runtime.method)
    assert set(runtime[runtime.method == "Full DAS"].stage) >= {"das_h1", "das_h2", "das_h3", "select_test"}
    # each timed piece of work is one row: nothing is charged twice
    assert not runtime.duplicated(["benchmark", "seed", "method", "stage"]).any()
    brute = acc[(acc.method == "brute-force") & (acc.split == "test")]
    assert all('"gain": 1.0' in hp and '"k": 1' in hp for hp in brute.hyperparameters)


def test_figures_and_report(tiny_results):
    figures = sorted((tiny_results / "figures").glob("*.png"))
    names = [f.name for f in figures]
    assert "hierarchical_equality_runtime_vs_iia.png" in names
    assert any("coupling_plot_seed0" in n for n in names)
    for fig in figures:
        assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 5000
    report = (tiny_results / "report.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in report
    # every heavy rule left a Snakemake benchmark record beside the in-job runtime rows
    assert (tiny_results / "hierarchical_equality/seed0/benchmarks/full_das_h1.tsv").exists()


def test_same_config_gives_same_tables(tiny_results, tmp_path):
    again = tiny_run(tmp_path / "run_b")
    keys = ["method", "variable", "split", "metric"]
    a = pd.read_parquet(tiny_results / "accuracy.parquet").sort_values(keys).reset_index(drop=True)
    b = pd.read_parquet(again / "accuracy.parquet").sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    for name in ("plot.json", "plot_uot.json"):
        assert (tiny_results / "hierarchical_equality/seed0/handles" / name).read_text() == \
               (again / "hierarchical_equality/seed0/handles" / name).read_text()


@pytest.mark.parametrize("config,named", [
    ({"bogus_key": 1}, "bogus_key"),
    ({"seeds": "zero"}, "seeds"),
    ({"seeds": [0, "one"]}, "seeds[1]"),
    ({"benchmarks": ["no_such_benchmark"]}, "benchmarks[0]"),
    ({"methods": ["PLOT", "Fancy DAS"]}, "methods[1]"),
    ({"scale": "huge"}, "scale"),
])
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, config, named):
    result = snakemake(tmp_path, "--dry-run", config=config)
    assert result.returncode != 0
    assert repr(named) in result.stdout + result.stderr or f"'{named}'" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_command_line_lists_keep_their_types(tmp_path):
    result = snakemake(tmp_path, "--dry-run", "--config", "seeds=[0,1]", "methods=[PLOT,Full DAS]", "scale=tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hierarchical_equality/seed1/" in result.stdout and "plot_uot" not in result.stdout


def test_bad_benchmark_spec_and_missing_checkpoint_are_named(tmp_path):
    schema = load_yaml(ROOT / "workflow/schemas/benchmark.schema.yaml")
    spec = load_yaml(ROOT / "benchmarks/hierarchical_equality.yaml")
    spec["das"]["epochs"] = "many"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"'das.epochs'"):
        resolve_benchmark(path, "default", schema)
    spec = load_yaml(ROOT / "benchmarks/hierarchical_equality.yaml")
    spec["backbone"]["checkpoint"] = str(tmp_path / "missing.pt")
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="backbone.checkpoint.*missing.pt"):
        resolve_benchmark(path, "default", schema)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_backbone(tmp_path / "missing.pt")
