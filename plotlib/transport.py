"""Couplings between target variables (rows) and candidate sites (columns), uniform masses.

Balanced entropic OT and exact EMD come from POT. Unbalanced OT (hard variable marginal, KL-relaxed
site marginal) is solved here in the log domain, because POT 0.9.7's unbalanced solvers underflow
(or diverge) at the small regularizations of the calibration grid (eps ~ 1e-3 on unit-scale costs);
``tests/test_transport.py`` checks it against POT where POT is stable. Entropic (fused)
Gromov-Wasserstein is mirror descent here, each step POT's log-domain Sinkhorn.
"""
from __future__ import annotations

import math

import numpy as np
import ot
from scipy.special import logsumexp

from plotlib.methods import SOLVER_PARAMS

SOLVERS = tuple(s for s in SOLVER_PARAMS if s != "softmax")
#: Solvers that compare the two sides' geometry (distances within the variables and within the sites).
GEOMETRIC = ("gw", "fgw")


def uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def sinkhorn_log_unbalanced(
    a: np.ndarray, b: np.ndarray, cost: np.ndarray, eps: float, rho_a: float, rho_b: float,
    max_iter: int = 5000, tol: float = 1e-9, translate: bool = True,
) -> np.ndarray:
    """Entropic unbalanced OT with KL marginal penalties ``rho_a``, ``rho_b`` (``inf`` = hard).

    Log-domain dual updates f <- tau_a * softmin, g <- tau_b * softmin with tau = rho / (rho + eps);
    the plan is a_i b_j exp((f_i + g_j - C_ij) / eps). With a hard ``a`` marginal, each iteration
    also moves (f, g) to (f + c, g - c) with the c that maximizes the dual (closed form; the plan is
    unchanged). This removes the slow mode of plain iteration, which contracts only by tau_b per
    step (translation-invariant Sinkhorn, Sejourne et al. 2023): one iteration for a single row,
    a few hundred instead of thousands at eps ~ 1e-3.
    """
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    tau_a = 1.0 if math.isinf(rho_a) else rho_a / (rho_a + eps)
    tau_b = 1.0 if math.isinf(rho_b) else rho_b / (rho_b + eps)
    log_a, log_b = np.log(a), np.log(b)
    f, g = np.zeros_like(a), np.zeros_like(b)
    for _ in range(max_iter):  # the site update first, so a hard variable marginal holds exactly on exit
        g_new = -tau_b * eps * logsumexp(log_a[:, None] + (f[:, None] - cost) / eps, axis=0)
        f_new = -tau_a * eps * logsumexp(log_b[None, :] + (g_new[None, :] - cost) / eps, axis=1)
        if translate and math.isinf(rho_a) and not math.isinf(rho_b):
            shift = rho_b * (np.log(a.sum()) - logsumexp(log_b - g_new / rho_b))
            f_new, g_new = f_new + shift, g_new - shift
        done = max(np.abs(f_new - f).max(), np.abs(g_new - g).max()) < tol
        f, g = f_new, g_new
        if done:
            break
    return np.exp(log_a[:, None] + log_b[None, :] + (f[:, None] + g[None, :] - cost) / eps)


def entropic_fused_gw(cost: np.ndarray, inner_a: np.ndarray, inner_b: np.ndarray, eps: float, alpha: float,
                      max_iter: int = 1000, tol: float = 1e-9) -> np.ndarray:
    """Entropic fused Gromov-Wasserstein with uniform marginals and the square loss: mirror-descent steps
    (Peyre et al. 2016), each a balanced log-domain Sinkhorn (POT) on ``(1 - alpha) * cost + alpha *``
    the GW gradient at the current plan. POT's own entropic GW runs its Sinkhorn in the plain domain,
    which fails at the small eps of a calibration grid."""
    a, b = uniform(cost.shape[0]), uniform(cost.shape[1])
    const, h_a, h_b = ot.gromov.init_matrix(inner_a, inner_b, a, b, "square_loss")
    plan = np.outer(a, b)
    for _ in range(max_iter):
        linear = (1 - alpha) * cost + alpha * ot.gromov.tensor_product(const, h_a, h_b, plan)
        new = ot.sinkhorn(a, b, linear, eps, method="sinkhorn_log", numItermax=5000, stopThr=1e-9)
        done = np.abs(new - plan).max() < tol
        plan = new
        if done:
            break
    return plan


def couple(cost: np.ndarray, solver: str, eps: float | None = None, beta: float | None = None, alpha: float | None = None,
           geometry: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The plan (variables x sites) for ``cost`` with uniform marginals.

    ``sinkhorn``: balanced entropic OT, log domain (POT). ``uot``: variable marginal hard, site
    marginal KL-relaxed with weight ``beta``. ``emd``: exact OT (POT). ``gw``: entropic Gromov-Wasserstein
    (POT), which matches the distances among the variables to those among the sites (``geometry``: the two
    distance matrices) and ignores ``cost``; ``fgw``: fused GW, ``(1 - alpha) * cost + alpha * GW``.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or not np.isfinite(cost).all():
        raise ValueError(f"cost must be a finite 2-D matrix, got shape {cost.shape} with non-finite entries: {not np.isfinite(cost).all()}")
    a, b = uniform(cost.shape[0]), uniform(cost.shape[1])
    if solver == "sinkhorn":
        plan = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", numItermax=5000, stopThr=1e-9)
    elif solver == "uot":
        if beta is None or beta <= 0:
            raise ValueError(f"unbalanced OT needs beta > 0, got {beta}")
        plan = sinkhorn_log_unbalanced(a, b, cost, eps, math.inf, beta)
    elif solver == "emd":
        plan = ot.emd(a, b, cost)
    elif solver in GEOMETRIC:
        if geometry is None:
            raise ValueError(f"{solver} needs the distances within the variables and within the sites (geometry)")
        inner_a, inner_b = (np.asarray(g, dtype=np.float64) for g in geometry)
        if inner_a.shape != (cost.shape[0],) * 2 or inner_b.shape != (cost.shape[1],) * 2:
            raise ValueError(f"geometry shapes {inner_a.shape}, {inner_b.shape} do not match cost {cost.shape}")
        if solver == "fgw" and (alpha is None or not 0 <= alpha <= 1):
            raise ValueError(f"fused GW needs 0 <= alpha <= 1, got {alpha}")
        plan = entropic_fused_gw(cost, inner_a, inner_b, eps, 1.0 if solver == "gw" else alpha)
    else:
        raise ValueError(f"unknown solver {solver!r}; solvers are {SOLVERS}")
    if not np.isfinite(plan).all():
        raise FloatingPointError(f"{solver} plan has non-finite entries (eps={eps}, beta={beta})")
    return plan


def conditional(plan: np.ndarray) -> np.ndarray:
    """Row-normalized plan: pi(site | variable)."""
    rows = plan.sum(axis=1, keepdims=True)
    if (rows <= 0).any():
        raise FloatingPointError("a variable received no transport mass")
    return plan / rows


def softmax_match(cost: np.ndarray, temperature: float) -> np.ndarray:
    """The cosine/softmax-matching baseline: row-wise softmax of the negated cost, no transport."""
    return np.exp(-cost / temperature - logsumexp(-cost / temperature, axis=1, keepdims=True))
