"""Variational and ensemble solvers against the exact analytic answer on linear-Gaussian problems."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.linalg
from scipy.stats import norm
from test_core import small_problem
from threadpoolctl import threadpool_limits

from assim import SOLVERS, Problem, solve
from assim.covariance import DiagonalCovariance, ExponentialCorrelation, prior_covariance, to_dense
from assim.osse import OsseConfig, make_world, world_problem
from assim.posterior import LowRankCovariance, annual_mean_weights, land_aggregates
from assim.solvers.ensemble import assimilate, extend, gaspari_cohn, nowcast, prior_ensemble
from assim.solvers.variational import ConvergenceError
from assim.state import StateVector, transcom3_land_regions
from assim.transport import make_transport


@pytest.fixture(autouse=True)
def single_thread_blas():
    """Small matrices on a shared 2-core machine: threaded BLAS only oversubscribes it."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


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


def test_variational_bounds() -> None:
    """Inactive bounds change nothing; active ones give the bounded least-squares minimiser (BVLS)."""
    from scipy.optimize import lsq_linear

    p = small_problem(seed=0, n_obs=60)
    free = solve(p, method="variational")
    same = solve(p, method="variational", bounds=(free.mean.min() - 1, free.mean.max() + 1))
    np.testing.assert_array_equal(same.mean, free.mean)
    assert same.info["active_bounds"].size == 0
    lower, upper = np.quantile(free.mean, [0.2, 0.7])
    post = solve(p, method="variational", bounds=(lower, np.full(p.n, upper)))
    assert (post.mean >= lower).all() and (post.mean <= upper).all() and post.info["active_bounds"].size > 10
    np.testing.assert_array_equal(post.sd, free.sd)  # the unbounded Gaussian covariance
    # reference: min |L^-1 (x - x_b)|^2 + |R^-1/2 (H x - y)|^2 subject to the bounds, dense BVLS
    L_inv = scipy.linalg.solve_triangular(scipy.linalg.cholesky(to_dense(p.B), lower=True), np.eye(p.n), lower=True)
    r = np.sqrt(p.R.diagonal())
    A = np.vstack([L_inv, to_dense(p.H) / r[:, None]])
    reference = lsq_linear(A, np.r_[L_inv @ p.x_prior, p.y / r], bounds=(lower, upper), method="bvls", tol=1e-14).x
    np.testing.assert_allclose(post.mean, reference, atol=1e-6 * np.abs(reference).max())
    with pytest.raises(ValueError, match="lower > upper at state index 0"):
        solve(p, method="variational", bounds=(1.0, 0.0))


def test_every_approximate_solver_is_registered() -> None:
    for name in ("variational", "ensemble", "hierarchical"):
        assert name in SOLVERS and SOLVERS[name].exact is False


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A two-year OSSE world with the 12-box transport: (config, world, problem, regions, transport)."""
    import os

    os.environ.setdefault("ASSIM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    regions, transport = transcom3_land_regions(), make_transport("box12")
    config = OsseConfig(start="2023-01", end="2024-12", seed=5)
    w = make_world(config, regions, transport)
    return config, w, world_problem(w, config, regions, transport), regions, transport


@pytest.mark.parametrize(("seed", "n_obs"), [(0, 60), (3, 400)])
def test_full_rank_ensemble_is_exact(seed: int, n_obs: int) -> None:
    p = small_problem(seed=seed, n_obs=n_obs)
    exact, post = solve(p, method="analytic"), solve(p, method="ensemble")
    assert post.info["members"] == p.n
    np.testing.assert_allclose(post.mean, exact.mean, rtol=1e-9, atol=1e-9 * np.abs(exact.mean).max())
    np.testing.assert_allclose(post.covariance.todense(), exact.covariance, atol=1e-9 * np.abs(exact.covariance).max())


def test_random_ensemble_is_within_sampling_error() -> None:
    """N = 1000 random members for n = 264: mean off by well under a posterior sd, variances within ~10 %."""
    p = small_problem(seed=0, n_obs=60)
    exact = solve(p, method="analytic")
    post = solve(p, method="ensemble", members=1000, seed=1)
    z = (post.mean - exact.mean) / exact.sd
    assert np.sqrt(np.mean(z**2)) < 0.4
    assert 0.85 < np.mean(post.variance / exact.variance) < 1.05
    small = solve(p, method="ensemble", members=30, seed=1)  # a small ensemble is over-confident
    assert np.mean(small.variance / exact.variance) < 0.7


def test_serial_localised_path_reduces_to_the_batch_update(world) -> None:
    """A taper of one (localisation length far beyond the Earth) gives the exact answer by the serial path."""
    _, _, p, _, _ = world
    exact = solve(p, method="analytic")
    post = solve(p, method="ensemble", localisation_km=1e9)
    assert post.info["serial"] and post.info["batches"] == p.m
    np.testing.assert_allclose(post.mean, exact.mean, rtol=1e-7, atol=1e-8 * np.abs(exact.mean).max())
    np.testing.assert_allclose(post.covariance.todense(), exact.covariance, atol=1e-8 * np.abs(exact.covariance).max())
    lagged = solve(p, method="ensemble", lag_months=2)
    # a lag window keeps an observation from updating later months: the last month keeps more spread
    assert lagged.sd[-p.state.shape[1] :].mean() > exact.sd[-p.state.shape[1] :].mean()


def test_gaspari_cohn_taper() -> None:
    r = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    taper = gaspari_cohn(r)
    assert taper[0] == 1.0 and taper[-2] == pytest.approx(0.0, abs=1e-12) and taper[-1] == 0.0
    assert np.all(np.diff(taper) <= 0)
    assert taper[2] == pytest.approx(5 / 24, rel=1e-12)  # both branches meet at r = 1


def sub_problem(problem: Problem, config: OsseConfig, months: int, regions, transport) -> tuple:
    """Prior over the first ``months`` months and the observations of the last of them."""
    state = StateVector(problem.state.time[:months], regions)
    n = state.size
    B = prior_covariance(
        state,
        problem.B.sd[:n],
        ExponentialCorrelation(config.time_correlation_months),
        ExponentialCorrelation(config.region_correlation_km),
    )
    month = problem.obs["time"].values.astype("datetime64[M]")
    rows = np.flatnonzero(month == problem.state.time[months - 1].astype("datetime64[M]"))
    H = transport.jacobian(state, problem.obs.isel(obs=rows))
    return state, problem.x_prior[:n], B, H, problem.y[rows], DiagonalCovariance(problem.R.variance[rows])


@pytest.mark.parametrize("order", ["C", "F"])  # both memory layouts of the carried perturbations (updated in place)
def test_nowcast_month_by_month_equals_batch(world, order: str) -> None:
    config, _, p, regions, transport = world
    exact = solve(p, method="analytic")
    first = 12
    state, x_b, B, _, _, _ = sub_problem(p, config, first, regions, transport)
    rows = np.flatnonzero(p.obs["time"].values < np.datetime64(str(p.state.time[first])))
    H = transport.jacobian(state, p.obs.isel(obs=rows))
    carried, _ = assimilate(prior_ensemble(state, x_b, B), H, p.y[rows], DiagonalCovariance(p.R.variance[rows]))
    carried = replace(carried, perturbations=np.asarray(carried.perturbations, order=order))
    for months in range(first + 1, p.state.shape[0] + 1):
        before = (carried.mean.copy(), carried.perturbations.copy())
        updated = nowcast(carried, *sub_problem(p, config, months, regions, transport))
        np.testing.assert_array_equal(carried.mean, before[0])  # the carried run is not touched
        np.testing.assert_array_equal(carried.perturbations, before[1])
        carried = updated
    np.testing.assert_allclose(carried.mean, exact.mean, rtol=1e-8, atol=1e-9 * np.abs(exact.mean).max())
    np.testing.assert_allclose(
        carried.covariance().todense(), exact.covariance, atol=1e-9 * np.abs(exact.covariance).max()
    )
    with pytest.raises(ValueError, match="must start with the ensemble's 24 months"):
        extend(carried, state, x_b, B)


@pytest.mark.parametrize(
    ("method", "options", "world_options"),
    [
        ("variational", {}, {}),
        ("ensemble", {}, {}),
        # no planted anomaly: the truth is then a draw from the prior the hyperpriors centre on (with
        # the anomaly the global prior-scale factor widens every region: 79 % / 98 % in the benchmark)
        ("hierarchical", {"draws": 200, "tune": 200}, {"anomaly_pgc_per_yr": 0.0}),
    ],
)
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # hierarchical: 200 draws may fall short of the ESS goal
def test_osse_calibration(world, method: str, options: dict, world_options: dict) -> None:
    """Regional annual sinks: truth inside 1-sigma 62-74 % and inside 2-sigma 91-98 % of the time (30 worlds)."""
    _, _, _, regions, transport = world
    z = []
    for seed in range(30):
        config = OsseConfig(start="2023-01", end="2024-12", seed=seed, **world_options)
        w = make_world(config, regions, transport)
        post = solve(world_problem(w, config, regions, transport), method=method, **options)
        weights = annual_mean_weights(post.state, land_aggregates(regions)).isel(aggregate=slice(0, 11))
        totals = post.aggregate(weights)
        truth = (weights * w.truth).sum(("time", "region"))
        z.append(np.abs((totals["mean"] - truth) / totals["sd"]).values.ravel())
    z = np.concatenate(z)
    assert 0.62 <= (z <= norm.ppf(0.841345)).mean() <= 0.74
    assert 0.91 <= (z <= norm.ppf(0.97725)).mean() <= 0.98
