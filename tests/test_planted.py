"""Planted ground truth: the constructed networks compute what they claim, the localization metrics
measure it, and top-k ranks sites the coupling cannot separate by their cost."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from plotlib.handles import rank_sites, top_k_handle
from plotlib.localization import localization
from plotlib.sites import Location, Site, Support
from plotlib.tasks import make_task
from plotlib.training import factual_accuracy
from plotlib.transport import conditional, couple


def _interchange_iia(task, model, location: str, span: torch.Tensor, variable: str, n: int = 300) -> float:
    """Share of pairs where replacing ``span`` of the base's activation at ``location`` by the source's gives
    the causal model's counterfactual output for ``variable`` (a reference loop, independent of plotlib.patching)."""
    base, source, _ = task.sample_pairs(np.random.default_rng(5), n)
    seen = {}
    hook = model.taps[location].register_forward_hook(lambda m, i, out: seen.__setitem__("h", out))
    model(task.encode(source))
    hook.remove()
    hook = model.taps[location].register_forward_hook(lambda m, i, out: out + (seen["h"] - out) @ span @ span.T)
    predicted = model(task.encode(base)).argmax(1).numpy()
    hook.remove()
    expected = [task.causal_model.run(dict(b), {variable: task.causal_model.run(dict(s))[variable]})["O"]
                for (_, b), (_, s) in zip(base.iterrows(), source.iterrows())]
    return float((predicted == np.array(expected, dtype=int)).mean())


@pytest.mark.parametrize("rotated", [False, True])
def test_constructed_network_computes_each_variable_in_its_planted_units(rotated):
    for seed in range(3):
        task = make_task("planted_mlp", {"rotated": rotated, "depth": 4}, seed)
        model = task.build_backbone({}, seed)
        assert factual_accuracy(task, model, task.evaluation_inputs(np.random.default_rng(0), 1000)) == 1.0
        for variable, planted in task.planted().items():
            assert _interchange_iia(task, model, planted.location, planted.units, variable) == 1.0
            # the decoys carry an exact copy, but the output barely reads them: interchanging them does nothing
            sensitive = _interchange_iia(task, model, planted.location, planted.decoys, variable)
            assert sensitive < 0.8


def test_planted_options_are_checked_with_the_key_named():
    with pytest.raises(ValueError, match="task_options.width"):
        make_task("planted_mlp", {"width": 8}, 0)
    with pytest.raises(ValueError, match="task_options.depth"):
        make_task("planted_mlp", {"depth": 2}, 0)


def test_localization_counts_planted_units_and_decoys():
    task = make_task("planted_mlp", {}, 0)
    planted = task.planted()["S1"]
    units = [int(i) for i in planted.units.argmax(0)]
    decoys = [int(i) for i in planted.decoys.argmax(0)]
    eye = torch.eye(task.width)
    exact = localization(planted, {planted.location: eye[:, units]})
    assert exact == {"precision": 1.0, "recall": 1.0, "decoy_dims": 0.0, "location_hit": 1.0}
    partial = localization(planted, {planted.location: eye[:, units[:2] + decoys[:1]]})
    assert partial["precision"] == pytest.approx(2 / 3) and partial["recall"] == pytest.approx(2 / 3)
    assert partial["decoy_dims"] == pytest.approx(1.0)
    elsewhere = localization(planted, {"h2": eye[:, :3], planted.location: eye[:, units]})
    assert elsewhere["precision"] == pytest.approx(0.5) and elsewhere["location_hit"] == 0.0
    # a rotated planting: the rotation's columns, not native units, are the answer
    rotated = make_task("planted_mlp", {"rotated": True}, 0).planted()["S1"]
    assert localization(rotated, {rotated.location: rotated.units})["recall"] == pytest.approx(1.0)
    assert localization(rotated, {rotated.location: eye[:, units]})["recall"] < 0.9


def test_tied_coupling_masses_are_ranked_by_cost():
    """Balanced Sinkhorn at small eps gives every site it fills the same mass, whatever its cost; the
    top-k must then follow the cost (planted 0.03, decoys 1.1-1.3), not floating-point noise."""
    cost = np.array([[1.2, 0.03, 1.1, 0.03, 0.03, 2.0, 2.0, 1.3],
                     [0.5, 3.0, 3.0, 3.0, 3.0, 0.02, 0.02, 0.5]])
    pi = conditional(couple(cost, "sinkhorn", eps=0.01))
    row = pi[0]
    tied = np.flatnonzero(np.isclose(row, row.max(), rtol=1e-5))
    assert set(tied) == {1, 2, 3, 4}  # three planted sites and a decoy fill their whole columns: the tie to break
    sites = [Site(Location("h2"), Support("coords", (i,))) for i in range(cost.shape[1])]
    handle = top_k_handle(row, sites, 3, 1.0, cost[0])
    assert {s.support.indices[0] for s in handle.sites} == {1, 3, 4}
    assert list(rank_sites(row, cost[0])[:4]) == [1, 3, 4, 2]
    assert list(rank_sites(np.array([0.1, 0.5, 0.4]))) == [1, 2, 0]  # distinct masses: cost plays no part
