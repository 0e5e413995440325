"""State, covariance, analytic solver and posterior analysis against independent dense numpy."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.sparse.linalg import aslinearoperator

from assim import SOLVERS, Problem, ProblemError, solve
from assim.covariance import (
    BlockDiagonalCovariance,
    DiagonalCovariance,
    ExponentialCorrelation,
    KroneckerCovariance,
    StackedCovariance,
    great_circle_km,
    month_lags,
)
from assim.posterior import aggregate, annual_mean_weights, anomaly, land_aggregates, monthly_aggregate
from assim.state import StateVector, month_starts, transcom3_land_regions


def small_problem(seed: int = 0, years: int = 2, n_obs: int = 60) -> Problem:
    rng = np.random.default_rng(seed)
    regions = transcom3_land_regions()
    state = StateVector(month_starts("2021-01", f"{2020 + years}-12"), regions)
    B = KroneckerCovariance(
        ExponentialCorrelation(3.0).matrix(month_lags(state.time.size)),
        ExponentialCorrelation(1500.0).matrix(
            great_circle_km(regions["centroid_latitude"].values, regions["centroid_longitude"].values)
        ),
        rng.uniform(0.3, 1.5, state.size),
    )
    H = rng.normal(0, 0.05, (n_obs, state.size))
    R = DiagonalCovariance(rng.uniform(0.1, 0.5, n_obs) ** 2)
    x_prior = rng.normal(-0.2, 0.5, state.size)
    y = H @ (x_prior + B.sample(rng)) + R.sample(rng)
    return Problem(state, x_prior, B, aslinearoperator(H), y, R)


def dense_posterior(p: Problem) -> tuple[np.ndarray, np.ndarray]:
    """Textbook formulae with explicit inverses: the independent reference."""
    B, H, R = p.B.todense(), p.H.matmat(np.eye(p.n)), p.R.todense()
    A = np.linalg.inv(np.linalg.inv(B) + H.T @ np.linalg.inv(R) @ H)
    return p.x_prior + A @ H.T @ np.linalg.inv(R) @ (p.y - H @ p.x_prior), A


def test_scalar_textbook_case() -> None:
    """Prior 15 (var 2) and one observation 14 (var 1): posterior 14 1/3, var 2/3."""
    regions = transcom3_land_regions().isel(region=[0])
    state = StateVector(month_starts("2020-01", "2020-01"), regions)
    B = KroneckerCovariance(np.eye(1), np.eye(1), np.sqrt([2.0]))
    for form in ("state", "observation"):
        post = solve(
            Problem(
                state, np.array([15.0]), B, aslinearoperator(np.eye(1)), np.array([14.0]), DiagonalCovariance([1.0])
            ),
            form=form,
        )
        assert post.mean[0] == pytest.approx(14 + 1 / 3, rel=1e-14)
        assert post.covariance[0, 0] == pytest.approx(2 / 3, rel=1e-14)


@pytest.mark.parametrize("form", ["state", "observation"])
def test_analytic_matches_dense_numpy(form: str) -> None:
    p = small_problem()
    mean_ref, cov_ref = dense_posterior(p)
    post = solve(p, method="analytic", form=form)
    assert post.info["form"] == form
    np.testing.assert_allclose(post.mean, mean_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post.covariance, cov_ref, rtol=1e-10, atol=1e-12 * np.abs(cov_ref).max())


def test_forms_agree_and_covariance_is_spd() -> None:
    p = small_problem(seed=3, n_obs=400)
    a, b = solve(p, form="state"), solve(p, form="observation")
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-9)
    np.testing.assert_allclose(a.covariance, b.covariance, atol=1e-10 * np.abs(a.covariance).max())
    np.testing.assert_array_equal(a.covariance, a.covariance.T)
    assert np.linalg.eigvalsh(a.covariance).min() > 0


def test_kronecker_operator_matches_dense_and_its_sqrt() -> None:
    rng = np.random.default_rng(1)
    B = small_problem().B
    dense = B.todense()
    X = rng.normal(size=(B.shape[0], 3))
    np.testing.assert_allclose(B.matmat(X), dense @ X, rtol=1e-12)
    np.testing.assert_allclose(B.matvec(X[:, 0]), dense @ X[:, 0], rtol=1e-12)
    L = B.sqrt()
    np.testing.assert_allclose(L.matmat(L.rmatmat(np.eye(B.shape[0]))), dense, atol=1e-12)
    np.testing.assert_allclose(B.diagonal(), np.diag(dense), rtol=1e-12)


def test_block_diagonal_R_whitens() -> None:
    blocks = [ExponentialCorrelation(2.0).matrix(month_lags(k)) * 0.5 for k in (3, 5)]
    R = BlockDiagonalCovariance(blocks)
    W = R.whiten(np.eye(8))
    np.testing.assert_allclose(W @ R.todense() @ W.T, np.eye(8), atol=1e-12)
    with pytest.raises(ValueError, match="block 1 is not positive definite"):
        BlockDiagonalCovariance([np.eye(2), -np.eye(2)])


def test_aggregate_matches_monte_carlo_of_posterior_draws() -> None:
    p = small_problem(seed=5)
    post = solve(p)
    weights = annual_mean_weights(p.state, land_aggregates(p.state.regions))
    totals = post.aggregate(weights)
    draws = np.random.default_rng(0).multivariate_normal(post.mean, post.covariance, size=20000)
    W = np.stack(
        [
            p.state.to_vector(weights.sel(year=y, aggregate=a))
            for y in totals.year.values
            for a in totals.aggregate.values
        ]
    )
    sampled = draws @ W.T
    np.testing.assert_allclose(totals["mean"].values.ravel(), W @ post.mean, rtol=1e-12)
    np.testing.assert_allclose(totals["sd"].values.ravel(), sampled.std(axis=0), rtol=0.03)
    # the global total is not the root-sum-square of its regions: correlations matter
    glob = totals["sd"].sel(aggregate="Global land")
    rss = np.sqrt((totals["sd"].isel(aggregate=slice(0, 11)) ** 2).sum("aggregate"))
    assert not np.allclose(glob, rss, rtol=1e-3)


def test_anomaly_propagates_covariance() -> None:
    rng = np.random.default_rng(2)
    years, aggs = np.arange(2015, 2025), ["a", "b"]
    C = rng.normal(size=(20, 20))
    C = C @ C.T
    mean = rng.normal(size=(10, 2))
    totals = xr.Dataset(
        {
            "mean": (("year", "aggregate"), mean),
            "covariance": (("year", "aggregate", "year_b", "aggregate_b"), C.reshape(10, 2, 10, 2)),
        },
        coords={"year": years, "aggregate": aggs},
    )
    out = anomaly(totals, (2015, 2022))
    D = np.eye(10) - np.outer(np.ones(10), (years <= 2022) / 8)
    for j in range(2):
        cov = C.reshape(10, 2, 10, 2)[:, j, :, j]
        np.testing.assert_allclose(out["sd"].values[:, j], np.sqrt(np.diag(D @ cov @ D.T)), rtol=1e-12)
        np.testing.assert_allclose(out["mean"].values[:, j], D @ mean[:, j], rtol=1e-12)
    with pytest.raises(ValueError, match="reference period"):
        anomaly(totals, (1990, 1991))


def test_diagnostics_dofs_and_chi2() -> None:
    p = small_problem(seed=7, n_obs=200)
    post = solve(p)
    B, H, R = p.B.todense(), p.H.matmat(np.eye(p.n)), p.R.todense()
    dofs_ref = np.trace(np.eye(p.n) - post.covariance @ np.linalg.inv(B))
    assert post.dofs() == pytest.approx(dofs_ref, rel=1e-8)
    d = p.innovation()
    chi2_ref = d @ np.linalg.solve(H @ B @ H.T + R, d) / p.m
    assert post.chi2_reduced() == pytest.approx(chi2_ref, rel=1e-8)


def test_validation_errors_are_specific() -> None:
    p = small_problem()
    bad = Problem(p.state, p.x_prior[:-1], p.B, p.H, p.y, p.R)
    with pytest.raises(ProblemError, match=r"x_prior has shape \(263,\), expected \(264,\)"):
        solve(bad)
    with pytest.raises(ValueError, match="unknown solver 'nope'; choose one of"):
        solve(p, method="nope")
    y = p.y.copy()
    y[4] = np.nan
    with pytest.raises(ProblemError, match="y is not finite at obs 4"):
        solve(Problem(p.state, p.x_prior, p.B, p.H, y, p.R))


def test_every_exact_solver_is_registered_with_its_flag() -> None:
    assert SOLVERS["analytic"].exact is True


def test_state_round_trip_and_label_checks() -> None:
    state = StateVector(month_starts("2020-01", "2020-12"), transcom3_land_regions())
    x = np.arange(state.size, dtype=float)
    da = state.to_dataarray(x, "flux")
    assert da.sel(region="Europe").values[1] == 1 * 11 + 10
    np.testing.assert_array_equal(state.to_vector(da.transpose("region", "time")), x)
    with pytest.raises(ValueError, match="labels differ"):
        state.to_vector(da.isel(time=slice(0, 6)))


def test_transcom_table_is_complete() -> None:
    regions = transcom3_land_regions()
    assert regions.sizes["region"] == 11
    np.testing.assert_allclose(regions["band_fraction"].sum("band"), 1.0, atol=1e-5)
    assert regions["area"].sum() == pytest.approx(1.32e14, rel=0.01)  # land area in TransCom land regions


@pytest.mark.realdata
def test_shipped_transcom_table_matches_the_mask(shared_data) -> None:
    from assim.state import TRANSCOM3_LAND, region_table_from_mask

    mask = xr.open_dataset(shared_data / "regions" / "TRANSCOM_mask_original_1x1.nc")["mask64"]
    area = xr.open_dataset(shared_data / "regions" / "area-1x1.nc")["cell_area"]
    derived = region_table_from_mask(mask, area, TRANSCOM3_LAND, list(range(1, 12)))
    shipped = transcom3_land_regions()
    np.testing.assert_array_equal(derived["region"], shipped["region"])
    for name in ("area", "centroid_latitude", "centroid_longitude", "band_fraction"):
        np.testing.assert_allclose(derived[name], shipped[name], rtol=1e-5, atol=1e-5)


def test_monthly_aggregate_matches_the_general_aggregate() -> None:
    p = small_problem(seed=9)
    post = solve(p)
    aggs = land_aggregates(p.state.regions)
    monthly = monthly_aggregate(aggs, p.state, post.mean, post.covariance)
    weights = xr.DataArray(np.eye(p.state.time.size), dims=("month", "time"), coords={"time": p.state.time}) * aggs
    general = aggregate(weights, p.state, post.mean, post.covariance)
    np.testing.assert_allclose(monthly["mean"].values, general["mean"].transpose("month", "aggregate").values)
    np.testing.assert_allclose(monthly["sd"].values, general["sd"].transpose("month", "aggregate").values, rtol=1e-10)
    via_operator = monthly_aggregate(aggs, p.state, p.x_prior, p.B)
    prior = aggregate(weights, p.state, p.x_prior, p.B.todense())
    np.testing.assert_allclose(via_operator["sd"].values, prior["sd"].transpose("month", "aggregate").values)


def test_state_with_extras_and_stacked_covariance() -> None:
    rng = np.random.default_rng(4)
    p = small_problem(seed=4)
    extras = xr.Dataset(
        coords={
            "extra": ["fossil 2021", "fossil 2022", "initial"],
            "component": ("extra", ["fossil", "fossil", "initial"]),
            "units": ("extra", ["PgC yr-1", "PgC yr-1", "ppm"]),
        }
    )
    state = StateVector(p.state.time, p.state.regions, extras)
    assert state.size == p.state.size + 3
    np.testing.assert_array_equal(state.extra_index("fossil"), [p.state.size, p.state.size + 1])
    extra_cov = np.array([[0.25, 0.2, 0.0], [0.2, 0.25, 0.0], [0.0, 0.0, 1.0]])
    B = StackedCovariance([p.B, extra_cov])
    dense = B.todense()
    X = rng.normal(size=(state.size, 2))
    np.testing.assert_allclose(B.matmat(X), dense @ X, rtol=1e-12)
    L = B.sqrt()
    np.testing.assert_allclose(L.matmat(L.rmatmat(np.eye(state.size))), dense, atol=1e-12)
    H = np.hstack([p.H.matmat(np.eye(p.n)), rng.normal(0, 0.3, (p.m, 3))])
    problem = Problem(state, np.concatenate([p.x_prior, np.zeros(3)]), B, aslinearoperator(H), p.y, p.R)
    mean_ref, cov_ref = dense_posterior(problem)
    post = solve(problem)
    np.testing.assert_allclose(post.mean, mean_ref, rtol=1e-9, atol=1e-12)
    weights = annual_mean_weights(state, land_aggregates(state.regions))
    totals = post.aggregate(weights)
    W = state.pad(state.to_vector(weights.transpose("time", "region", "year", "aggregate")).reshape(state.n_flux, -1)).T
    np.testing.assert_allclose(totals["sd"].values.ravel() ** 2, np.diag(W @ cov_ref @ W.T), rtol=1e-8)
    assert post.flux()["flux_posterior"].shape == state.shape
    assert state.extras_dataarray(post.mean, "x").sel(extra="initial").size == 1


def test_correlated_observation_errors_match_dense_numpy() -> None:
    p = small_problem(seed=8, n_obs=60)
    R = BlockDiagonalCovariance([ExponentialCorrelation(2.0).matrix(month_lags(30)) * 0.3**2] * 2)
    problem = Problem(p.state, p.x_prior, p.B, p.H, p.y, R)
    mean_ref, cov_ref = dense_posterior(problem)
    for form in ("state", "observation"):
        post = solve(problem, form=form)
        np.testing.assert_allclose(post.mean, mean_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(post.covariance, cov_ref, atol=1e-10 * np.abs(cov_ref).max())
    variational = solve(problem, method="variational")
    np.testing.assert_allclose(variational.mean, mean_ref, rtol=1e-6, atol=1e-8)
    d = problem.innovation()
    H, B = p.H.matmat(np.eye(p.n)), p.B.todense()
    assert post.chi2_reduced() == pytest.approx(d @ np.linalg.solve(H @ B @ H.T + R.todense(), d) / p.m, rel=1e-8)
    assert post.dofs() == pytest.approx(np.trace(np.eye(p.n) - post.covariance @ np.linalg.inv(B)), rel=1e-7)


def test_kronecker_solve_inverts() -> None:
    B = small_problem(seed=2).B
    X = np.random.default_rng(0).normal(size=(B.shape[0], 2))
    np.testing.assert_allclose(B.matmat(B.solve(X)), X, rtol=1e-8, atol=1e-10)


def test_sqrt_operators_accept_column_vectors() -> None:
    """scipy passes (n, 1) arrays to matvec/rmatvec: the factors must not broadcast them."""
    B = StackedCovariance([small_problem(seed=1).B, np.eye(2) * 0.5])
    L = B.sqrt()
    z = np.random.default_rng(0).normal(size=(B.shape[0], 1))
    np.testing.assert_allclose(L.T @ z, L.rmatmat(z), rtol=1e-12)
    np.testing.assert_allclose(L @ z, L.matmat(z), rtol=1e-12)


def test_hierarchical_refuses_correlated_observation_errors() -> None:
    p = small_problem(seed=8, n_obs=60)
    R = BlockDiagonalCovariance([ExponentialCorrelation(2.0).matrix(month_lags(30)) * 0.3**2] * 2)
    with pytest.raises(ValueError, match="R must be a DiagonalCovariance"):
        solve(Problem(p.state, p.x_prior, p.B, p.H, p.y, R), method="hierarchical")
