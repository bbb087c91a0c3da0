"""Pointer chasing: the causal model follows chains, each family changes what it says, and the named
positions point at the tokens they name."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plotlib.banks import make_bank
from plotlib.tasks import make_task
from workflow_runs import check_tiny_layer_token_run

BASE = {"links": "k=d d=7 b=k c=a a=2 e=c", "query": "b"}


@pytest.fixture(scope="module")
def task():
    return make_task("pointer_chase", {"chains": 2, "hops": 2, "names": 12}, 0)


def test_causal_model_follows_the_chain_by_hand(task):
    model = task.causal_model
    assert model.run(BASE) == {**BASE, "H1": "k", "H2": "d", "O": "7"}
    assert task.outputs(pd.DataFrame([BASE])).tolist() == [7]
    # H1 forced to the other chain's first name: the base's chain from there ends in 2
    assert model.run(BASE, {"H1": "c"})["O"] == "2"
    assert model.run(BASE, {"H2": "a"})["O"] == "2"
    with pytest.raises(ValueError, match="'z' is not bound"):
        model.run(BASE, {"H1": "z"})


def test_families_change_only_what_they_name(task):
    bank = make_bank(task, 400, 0, "fit")
    by_family = bank.groupby("family")[["sensitive_H1", "sensitive_H2"]].mean()
    assert by_family.loc["reorder"].tolist() == [0.0, 0.0]
    assert by_family.loc["swap1"].tolist() == [1.0, 0.0]
    assert by_family.loc["swap2"].tolist() == [0.0, 1.0]
    assert by_family.loc["otherQuery"].tolist() == [1.0, 1.0]
    # every statement is a real link: each name bound once, the chains the task says
    for links in bank.base_links.tolist() + bank.source_links.tolist():
        left = [link.split("=")[0] for link in links.split()]
        assert len(left) == len(set(left)) == 6


def test_hops_option_adds_variables_and_positions():
    task = make_task("pointer_chase", {"hops": 3, "names": 12}, 0)
    assert task.targets == ("H1", "H2", "H3") and task.position_names[-1] == "link4"
    row = task.sample_inputs(np.random.default_rng(1), 1).iloc[0].to_dict()
    assert task.causal_model.run(row)["O"] in "0123456789"
    with pytest.raises(ValueError, match="distinct names"):
        make_task("pointer_chase", {"hops": 5, "names": 10}, 0)


def test_named_positions_point_at_the_queried_chains_statements(task):
    x = task.encode(pd.DataFrame([BASE]))
    tokens = task.tokenizer.convert_ids_to_tokens(x.input_ids[0].tolist())
    assert " ".join(tokens) == "kd d7 bk ca a2 ec ? b"
    named = {name: tokens[int(x.positions[name][0])] for name in task.position_names}
    assert named == {"last": "b", "link1": "bk", "link2": "kd", "link3": "d7"}


def test_tiny_run_localizes_on_the_layer_token_grid(tmp_path):
    check_tiny_layer_token_run("pointer_chase", tmp_path, ("last", "link1"), {"H1", "H2"})


def test_curriculum_trains_on_shorter_chains_but_evaluates_on_full_ones():
    task = make_task("pointer_chase", {"curriculum": True, "names": 6}, 0)
    rng = np.random.default_rng(0)
    batch = task.training_inputs(rng, 200)
    lengths = {len(links.split()) for links in batch.links}
    assert lengths == {2, 4, 6}  # 0, 1 and 2 hops per chain, 2 chains
    for row, label in zip(batch.to_dict("records"), task.outputs(batch)):
        name = row["query"]
        while not name.isdigit():
            name = dict(link.split("=") for link in row["links"].split())[name]
        assert int(name) == label
    assert task.encode(batch).input_ids.shape[0] == 200
    assert {len(links.split()) for links in task.evaluation_inputs(rng, 50).links} == {6}
