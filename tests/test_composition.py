"""Function composition: the causal model applies the tables in order, each family changes what it says
(and the keep families change the inputs while keeping a variable), and named positions point at their words."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plotlib.banks import make_bank
from plotlib.tasks import make_task
from workflow_runs import ROOT, check_tiny_layer_token_run


@pytest.fixture(scope="module")
def task():
    return make_task("composition", {"steps": 3, "values": 16, "functions": 16}, 0)


def test_causal_model_applies_the_functions_in_order(task):
    base = {"x": "c", "f1": "F", "f2": "K", "f3": "B"}
    v1 = task.tables["F"]["c"]
    v2 = task.tables["K"][v1]
    assert task.causal_model.run(base) == {**base, "V1": v1, "V2": v2, "O": task.tables["B"][v2]}
    assert task.outputs(pd.DataFrame([base])).tolist() == [task.values.index(task.tables["B"][v2])]
    # V1 forced: the rest of the chain runs from the forced value
    assert task.causal_model.run(base, {"V1": "a"})["O"] == task.tables["B"][task.tables["K"]["a"]]
    # every function is a permutation of the values
    assert all(sorted(table.values()) == sorted(task.values) for table in task.tables.values())


def test_tables_depend_on_table_seed_only():
    a, b = (make_task("composition", {}, seed) for seed in (0, 7))
    assert a.tables == b.tables
    assert make_task("composition", {"table_seed": 1}, 0).tables != a.tables


def test_families_change_only_what_they_name(task):
    bank = make_bank(task, 600, 0, "fit")
    by_family = bank.groupby("family")[["sensitive_V1", "sensitive_V2"]].mean()
    for family, (v1, v2) in {"f2": (0, None), "f3": (0, 0), "keep1": (0, 0), "keep2": (None, 0)}.items():
        assert by_family.loc[family, "sensitive_V1"] == v1 or v1 is None
        assert by_family.loc[family, "sensitive_V2"] == v2 or v2 is None
    for family in ("x", "f1"):  # both variables change (a permutation can map two values alike only by chance)
        assert by_family.loc[family].min() > 0.8
    base, source = (bank[[f"{role}_{c}" for c in ("x", "f1", "f2", "f3")]].to_numpy() for role in ("base", "source"))
    keep = bank.family.str.startswith("keep").to_numpy()
    assert (base[keep, 0] != source[keep, 0]).all()  # a keep source always starts elsewhere
    for family, changed in {"x": [0], "f1": [1], "f2": [2], "f3": [3]}.items():
        rows = (bank.family == family).to_numpy()
        differs = base[rows] != source[rows]
        assert differs[:, changed].all() and not np.delete(differs, changed, axis=1).any()


def test_named_positions_point_at_their_words(task):
    x = task.encode(pd.DataFrame([{"x": "c", "f1": "F", "f2": "K", "f3": "B"}]))
    tokens = task.tokenizer.convert_ids_to_tokens(x.input_ids[0].tolist())
    assert tokens == ["c", "F", "K", "B"]
    assert {name: tokens[int(x.positions[name][0])] for name in task.position_names} == {"x": "c", "f1": "F", "f2": "K", "last": "B"}


def test_curriculum_trains_on_shorter_prompts_with_the_same_answers():
    task = make_task("composition", {"curriculum": True}, 0)
    batch = task.training_inputs(np.random.default_rng(0), 300)
    lengths = (batch[["f1", "f2", "f3"]] != "").sum(axis=1)
    assert set(lengths) == {1, 2, 3}
    for row, label in zip(batch.to_dict("records"), task.outputs(batch)):
        value = row["x"]
        for f in (row["f1"], row["f2"], row["f3"]):
            value = task.tables[f][value] if f else value
        assert label == task.values.index(value)
    assert len(task.encode(batch)) == 300  # short prompts encode (their missing positions sit on the last word)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="steps >= 2"):
        make_task("composition", {"steps": 1}, 0)
    with pytest.raises(ValueError, match="2..16 values"):
        make_task("composition", {"values": 1}, 0)


def test_depth_variants_inherit_the_spec_and_form_a_scaling_series(tmp_path):
    from plotlib import pipeline
    from plotlib.config import ConfigError, load_yaml, resolve_benchmark
    from plotlib.report import scaling_series

    schema = load_yaml(ROOT / "workflow" / "schemas" / "benchmark.schema.yaml")
    base = resolve_benchmark(ROOT / "benchmarks" / "composition.yaml", "default", schema)
    specs = {f"composition_depth{d}": resolve_benchmark(ROOT / "benchmarks" / f"composition_depth{d}.yaml", "default", schema)
             for d in (4, 6, 8)}
    assert [s["backbone"]["layers"] for s in specs.values()] == [4, 6, 8]
    # a variant's nested keys merge over the base's: the width and the training recipe are kept
    assert all(s["methods"] == ["PLOT", "Full DAS", "PLOT-DAS"] and s["training"] == base["training"]
               and s["backbone"]["width"] == 64 and s["task_options"] == base["task_options"] for s in specs.values())
    assert len(pipeline.coarse_location_ids(specs["composition_depth8"], 0)) == 9 * 4
    assert scaling_series(specs) == {"composition": list(specs)} and scaling_series({"composition": base}) == {}
    (tmp_path / "a.yaml").write_text("base: b\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    with pytest.raises(ConfigError, match="circular"):
        resolve_benchmark(tmp_path / "a.yaml", "default", schema)


def test_tiny_run_localizes_on_the_layer_token_grid(tmp_path):
    check_tiny_layer_token_run("composition", tmp_path, ("last", "f1"), {"V1", "V2"})