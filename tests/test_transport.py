import numpy as np
import ot
import pytest

from plotlib.transport import conditional, couple, sinkhorn_log_unbalanced, softmax_match


@pytest.fixture
def cost():
    return np.random.default_rng(0).random((3, 20)) * 2


@pytest.mark.parametrize("eps", [0.001, 0.01, 0.3, 3.0])
def test_balanced_plans_meet_marginals(cost, eps):
    plan = couple(cost, "sinkhorn", eps=eps)
    assert np.allclose(plan.sum(1), 1 / 3, atol=1e-6)
    assert np.allclose(plan.sum(0), 1 / 20, atol=1e-6)


def test_emd_meets_marginals(cost):
    plan = couple(cost, "emd")
    assert np.allclose(plan.sum(1), 1 / 3) and np.allclose(plan.sum(0), 1 / 20)


@pytest.mark.parametrize("eps", [0.001, 0.01, 0.3])
def test_unbalanced_keeps_variable_marginal_hard_and_concentrates(cost, eps):
    plan = couple(cost, "uot", eps=eps, beta=0.5)
    assert np.all(np.isfinite(plan))
    assert np.allclose(plan.sum(1), 1 / 3, atol=1e-6)
    if eps <= 0.01:  # small eps and a relaxed site marginal: each variable's mass goes to its cheapest site
        assert (plan.argmax(1) == cost.argmin(1)).all()


@pytest.mark.parametrize("eps,rho", [(0.3, 0.5), (1.0, 2.0), (0.1, 5.0)])
def test_log_domain_unbalanced_matches_pot_where_pot_is_stable(cost, eps, rho):
    a, b = np.full(3, 1 / 3), np.full(20, 1 / 20)
    ours = sinkhorn_log_unbalanced(a, b, cost, eps, rho, rho)
    theirs = ot.unbalanced.sinkhorn_unbalanced(a, b, cost, eps, reg_m=rho, numItermax=20000, stopThr=1e-12)
    assert np.allclose(ours, theirs, atol=1e-7)


def test_conditional_and_softmax_rows_sum_to_one(cost):
    assert np.allclose(conditional(couple(cost, "sinkhorn", eps=0.1)).sum(1), 1)
    assert np.allclose(softmax_match(cost, 0.05).sum(1), 1)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown solver"):
        couple(np.ones((2, 2)), "sliced", eps=1)
    with pytest.raises(ValueError, match="finite"):
        couple(np.array([[np.nan, 1.0]]), "sinkhorn", eps=1)
    with pytest.raises(ValueError, match="beta"):
        couple(np.ones((2, 2)), "uot", eps=1)


def test_semi_relaxed_uot_matches_its_closed_form_for_one_variable():
    """With one row, a hard row marginal and a KL-relaxed site marginal, the plan is the softmax of
    -cost at temperature beta + eps (weighted by the uniform site marginal)."""
    row = np.random.default_rng(1).random((1, 7))
    for eps, beta in [(0.003, 1.0), (0.03, 0.1), (0.3, 3.0)]:
        plan = couple(row, "uot", eps=eps, beta=beta)
        assert np.allclose(plan, softmax_match(row, beta + eps), atol=1e-9)


@pytest.mark.parametrize("eps,beta", [(0.003, 0.1), (0.01, 1.0), (0.1, 3.0)])
def test_translated_iterations_reach_the_plain_fixed_point(cost, eps, beta):
    a, b = np.full(3, 1 / 3), np.full(20, 1 / 20)
    fast = sinkhorn_log_unbalanced(a, b, cost, eps, np.inf, beta)
    plain = sinkhorn_log_unbalanced(a, b, cost, eps, np.inf, beta, max_iter=400_000, tol=1e-13, translate=False)
    assert np.allclose(fast, plain, atol=1e-7)


def test_gromov_wasserstein_matches_identical_metric_spaces_by_identity():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(6, 3))
    distances = ((points[:, None] - points[None]) ** 2).sum(-1)
    plan = couple(np.zeros((6, 6)), "gw", eps=1e-3, geometry=(distances, distances))
    assert np.allclose(plan, np.eye(6) / 6, atol=1e-4)


def test_fused_gw_without_its_gw_term_is_entropic_ot(cost):
    n, m = cost.shape
    flat = (np.zeros((n, n)), np.zeros((m, m)))
    fused = couple(cost, "fgw", eps=0.1, alpha=0.0, geometry=flat)
    assert np.allclose(fused, couple(cost, "sinkhorn", eps=0.1), atol=1e-6)
    with pytest.raises(ValueError, match="geometry"):
        couple(cost, "gw", eps=0.1)
    with pytest.raises(ValueError, match="alpha"):
        couple(cost, "fgw", eps=0.1, alpha=1.5, geometry=flat)


def test_plot_couples_with_fused_gw_from_the_stored_signatures(tiny_results, tmp_path):
    """The couple stage gives fgw the distances within the stored variable and site signatures."""
    import shutil

    import pandas as pd

    from plotlib import pipeline
    from plotlib.io import read_json, write_json

    bench = tmp_path / "hierarchical_equality"
    shutil.copytree(tiny_results / "hierarchical_equality", bench)
    resolved = read_json(bench / "spec.json")
    resolved["spec"]["plot"].update(solver="fgw", alpha=[0.0, 0.5])
    write_json(resolved, bench / "spec.json")
    run = pipeline.Run(str(bench / "spec.json"), 0, str(bench / "seed0"))
    pipeline.stage_couple(run, "coarse", ["PLOT"])
    plans = pd.read_parquet(run.paths.couplings("coarse"))
    assert sorted(plans.params.unique()) == sorted(f'{{"alpha": {a}, "eps": {e}}}' for a in (0.0, 0.5)
                                                   for e in resolved["spec"]["plot"]["eps"])
    for _, plan in plans.groupby("params"):
        assert plan.groupby("variable").mass.sum().to_numpy() == pytest.approx(0.5, abs=1e-6)
