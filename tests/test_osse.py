"""Synthetic worlds: the posterior brackets the truth as often as it claims to."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from assim import solve
from assim.osse import OsseConfig, make_world, planted_anomaly, world_problem
from assim.posterior import annual_mean_weights, land_aggregates
from assim.state import StateVector, month_starts, transcom3_land_regions
from assim.transport import make_transport


@pytest.fixture(scope="module")
def setting():
    return transcom3_land_regions(), make_transport("box12")


def test_world_is_reproducible_and_plants_the_anomaly(setting) -> None:
    regions, transport = setting
    config = OsseConfig(start="2022-01", end="2024-12", seed=11)
    a, b = make_world(config, regions, transport), make_world(config, regions, transport)
    np.testing.assert_array_equal(a.obs["value"], b.obs["value"])
    state = StateVector(month_starts("2022-01", "2024-12"), regions)
    weights = annual_mean_weights(state, land_aggregates(regions)).sel(aggregate="Tropics (30S-30N)")
    planted = state.to_dataarray(planted_anomaly(state, config).ravel(), "anomaly")
    tropical = (weights * planted).sum(("time", "region"))
    np.testing.assert_allclose(tropical.values, [0.0, 1.5, 0.0], atol=1e-12)
    # observations rise with the fixed fossil source, as real CO2 does (about 2 ppm/yr)
    annual = a.obs["value"].groupby(a.obs["time"].dt.year).mean()
    assert 1.0 < float(annual.sel(year=2024) - annual.sel(year=2023)) < 4.0


def test_osse_calibration_over_seeded_worlds(setting) -> None:
    """Truth inside the 1-sigma interval 62-74 % and inside 2-sigma 91-98 % of the time (regional annual sinks)."""
    regions, transport = setting
    inside1 = inside2 = total = 0
    for seed in range(100):
        config = OsseConfig(start="2023-01", end="2024-12", seed=seed)
        world = make_world(config, regions, transport)
        post = solve(world_problem(world, config, regions, transport))
        weights = annual_mean_weights(post.state, land_aggregates(regions)).isel(aggregate=slice(0, 11))
        totals = post.aggregate(weights)
        truth = (weights * world.truth).sum(("time", "region"))
        z = np.abs((totals["mean"] - truth) / totals["sd"]).values.ravel()
        inside1 += int((z <= norm.ppf(0.8413)).sum())
        inside2 += int((z <= norm.ppf(0.97725)).sum())
        total += z.size
    print(f"coverage over {total} regional annual sinks: 1-sigma {inside1 / total:.3f}, 2-sigma {inside2 / total:.3f}")
    assert 0.62 <= inside1 / total <= 0.74, inside1 / total
    assert 0.91 <= inside2 / total <= 0.98, inside2 / total
