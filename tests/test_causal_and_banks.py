import numpy as np
import pytest

from plotlib.banks import bank_inputs, make_bank
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
