"""The real global case on the bundled tables (fast) and with station records (realdata)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from assim import solve
from assim.global_case import (
    RealConfig,
    global_problem,
    land_prior_sd,
    probability_below,
    summarize_global,
    uncertainty_budget,
)
from assim.state import transcom3_land_regions


@pytest.fixture(scope="module")
def short_run():
    config = RealConfig(first_year=2016, last_year=2024)
    case = global_problem(config, transcom3_land_regions())
    posterior = solve(case.problem)
    return config, case, posterior, summarize_global(case, posterior, config, (2016, 2022))


def test_state_carries_the_budget_terms_with_gcb_priors(short_run) -> None:
    _, case, _, _ = short_run
    state = case.problem.state
    fossil = state.extras_dataarray(case.problem.x_prior, "x").sel(extra="fossil 2020")
    gcb = case.gcb.loc[2020]
    assert float(fossil) == pytest.approx(gcb["fossil_emissions_excl_carbonation"] - gcb["cement_carbonation_sink"])
    ocean = state.extras_dataarray(case.problem.x_prior, "x").sel(extra="ocean 2020")
    assert float(ocean) == pytest.approx(-gcb["ocean_sink"])  # flux sign: uptake negative
    assert state.time[0] == np.datetime64("2015-01-01") and state.time[-1] == np.datetime64("2025-12-01")


def test_posterior_fits_withheld_growth_rates(short_run) -> None:
    *_, run = short_run
    obs, post = run["growth_rate_observed"], run["growth_rate_posterior"]
    prior_err = np.abs(run["growth_rate_prior"] - obs).mean()
    post_err = np.abs(post - obs).mean()
    assert post_err < 0.5 * prior_err
    assert float(np.abs((post - obs) / run["growth_rate_posterior_sd"]).max()) < 3


def test_uncertainty_budget_adds_up_to_the_posterior_variance(short_run) -> None:
    *_, run = short_run
    total = run["uncertainty_budget"].sum("error_source")
    np.testing.assert_allclose(total, run["land_sink_posterior_sd"].sel(aggregate="Global land") ** 2, rtol=1e-6)
    assert set(run["error_source"].values) >= {"land prior", "fossil prior", "ocean prior", "observations"}


def test_uncertainty_budget_on_a_problem_with_one_observation(short_run) -> None:
    *_, posterior, _ = short_run
    weights = np.zeros((1, posterior.problem.n))
    weights[0, -1] = 1.0  # the initial-condition offset alone
    parts = uncertainty_budget(posterior, weights)
    assert sum(parts.values())[0] == pytest.approx(posterior.covariance[-1, -1], rel=1e-6)


def test_anomaly_probability_and_gcb_comparison(short_run) -> None:
    *_, run = short_run
    glob = run.sel(aggregate="Global land")
    p = probability_below(glob["land_sink_anomaly_posterior"], glob["land_sink_anomaly_posterior_sd"])
    np.testing.assert_allclose(run["probability_below_reference"].sel(aggregate="Global land"), p)
    # the 2024 collapse: the sink is below its 2016-2022 mean with high probability
    assert float(glob["probability_below_reference"].sel(year=2024)) > 0.9
    implied = run["gcb_atmosphere_implied_land_sink"]
    assert np.corrcoef(glob["land_sink_posterior"], implied)[0, 1] > 0.8
    assert float((np.abs(glob["land_sink_posterior"] - implied) < 2 * glob["land_sink_posterior_sd"]).mean()) >= 0.8


@pytest.mark.realdata
def test_stations_split_the_sink_by_latitude(shared_data) -> None:
    config = RealConfig(first_year=2006, last_year=2014, data_dir=str(shared_data), stations=True)
    case = global_problem(config, transcom3_land_regions())
    problem = case.problem
    sites = set(problem.obs["site"].values.tolist())
    assert {"GLOBAL", "MLO", "BRW", "SPO", "CGO"} <= sites
    offsets = problem.state.extras["component"].values == "site_offset"
    assert offsets.sum() == len(sites) - 1
    posterior = solve(problem)
    run = summarize_global(case, posterior, config, (2006, 2012))
    reduction = run["uncertainty_reduction"].mean("year")
    assert float(reduction.sel(aggregate="Northern extratropics (30N-90N)")) > 0.1
    assert float(run["chi2_reduced"]) < 3


def test_emulator_prior_uses_its_interannual_error_and_correlation() -> None:
    time = np.array(["2020-01-01", "2020-02-01"], dtype="datetime64[ns]")
    prior = xr.Dataset(
        {
            "flux": (("time", "region"), np.zeros((2, 1))),
            "flux_sd": (("time", "region"), np.full((2, 1), 2.0)),
            "flux_sd_interannual": (("time", "region"), np.full((2, 1), 0.5), {"time_correlation_months": 1.45}),
        },
        coords={"time": time, "region": ["Europe"]},
    )
    sd, months = land_prior_sd(prior, RealConfig())
    assert months == 1.45 and np.all(sd == 0.5)
    sd, months = land_prior_sd(prior.drop_vars("flux_sd_interannual"), RealConfig(time_correlation_months=3.0))
    assert months == 3.0 and np.all(sd == 2.0)
