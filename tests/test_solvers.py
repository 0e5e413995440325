"""Variational and ensemble solvers against the exact analytic answer on linear-Gaussian problems."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.sparse.linalg import aslinearoperator
from scipy.stats import norm

from assim import SOLVERS, Problem, solve
from assim.covariance import DiagonalCovariance, ExponentialCorrelation, KroneckerCovariance, month_lags, to_dense
from assim.posterior import LowRankCovariance, annual_mean_weights, land_aggregates
from assim.solvers.variational import ConvergenceError
from assim.state import StateVector, month_starts, transcom3_land_regions
from test_core import small_problem


def whitened(p: Problem, cov: np.ndarray) -> np.ndarray:
    """L^-1 cov L^-T with B = L L^T (dense): the covariance in control space."""
    L = scipy.linalg.cholesky(to_dense(p.B), lower=True)
    half = scipy.linalg.solve_triangular(L, cov, lower=True)
    return scipy.linalg.solve_triangular(L, half.T, lower=True)


def test_low_rank_covariance_matches_its_dense_form() -> None:
    rng = np.random.default_rng(0)
    base = DiagonalCovariance(rng.uniform(1, 2, 30))
    U, w = rng.normal(size=(30, 4)), rng.uniform(-0.1, 0.1, 4)
    dense = np.diag(base.variance) + U @ np.diag(w) @ U.T
    op = LowRankCovariance(U, w, base=base)
    X = rng.normal(size=(30, 3))
    np.testing.assert_allclose(op.todense(), dense, rtol=1e-14)
    np.testing.assert_allclose(op.diagonal(), np.diag(dense), rtol=1e-14)
    np.testing.assert_allclose(op.matmat(X), dense @ X, rtol=1e-12)
    np.testing.assert_allclose(LowRankCovariance(U, np.ones(4)).todense(), U @ U.T, rtol=1e-14)
    with pytest.raises(ValueError, match=r"factor has shape \(30, 4\) but weights has 3"):
        LowRankCovariance(U, w[:3])


@pytest.mark.parametrize(("seed", "n_obs"), [(0, 60), (3, 400)])
def test_variational_matches_analytic(seed: int, n_obs: int) -> None:
    p = small_problem(seed=seed, n_obs=n_obs)
    exact = solve(p, method="analytic")
    post = solve(p, method="variational")
    np.testing.assert_allclose(post.mean, exact.mean, rtol=1e-6, atol=1e-6 * np.abs(exact.mean).max())
    assert post.info["gradient_reduction"] <= 1e-10
    # with cov_tol 0.01 every direction reduced by more than 1 % is kept: covariance close everywhere
    A_k, A = whitened(p, post.covariance.todense()), whitened(p, exact.covariance)
    assert np.linalg.eigvalsh(A_k - A).max() <= post.info["truncation_bound"] + 1e-8
    assert np.linalg.eigvalsh(A_k - A).min() >= -1e-8
    assert post.dofs() == pytest.approx(exact.dofs(), rel=0.01)
    assert post.chi2_reduced() == pytest.approx(exact.chi2_reduced(), rel=0.01)


def test_variational_truncated_covariance_is_exact_in_kept_directions_and_bounded() -> None:
    p = small_problem(seed=3, n_obs=400)
    exact = solve(p, method="analytic")
    post = solve(p, method="variational", rank=10)
    V, theta = post.info["ritz_vectors"], post.info["ritz_values"]
    assert post.info["rank"] == 10 and theta.size == 10
    A_k, A = whitened(p, post.covariance.todense()), whitened(p, exact.covariance)
    # kept directions: variance 1/theta in control space, as the exact posterior has
    np.testing.assert_allclose(V.T @ A @ V, np.diag(1 / theta), atol=1e-6 * (1 / theta).max())
    np.testing.assert_allclose(V.T @ A_k @ V, np.diag(1 / theta), atol=1e-12)
    gap = np.linalg.eigvalsh(A_k - A)
    assert gap.min() >= -1e-6  # truncation only ever over-states the variance
    assert 0.0 < gap.max() <= post.info["truncation_bound"] + 1e-6
    # same bound for the annual aggregates: 0 <= var_k - var <= bound * prior var
    weights = annual_mean_weights(p.state, land_aggregates(p.state.regions))
    var_k, var, var_b = (
        post.aggregate(weights)["sd"] ** 2,
        exact.aggregate(weights)["sd"] ** 2,
        post.aggregate_prior(weights)["sd"] ** 2,
    )
    assert (var_k - var >= -1e-9).all()
    assert (var_k - var <= post.info["truncation_bound"] * var_b + 1e-9).all()


def test_variational_raises_with_the_last_result_when_not_converged() -> None:
    p = small_problem(seed=0, n_obs=60)
    with pytest.raises(ConvergenceError, match=r"gradient reduced only by .* after 3 iterations") as info:
        solve(p, method="variational", max_iter=3)
    assert info.value.result.info["iterations"] == 3


def test_every_approximate_solver_is_registered() -> None:
    for name in ("variational", "ensemble", "hierarchical"):
        assert name in SOLVERS and SOLVERS[name].exact is False
