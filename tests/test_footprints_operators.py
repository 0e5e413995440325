"""Satellite XCO2 and flux-tower operators, and towers with atmospheric data in one Problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from assim.covariance import DiagonalCovariance, ExponentialCorrelation, prior_covariance
from assim.solvers import solve
from assim.state import StateVector, month_starts
from assim.transport import Jacobian
from assim.transport.chunked import ChunkedJacobian, write_dense
from assim.transport.stack import ObservationBlock, RowStack, joint_problem
from assim.transport.synthetic import block_regions
from assim.transport.towers import RepresentationError, tower_jacobian, tower_uncertainty
from assim.transport.xco2 import XCO2Operator, apriori_xco2, xco2_from_profile
from observations import observation_dataset, read

OCO2_FIXTURE = Path(__file__).parent / "fixtures" / "oco2" / "oco2_LtCO2_210701_fixture.nc4"


def soundings(kernel: np.ndarray, weight: np.ndarray, apriori: np.ndarray) -> xr.Dataset:
    m = kernel.shape[0]
    return observation_dataset(
        np.full(m, 410.0), np.full(m, 0.5), units="ppm", time=np.full(m, np.datetime64("2021-07-01T05:00", "ns")),
        latitude=np.zeros(m), longitude=np.zeros(m), altitude=np.nan, site="OCO2", platform="satellite",
        category="satellite",
        data_vars={
            "xco2_averaging_kernel": (("obs", "level"), kernel),
            "pressure_weight": (("obs", "level"), weight),
            "co2_profile_apriori": (("obs", "level"), apriori),
        },
    )  # fmt: skip


def test_xco2_matches_a_hand_computation() -> None:
    obs = soundings(
        kernel=np.array([[0.5, 1.0, 0.8], [1.0, 1.0, 1.0]]),
        weight=np.array([[0.2, 0.3, 0.5], [0.1, 0.4, 0.5]]),
        apriori=np.array([[400.0, 402.0, 404.0], [390.0, 395.0, 400.0]]),
    )
    profile = np.array([[401.0, 405.0, 410.0], [392.0, 396.0, 398.0]])
    # sounding 0: xa = 0.2*400 + 0.3*402 + 0.5*404 = 402.6; + 0.2*0.5*1 + 0.3*1*3 + 0.5*0.8*6 = 3.4
    # sounding 1: xa = 0.1*390 + 0.4*395 + 0.5*400 = 397.0; + 0.1*2 + 0.4*1 + 0.5*(-2) = -0.4
    np.testing.assert_allclose(apriori_xco2(obs), [402.6, 397.0], rtol=1e-14)
    np.testing.assert_allclose(xco2_from_profile(obs, profile), [406.0, 396.6], rtol=1e-14)


def test_xco2_constant_profile_identities() -> None:
    obs = read(OCO2_FIXTURE, kind="oco2")  # real Lite-layout kernels, weights and a priori
    m, levels = obs["pressure_weight"].shape
    apriori = obs["co2_profile_apriori"].values
    # the a priori profile itself reports the a priori column
    np.testing.assert_allclose(xco2_from_profile(obs, apriori), apriori_xco2(obs), rtol=1e-14)
    # with a unit kernel (a perfect retrieval) a constant profile reports its own value (weights sum to 1)
    perfect = obs.assign(xco2_averaging_kernel=obs["xco2_averaging_kernel"] * 0 + 1)
    np.testing.assert_allclose(xco2_from_profile(perfect, np.full((m, levels), 415.0)), 415.0, rtol=1e-6)
    # a constant shift of the whole profile moves XCO2 by the shift times sum_k w_k a_k
    shift = xco2_from_profile(obs, apriori + 2.0) - apriori_xco2(obs)
    expected = 2.0 * (obs["pressure_weight"] * obs["xco2_averaging_kernel"]).sum("level").values
    np.testing.assert_allclose(shift, expected, rtol=1e-12)


@pytest.mark.parametrize("chunked", [False, True])
def test_xco2_operator_composes_with_a_profile_jacobian(tmp_path, chunked: bool) -> None:
    obs = read(OCO2_FIXTURE, kind="oco2")
    m, levels = obs["pressure_weight"].shape
    rng = np.random.default_rng(0)
    J = rng.uniform(0, 1, (m * levels, 6)).astype(np.float32).astype(float)
    profile_jacobian = ChunkedJacobian(write_dense(J, tmp_path / "J.zarr", chunk_obs=40)) if chunked else Jacobian(J)
    H = XCO2Operator(profile_jacobian, obs)
    background = obs["co2_profile_apriori"].values + 1.0
    x, y = rng.normal(size=6), rng.normal(size=m)
    direct = xco2_from_profile(obs, background + (J @ x).reshape(m, levels))
    np.testing.assert_allclose(H.offset(obs, background) + H.matvec(x), direct, rtol=1e-12)
    assert np.isclose(H.matvec(x) @ y, x @ H.rmatvec(y), rtol=1e-12)
    np.testing.assert_allclose(H.matmat(np.eye(6)).T, H.rmatmat(np.eye(m)), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="sounding-major"):
        XCO2Operator(Jacobian(J[:-1]), obs)


@pytest.fixture(scope="module")
def world():
    """2 x 3 block regions over western Europe, 3 months; towers at three places."""
    mask, regions = block_regions(np.arange(40.25, 52.0, 0.5), np.arange(-4.75, 14.0, 0.5), 2, 3)
    state = StateVector(month_starts("2020-01", "2020-03"), regions)
    towers = observation_dataset(
        np.array([1.0, -0.5, 2.0, 0.3]), np.full(4, 0.2), units="gC m-2 d-1",
        time=np.array(["2020-01-15", "2020-02-15", "2020-03-15", "2020-03-15"], dtype="datetime64[ns]"),
        latitude=np.array([41.0, 41.0, 50.0, 47.0]), longitude=np.array([-4.0, -4.0, 13.0, 5.0]), altitude=100.0,
        site=np.array(["ES-A", "ES-A", "DE-B", "FR-C"]), platform="flux_tower", category="flux_tower",
    )  # fmt: skip
    return mask, state, towers


def test_tower_sees_its_region_flux_density(world) -> None:
    mask, state, towers = world
    H = tower_jacobian(state, towers, mask).matmat(np.eye(state.size))
    area = state.regions["area"].values
    # ES-A: region 1 (south-west), DE-B: region 6 (north-east), FR-C: region 5 (north-middle)
    gc_m2_d_per_pgc_yr = 1e15 / 365.25 / area  # 1 PgC/yr over the region, in gC m-2 d-1
    expected = np.zeros((4, state.size))
    for i, (month, region) in enumerate([(0, 0), (1, 0), (2, 5), (2, 4)]):
        expected[i, month * 6 + region] = gc_m2_d_per_pgc_yr[region]
    np.testing.assert_allclose(H, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="no state region"):
        tower_jacobian(state, towers.assign_coords(latitude=towers["latitude"] * 0 + 60.0), mask)


def test_representation_error_shrinks_as_the_footprint_fills_the_cell() -> None:
    rep = RepresentationError(sd=2.0, correlation_km=10.0, footprint_km2=1.0)
    sigma = rep(np.array([1.0, 10.0, 100.0, 1e6]))
    assert sigma[0] == 0.0 and np.all(np.diff(sigma) > 0)
    np.testing.assert_allclose(sigma[-1], 2.0 * np.sqrt(100 / 101 - 100 / (100 + 1e6)), rtol=1e-12)
    np.testing.assert_allclose(rep(np.array([1e6]), "kgC m-2 d-1"), sigma[-1] / 1000, rtol=1e-12)


def test_towers_and_atmosphere_in_one_problem_equal_assimilating_them_in_turn(world) -> None:
    mask, state, towers = world
    rng = np.random.default_rng(4)
    B = prior_covariance(state, np.full(state.size, 0.5), ExponentialCorrelation(2.0), ExponentialCorrelation(800.0))
    x_prior = np.zeros(state.size)
    atmosphere = ObservationBlock(Jacobian(rng.uniform(0, 0.5, (20, state.size))), rng.normal(size=20),
                                  DiagonalCovariance(np.full(20, 0.5)))  # fmt: skip
    rep = RepresentationError(sd=1.5, correlation_km=10.0)
    R_tower = DiagonalCovariance(tower_uncertainty(state, towers, mask, rep) ** 2)
    tower = ObservationBlock(tower_jacobian(state, towers, mask), towers["value"].values, R_tower)
    joint = solve(joint_problem(state, x_prior, B, [atmosphere, tower]), method="analytic")
    first = solve(joint_problem(state, x_prior, B, [atmosphere]), method="analytic")
    # the posterior of the first step is the prior of the second (a dense matrix as an operator)
    second = solve(joint_problem(state, first.mean, Jacobian(first.covariance), [tower]), method="analytic")
    np.testing.assert_allclose(joint.mean, second.mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(joint.covariance, second.covariance, rtol=1e-8, atol=1e-12)
    assert np.all(R_tower.variance > towers["uncertainty"].values ** 2)


def test_row_stack_adjoint() -> None:
    rng = np.random.default_rng(5)
    A, C = rng.normal(size=(4, 3)), rng.normal(size=(2, 3))
    H = RowStack([Jacobian(A), Jacobian(C)])
    x, y = rng.normal(size=3), rng.normal(size=6)
    np.testing.assert_allclose(H.matvec(x), np.r_[A @ x, C @ x])
    np.testing.assert_allclose(H.rmatvec(y), np.r_[A, C].T @ y)
    with pytest.raises(ValueError, match="state size"):
        RowStack([Jacobian(A), Jacobian(C[:, :2])])
