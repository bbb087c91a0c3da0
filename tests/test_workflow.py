"""Real Snakemake runs of a tiny config in temp dirs: outputs, schemas, figures, determinism, bad input."""
from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from plotlib.backbones import load_backbone
from plotlib.config import ConfigError, load_yaml, resolve_benchmark
from workflow_runs import ROOT, snakemake, tiny_run

# each benchmark's methods, target variables and test pairs in the tiny config
CONTROLS = ["brute-force-DAS", "random-DAS"]
LEARNED_SIZE = ["Full Boundless DAS", "PLOT-Boundless-DAS", "Full DBM", "PLOT-DBM"]
METHODS = {
    "hierarchical_equality": ["PLOT", "PLOT-UOT", "cosine", "brute-force", "Full DAS", "PLOT-DAS", *LEARNED_SIZE, *CONTROLS],
    "binary_addition": ["PLOT", "PLOT-native", "PLOT-PCA", "brute-force", "Full DAS", "PLOT-DAS", "PLOT-native-DAS",
                        "PLOT-PCA-DAS", *LEARNED_SIZE, *CONTROLS],
}
VARIABLES = {"hierarchical_equality": ["WX", "YZ"], "binary_addition": ["C1", "C2", "C3"]}
TEST_PAIRS = {"hierarchical_equality": 120, "binary_addition": 16 * 17}  # 16 test bases x 17 sources
TIMESTEPS = {"hierarchical_equality": ["h1", "h2", "h3"], "binary_addition": ["h0", "h1", "h2", "h3"]}


def test_summary_has_every_method_and_column(tiny_results):
    summary = pd.read_csv(tiny_results / "summary.csv")
    for col in ("benchmark", "method", "n_seeds", "iia", "iia_std", "seconds", "seconds_std", "seconds_wall",
                "speedup_vs_full_das", "delta_iia_vs_full_das", "speedup_vs_full_boundless_das"):
        assert col in summary.columns
    assert (summary.n_seeds == 1).all() and summary.iia_std.isna().all()  # one seed: no spread to show
    for bench, methods in METHODS.items():
        part = summary[summary.benchmark == bench].set_index("method")
        assert sorted(part.index) == sorted(methods)
        assert part.iia.between(0, 1).all() and (part.seconds > 0).all()
        full = part.loc["Full DAS"]
        assert full.speedup_vs_full_das == pytest.approx(1.0) and full.delta_iia_vs_full_das == pytest.approx(0.0)
        plot = part.loc["PLOT"]
        assert plot.speedup_vs_full_das == pytest.approx(full.seconds / plot.seconds, rel=0.01, abs=0.01)
        boundless = part.loc["Full Boundless DAS"]
        assert plot.speedup_vs_full_boundless_das == pytest.approx(boundless.seconds / plot.seconds, rel=0.01, abs=0.01)
    assert all(len(f"{x}".partition(".")[2]) <= 4 for x in summary.iia)  # rounded for reading


def test_long_tables_have_their_schemas(tiny_results):
    acc = pd.read_parquet(tiny_results / "accuracy.parquet")
    assert {"benchmark", "seed", "method", "variable", "split", "metric", "value", "n"} <= set(acc.columns)
    runtime = pd.read_parquet(tiny_results / "runtime.parquet")
    assert list(runtime.columns) == ["benchmark", "seed", "method", "stage", "seconds_wall", "seconds_cpu"]
    for bench, methods in METHODS.items():
        test = acc[(acc.split == "test") & (acc.benchmark == bench)]
        # every method reports sensitive, invariant and combined IIA for every target variable
        assert len(test) == len(methods) * len(VARIABLES[bench]) * 3
        assert sorted(set(test.variable)) == VARIABLES[bench]
        assert set(test.metric) == {"sensitive", "invariant", "combined"}
        assert (test[test.metric == "combined"].n == TEST_PAIRS[bench]).all()
        rt = runtime[runtime.benchmark == bench]
        assert {"shared", "signatures", "das-training", "PLOT", "Full DAS", "PLOT-DAS", *CONTROLS} <= set(rt.method)
        # the fit bank's cache goes to the signature methods, the DAS training bank's to the DAS methods
        assert set(rt[rt.stage.str.startswith("cache_")].set_index("stage").method.items()) == {
            ("cache_fit", "signatures"), ("cache_das_train", "das-training"), ("cache_calibration", "shared"), ("cache_test", "shared")}
        assert set(rt[rt.method == "Full DAS"].stage) >= {f"das_{t}" for t in TIMESTEPS[bench]} | {"select_test"}
    # each timed piece of work is one row: nothing is charged twice
    assert not runtime.duplicated(["benchmark", "seed", "method", "stage"]).any()
    assert {"PLOT-native", "PLOT-PCA"} <= set(runtime[runtime.stage == "signatures"].method)  # Stage B is charged
    brute = acc[(acc.method == "brute-force") & (acc.split == "test")]
    assert all('"gain": 1.0' in hp and '"k": 1' in hp for hp in brute.hyperparameters)


def test_figures_and_report(tiny_results):
    figures = sorted((tiny_results / "figures").glob("*.png"))
    names = [f.name for f in figures]
    assert "hierarchical_equality_runtime_vs_iia.png" in names and "binary_addition_runtime_vs_iia.png" in names
    assert "hierarchical_equality_coupling_plot_seed0.png" in names
    for method in ("plot", "plot_native", "plot_pca"):  # one coupling heatmap per stage
        assert f"binary_addition_coupling_{method}_seed0.png" in names
    for fig in figures:
        assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 5000
    report = (tiny_results / "report.md").read_text()
    for method in set(METHODS["hierarchical_equality"]) | set(METHODS["binary_addition"]):
        assert f"| {method} |" in report
    for method in ("PLOT", "Full DAS"):  # where each carry was found, said plainly
        assert re.search(rf"- {method}, C1: h\d+ \(seed 0, IIA [01]\.\d{{3}}\)", report), report
    for control in CONTROLS:  # and whether PLOT-DAS beats each control
        assert f"- PLOT-DAS versus {control}: IIA" in report
    # every heavy rule left a Snakemake benchmark record beside the in-job runtime rows
    assert (tiny_results / "hierarchical_equality/seed0/benchmarks/full_das_h1.tsv").exists()
    for t in TIMESTEPS["binary_addition"]:  # Full DAS fans out one job per timestep
        assert (tiny_results / f"binary_addition/seed0/benchmarks/full_das_{t}.tsv").exists()


def test_show_prints_the_method_tables_of_a_finished_run(tiny_results):
    from plotlib.cli import main

    text = subprocess.run([sys.executable, "-m", "plotlib", "show", str(tiny_results), "--benchmarks", "binary_addition"],
                          capture_output=True, text=True, check=True).stdout
    assert text.startswith("== binary_addition") and "hierarchical_equality" not in text
    # one seed: means without a spread; then wall seconds, the speedup and the IIA difference against Full DAS
    assert re.search(r"Full DAS\s+1\s+[01]\.\d{3}\s+\d+\.\d{2}\s+\d+\.\d{2}\s+1\.0x\s+\+0\.000", text), text
    assert re.search(r"Full DAS found C1 at seed 0: h\d", text)
    assert main(["show", str(tiny_results / "missing")]) == 2


def test_stage_b_reads_stage_a_and_guided_das_stays_inside_it(tiny_results):
    import json

    run = tiny_results / "binary_addition/seed0"
    stage_a = json.loads((run / "handles/plot.json").read_text())
    for method in ("plot_native", "plot_pca"):
        stage_b = json.loads((run / f"handles/{method}.json").read_text())
        for variable, chosen in stage_b.items():
            layer = stage_a[variable]["handle"]["sites"][0].split("/")[0]
            assert all(site.startswith(f"{layer}/") for site in chosen["handle"]["sites"])
    for method, support in (("plot_native_das", "plot_native"), ("plot_pca_das", "plot_pca")):
        scores = pd.read_parquet(run / f"das/{method}/guided.parquet")
        stage_b = json.loads((run / f"handles/{support}.json").read_text())
        for _, row in scores.iterrows():
            assert row.k <= row.room <= 16
            assert row.location == stage_b[row.variable]["handle"]["sites"][0].split("/")[0]


def test_same_config_gives_same_tables(tiny_results, tmp_path):
    again = tiny_run(tmp_path / "run_b")
    keys = ["method", "variable", "split", "metric"]
    a = pd.read_parquet(tiny_results / "accuracy.parquet").sort_values(keys).reset_index(drop=True)
    b = pd.read_parquet(again / "accuracy.parquet").sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    for bench, name in [("hierarchical_equality", "plot.json"), ("hierarchical_equality", "plot_uot.json"),
                        ("binary_addition", "plot_pca.json")]:
        assert (tiny_results / bench / "seed0/handles" / name).read_text() == (again / bench / "seed0/handles" / name).read_text()


@pytest.mark.parametrize("config,named", [
    ({"bogus_key": 1}, "bogus_key"),
    ({"seeds": "zero"}, "seeds"),
    ({"seeds": [0, "one"]}, "seeds[1]"),
    ({"benchmarks": ["no_such_benchmark"]}, "benchmarks[0]"),
    ({"methods": ["PLOT", "Fancy DAS"]}, "methods[1]"),
    ({"scale": "huge"}, "scale"),
    ({"methods": ["PLOT-DAS"]}, "methods"),  # PLOT-DAS needs PLOT
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
    spec = load_yaml(ROOT / "benchmarks/hierarchical_equality.yaml")
    spec["training"].update(steps=100, warmup_steps=100)
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"'training.warmup_steps'.*below training.steps \(100\)"):
        resolve_benchmark(path, "default", schema)


def test_workflow_passes_snakemake_lint(tmp_path):
    proc = snakemake(tmp_path, "--lint", cores=None)
    assert proc.returncode == 0 and "good condition" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("full, guided, mask", [("Full Boundless DAS", "PLOT-Boundless-DAS", "boundary"),
                                                ("Full DBM", "PLOT-DBM", "units")])
def test_learned_size_methods_run_at_every_location_and_at_plots_site(tiny_results, tmp_path, full, guided, mask):
    """Full Boundless DAS / Full DBM (one job per location, then select) and their PLOT-guided forms on a
    finished tiny run: one cell per lr, each subspace's size learned within the room, charged like DAS."""
    import shutil

    from plotlib import pipeline
    from plotlib.methods import charges

    bench = tmp_path / "hierarchical_equality"
    shutil.copytree(tiny_results / "hierarchical_equality", bench)
    run = pipeline.Run(str(bench / "spec.json"), 0, str(bench / "seed0"))
    locations = [loc.id for loc in run.locations]
    for location in locations:
        pipeline.stage_das_location(run, full, location)
    pipeline.stage_das_select(run, full, locations)
    pipeline.stage_guided_das(run, guided)
    scores = pd.concat(pd.read_parquet(run.paths.das_scores(full, loc)) for loc in locations)
    assert len(scores) == len(locations) * len(run.task.targets) * len(run.spec["das"]["lrs"])
    assert scores.key.str.contains(f"/{mask}/").all() and (scores.k >= 1).all() and (scores.k <= scores.room).all()
    for method in (full, guided):
        acc = pd.read_parquet(run.paths.accuracy(method))
        assert set(acc.variable) == set(run.task.targets) and acc.value.between(0, 1).all()
    assert charges(guided) == (*charges("PLOT"), "das-training", guided)
