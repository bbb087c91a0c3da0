from pathlib import Path

import numpy as np
import pytest

from plotlib.banks import SPLITS, bank_inputs, make_bank
from plotlib.config import load_yaml, resolve_benchmark
from plotlib.tasks import make_task
from plotlib.causal import CausalModel


def test_hierarchical_equality_counterfactuals_by_hand(task):
    model = task.causal_model
    base = {"W": 1, "X": 1, "Y": 2, "Z": 3}      # WX true, YZ false -> output False
    source = {"W": 4, "X": 5, "Y": 6, "Z": 6}    # WX false, YZ true
    assert model.run(base)["O"] is False or model.run(base)["O"] == False  # noqa: E712
    assert model.interchange(base, source, "WX") == True  # noqa: E712  WX forced false: false == false
    assert model.interchange(base, source, "YZ") == True  # noqa: E712  YZ forced true: true == true
    assert model.interchange(base, source, ("WX", "YZ")) == False  # noqa: E712  both from source
    same = {"W": 7, "X": 7, "Y": 8, "Z": 9}      # WX true like the base: interchange changes nothing
    assert model.interchange(base, same, "WX") == model.run(base)["O"]


def test_causal_model_rejects_bad_graphs():
    with pytest.raises(ValueError, match="unknown variables"):
        CausalModel(inputs=("A",), parents={"B": ("C",)}, mechanisms={"B": lambda c: c}, output="B")
    with pytest.raises(ValueError, match="missing input"):
        CausalModel(inputs=("A",), parents={"B": ("A",)}, mechanisms={"B": lambda a: a}, output="B").run({})


def test_bank_flags_match_causal_model(task):
    bank = make_bank(task, 200, 3, "fit")
    base, source = bank_inputs(bank, "base"), bank_inputs(bank, "source")
    for i in range(0, 200, 17):
        b, s = base.iloc[i].to_dict(), source.iloc[i].to_dict()
        y = task.label(task.causal_model.run(b)["O"])
        assert bank.y_base[i] == y
        for var in task.targets:
            cf = task.label(task.causal_model.interchange(b, s, var))
            assert bank[f"cf_{var}"][i] == cf
            assert bank[f"sensitive_{var}"][i] == (cf != y)
    # balanced by construction: each variable sensitive on exactly half the pairs
    for var in task.targets:
        assert bank[f"sensitive_{var}"].mean() == 0.5


def test_banks_are_seeded_and_splits_differ(task):
    a, b = make_bank(task, 64, 1, "fit"), make_bank(task, 64, 1, "fit")
    assert a.equals(b)
    assert not a.equals(make_bank(task, 64, 1, "test"))
    assert not a.equals(make_bank(task, 64, 2, "fit"))
    with pytest.raises(ValueError, match="unknown bank split"):
        make_bank(task, 10, 0, "train")


def test_vectorized_outputs_match_row_by_row(task):
    inputs = task.sample_inputs(np.random.default_rng(0), 300)
    rows = [task.label(task.causal_model.run(r)["O"]) for r in inputs.to_dict("records")]
    assert task.outputs(inputs).tolist() == rows


SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "benchmark.schema.yaml"
SPECS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.yaml"))


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_every_target_has_sensitive_and_invariant_pairs_in_every_bank(spec_path):
    """A quarter of each bank at least is sensitive and a quarter invariant, for every target of every
    shipped spec (a "combined" IIA must not rest on a handful of pairs)."""
    spec = resolve_benchmark(spec_path, "default", load_yaml(SCHEMA))
    for seed in (0, 3):
        task = make_task(spec["task"], spec["task_options"], seed, spec["backbone"], spec["imports"])
        for split in SPLITS:
            bank = make_bank(task, spec["banks"], seed, split)
            for var in task.targets:
                share = float(bank[f"sensitive_{var}"].mean())
                assert 0.25 <= share <= 0.75, f"{spec_path.stem} seed {seed} {split}: {var} sensitive on {share:.3f}"
