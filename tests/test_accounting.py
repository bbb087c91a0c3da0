"""Runtime accounting and the protocol's guarantees: what each method is charged, the summary's means and
spreads on hand-made rows, common random numbers across DAS methods, and a test bank that no choice sees."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from plotlib import methods
from plotlib.report import method_seconds, summarize


def test_each_method_is_charged_for_what_it_needs():
    assert methods.charges("PLOT") == ("signatures", "PLOT")
    assert methods.charges("brute-force") == ("brute-force",)  # no signatures, no fit cache
    assert methods.charges("PLOT-PCA") == ("signatures", "PLOT", "PLOT-PCA")
    assert methods.charges("Full DAS") == ("das-training", "Full DAS")
    assert methods.charges("PLOT-DAS") == ("signatures", "PLOT", "das-training", "PLOT-DAS")
    assert methods.charges("PLOT-PCA-DAS") == ("signatures", "PLOT", "PLOT-PCA", "das-training", "PLOT-PCA-DAS")
    assert methods.charges("brute-force-DAS") == ("brute-force", "das-training", "brute-force-DAS")
    assert methods.charges("random-DAS") == ("das-training", "random-DAS")
    # the fit bank's cache rides with the signatures, the DAS training bank's with the DAS methods
    assert methods.CACHE_CHARGED_TO == {"fit": "signatures", "das_train": "das-training"}
    assert all(methods.SHARED not in methods.charges(m) for m in methods.METHODS)


def _runtime_rows() -> pd.DataFrame:
    rows = []
    for seed, scale in ((0, 1.0), (1, 2.0)):  # seed 1 takes twice as long everywhere
        for method, stage, cpu in [("shared", "train_backbone", 100.0), ("shared", "cache_test", 7.0),
                                   ("signatures", "cache_fit", 1.0), ("signatures", "signatures", 2.0),
                                   ("PLOT", "couple", 0.5), ("PLOT", "calibrate", 0.5),
                                   ("das-training", "cache_das_train", 3.0),
                                   ("Full DAS", "das_h1", 20.0), ("Full DAS", "das_h2", 20.0), ("Full DAS", "select_test", 1.0),
                                   ("PLOT-DAS", "das", 6.0), ("PLOT-DAS", "select_test", 1.0),
                                   ("Full Boundless DAS", "das_h1", 5.0), ("Full Boundless DAS", "das_h2", 5.0)]:
            rows.append({"benchmark": "b", "seed": seed, "method": method, "stage": stage,
                         "seconds_cpu": cpu * scale, "seconds_wall": 10 * cpu * scale})
    return pd.DataFrame(rows)


def _accuracy_rows() -> pd.DataFrame:
    iia = {("Full DAS", 0): (1.0, 0.8), ("Full DAS", 1): (1.0, 1.0), ("PLOT", 0): (0.5, 0.7), ("PLOT", 1): (0.7, 0.7),
           ("PLOT-DAS", 0): (0.9, 0.9), ("PLOT-DAS", 1): (0.7, 0.7),
           ("Full Boundless DAS", 0): (1.0, 0.8), ("Full Boundless DAS", 1): (1.0, 1.0)}
    rows = []
    for (method, seed), values in iia.items():
        for variable, value in zip(("A", "B"), values):
            rows.append({"benchmark": "b", "seed": seed, "method": method, "variable": variable, "split": "test",
                         "metric": "combined", "value": value})
            rows.append({"benchmark": "b", "seed": seed, "method": method, "variable": variable, "split": "calibration",
                         "metric": "combined", "value": 0.0})  # never enters the summary
    return pd.DataFrame(rows)


def test_method_seconds_and_summary_on_hand_made_rows():
    seconds = method_seconds(_runtime_rows(), {"b": ["PLOT", "Full DAS", "PLOT-DAS", "Full Boundless DAS"]})
    cpu = seconds.set_index(["method", "seed"]).seconds_cpu
    assert cpu["PLOT", 0] == pytest.approx(1 + 2 + 0.5 + 0.5)  # fit cache, signatures, couplings, calibration
    assert cpu["Full DAS", 0] == pytest.approx(3 + 20 + 20 + 1)  # DAS training cache, both locations, selection
    assert cpu["PLOT-DAS", 1] == pytest.approx(2 * (4 + 3 + 6 + 1))  # its guide's time too
    summary = summarize(_accuracy_rows(), seconds).set_index("method")
    assert (summary.n_seeds == 2).all()
    # IIA: mean over variables per seed, then mean and sample std over seeds
    assert summary.iia["Full DAS"] == pytest.approx(0.95) and summary.iia_std["Full DAS"] == pytest.approx(np.std([0.9, 1.0], ddof=1))
    assert summary.iia["PLOT"] == pytest.approx(0.65) and summary.iia_std["PLOT"] == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert summary.seconds["Full DAS"] == pytest.approx(66.0) and summary.seconds_std["Full DAS"] == pytest.approx(np.std([44, 88], ddof=1))
    assert summary.seconds_wall["Full DAS"] == pytest.approx(660.0)
    assert summary.speedup_vs_full_das["PLOT-DAS"] == pytest.approx(66.0 / 21.0)
    assert summary.delta_iia_vs_full_das["PLOT-DAS"] == pytest.approx(0.8 - 0.95)
    assert summary.speedup_vs_full_das["Full DAS"] == 1.0 and summary.delta_iia_vs_full_das["Full DAS"] == 0.0
    # the second baseline: Full Boundless DAS costs its training cache and both locations, 3 + 5 + 5 on seed 0
    assert summary.seconds["Full Boundless DAS"] == pytest.approx(1.5 * 13)
    assert summary.speedup_vs_full_boundless_das["PLOT-DAS"] == pytest.approx(1.5 * 13 / 21.0)
    assert summary.speedup_vs_full_boundless_das["Full DAS"] == pytest.approx(13 / 44)


def test_das_methods_train_the_same_cell_alike(tiny_results):
    """Common random numbers: a (variable, location, k, lr) cell gets the same subspace and the same
    calibration scores whichever method trains it, alone or beside the rest of a location's grid."""
    from safetensors.torch import load_file

    for bench in ("hierarchical_equality", "binary_addition"):
        run = tiny_results / bench / "seed0/das"
        full = pd.concat([pd.read_parquet(p) for p in (run / "full_das").glob("*.parquet")])
        full_bases = {k: v for p in (run / "full_das").glob("*.safetensors") for k, v in load_file(p).items()}
        for method in ("plot_das", "brute_force_das", "random_das"):
            guided = pd.read_parquet(run / method / "guided.parquet")
            both = guided.merge(full, on=["location", "variable", "support", "k", "lr"], suffixes=("", "_full"))
            assert len(both) == len(guided) > 0
            for metric in ("sensitive", "invariant", "combined"):
                assert (both[metric] == both[f"{metric}_full"]).all(), (bench, method, metric)
            bases = load_file(run / method / "guided.safetensors")
            for key in guided.key:
                q, q_full = bases[key], full_bases[key]
                assert np.allclose(q @ q.T, q_full @ q_full.T, atol=1e-4)


def test_the_test_bank_influences_no_choice(tiny_results, tmp_path):
    """Swap the test bank (and its cache) for another one, then redo every choice: every handle and every
    DAS selection stays the same, while the test scores move."""
    from plotlib import pipeline
    from plotlib.banks import make_bank
    from plotlib.cache import build_cache
    from plotlib.layout import RunPaths, slug

    bench = "hierarchical_equality"
    shutil.copytree(tiny_results / bench, tmp_path / bench)
    root = tmp_path / bench / "seed0"
    before = {p.name: p.read_text() for p in (root / "handles").glob("*.json")}
    run = pipeline.Run(str(tmp_path / bench / "spec.json"), 0, str(root))
    paths = RunPaths(str(root))
    old_test = pd.read_parquet(paths.accuracy("PLOT"))
    other = make_bank(run.task, run.spec["banks"], 999, "test")
    other.to_parquet(paths.bank("test"))
    build_cache(run.task, run.backbone, other, run.locations, paths.cache("test"))
    das_choice = {m: pd.read_parquet(paths.accuracy(m))[["variable", "sites", "hyperparameters"]] for m in
                  ("Full DAS", "PLOT-DAS", "brute-force-DAS", "random-DAS")}

    run = pipeline.Run(str(tmp_path / bench / "spec.json"), 0, str(root))  # fresh banks
    for method in ("PLOT", "PLOT-UOT", "cosine", "brute-force"):
        pipeline.stage_calibrate(run, method)
    pipeline.stage_das_select(run, "Full DAS", [loc.id for loc in run.locations])
    for method in ("PLOT-DAS", "brute-force-DAS", "random-DAS"):
        pipeline.stage_guided_das(run, method)

    after = {p.name: p.read_text() for p in (root / "handles").glob("*.json")}
    assert after == before and len(after) == 4
    for method, chosen in das_choice.items():
        pd.testing.assert_frame_equal(pd.read_parquet(paths.accuracy(method))[chosen.columns], chosen, obj=method)
    new_test = pd.read_parquet(paths.accuracy("PLOT"))
    assert not np.allclose(new_test.value, old_test.value)  # the swap was real: the test scores moved
    assert json.loads((root / "handles" / f"{slug('PLOT')}.json").read_text()).keys() == {"WX", "YZ"}


def test_a_backbone_below_the_floor_is_named_and_left_out_of_the_tables(tiny_results, tmp_path):
    """With training.below_floor: exclude, a backbone below training.min_accuracy does not stop the run:
    the seed's metrics say why, and the report names the seed and leaves it out of every table."""
    from plotlib import pipeline
    from plotlib.io import read_json, write_json
    from plotlib.report import build_report

    bench = "hierarchical_equality"
    shutil.copytree(tiny_results, tmp_path / "results")
    out = tmp_path / "results"
    blob = read_json(out / bench / "spec.json")
    blob["spec"]["training"].update(min_accuracy=1.0, steps=50, below_floor="exclude")  # 50 steps cannot reach it
    write_json(blob, tmp_path / "strict.json")
    run = pipeline.Run(str(tmp_path / "strict.json"), 0, str(tmp_path / "strict_run"))
    pipeline.stage_train(run)
    metrics = read_json(run.paths.train_metrics)
    assert metrics["factual_accuracy"] < 1.0
    assert "below training.min_accuracy 1.0 after 50 training steps" in metrics["excluded"]

    # the same verdict on the tiny run's own seed: the report names it and its tables leave it out
    tiny_metrics = out / bench / "seed0/backbone/metrics.json"
    write_json({**read_json(tiny_metrics), "excluded": metrics["excluded"]}, tiny_metrics)
    build_report(str(out), [(bench, 0), ("binary_addition", 0)])
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.benchmark) == {"binary_addition"}
    report = (out / "report.md").read_text()
    assert f"**Seed 0 is excluded**: {metrics['excluded']}" in report
    assert len(pd.read_parquet(out / "accuracy.parquet").query("benchmark == @bench")) > 0  # the raw rows stay


def test_stage_timers_wait_for_the_gpu_before_reading_the_clocks(monkeypatch):
    """On a GPU, queued kernels would otherwise finish after the timer stops. No GPU here: CUDA's state is
    stood in for, and the test checks that each timer synchronizes at its start and at its end."""
    import torch

    from plotlib.timing import RuntimeLog

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: calls.append("sync"))
    log = RuntimeLog("b", 0)
    with log.stage("PLOT", "couple"):
        calls.append("work")
    assert calls == ["sync", "work", "sync"] and len(log.rows) == 1
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # a CPU run: no call into CUDA
    with log.stage("PLOT", "couple"):
        pass
    assert calls == ["sync", "work", "sync"]
