"""Error model and selection/averaging against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from observations import ObservationError, observation_dataset
from observations.errors import ErrorModel, add_mismatch, flag_outliers, summary, usable
from observations.selection import afternoon, local_solar_hour, mean_uncertainty, monthly_means, select


def obs(value, sigma, category, site=None, time=None, longitude=0.0):
    n = len(value)
    return observation_dataset(
        np.asarray(value, float),
        np.asarray(sigma, float),
        units="ppm",
        time=np.asarray(time if time is not None else ["2021-01-10"] * n, "datetime64[ns]"),
        latitude=10.0,
        longitude=longitude,
        altitude=0.0,
        site=np.asarray(site if site is not None else ["AAA"] * n),
        platform="surface",
        category=np.asarray(category),
        attrs={"source_file": "test"},
    )


def test_mismatch_by_category_adds_in_quadrature():
    ds = add_mismatch(obs([400, 401, 402], [0.3, 0.4, 0.1], ["mbl", "land", "tower"]))
    np.testing.assert_allclose(ds["uncertainty"], [np.hypot(0.3, 0.75), np.hypot(0.4, 2.5), np.hypot(0.1, 3.0)])
    np.testing.assert_allclose(ds["measurement_uncertainty"], [0.3, 0.4, 0.1])
    custom = add_mismatch(obs([400], [0.3], ["mbl"]), ErrorModel(mismatch={"mbl": 0.4}))
    np.testing.assert_allclose(custom["uncertainty"], 0.5)
    with pytest.raises(ObservationError, match="mismatch already added"):
        add_mismatch(ds)
    with pytest.raises(ObservationError, match=r"no model-data mismatch for categories \['ship'\]"):
        add_mismatch(obs([400], [0.3], ["ship"]))


def test_outliers_are_flagged_with_the_reason_and_never_dropped():
    ds = obs([400.0, 410.0, 403.0], [1.0, 1.0, 1.0], ["mbl"] * 3, site=["A", "A", "B"])
    flagged = flag_outliers(ds, simulated=[400.5, 400.0, 400.0], k_sigma=3.0)
    assert flagged.sizes["obs"] == 3 and flagged["flag"].values.tolist() == [0, 2, 0]  # 3.0 is not > 3.0
    assert flagged["flag_reason"].values[1] == "outlier: |obs - prior| = 10.00 ppm > 3 sigma = 3.00"
    table = summary(flagged).set_index(["site", "reason"])["count"]
    assert table.to_dict() == {("A", "outlier"): 1, ("A", "usable"): 1, ("B", "usable"): 1}
    assert usable(flagged).sizes["obs"] == 2


@pytest.mark.parametrize("rho", [0.0, 0.3, 1.0])
def test_error_of_the_mean_matches_the_covariance_sum(rho):
    sigma = np.array([0.2, 0.5, 0.3, 0.4])
    cov = rho * np.outer(sigma, sigma) + (1 - rho) * np.diag(sigma**2)
    expected = np.sqrt(np.ones(4) @ cov @ np.ones(4)) / 4  # w^T C w with w = 1/n
    assert mean_uncertainty(sigma, rho) == pytest.approx(expected)


def test_monthly_means_leave_flagged_out():
    times = ["2021-01-03", "2021-01-20", "2021-02-01", "2021-01-05"]
    ds = obs([400.0, 402.0, 405.0, 999.0], [1.0, 1.0, 1.0, 1.0], ["mbl"] * 4, time=times)
    ds = flag_outliers(ds, simulated=[400.0, 400.0, 405.0, 400.0])
    out = monthly_means(ds, correlation=0.0)
    np.testing.assert_allclose(out["value"], [401.0, 405.0])
    np.testing.assert_allclose(out["uncertainty"], [1.0 / np.sqrt(2), 1.0])
    assert out["n_values"].values.tolist() == [2, 1] and out.attrs["n_flagged_left_out"] == 1
    assert str(out["time_start"].values[0])[:10] == "2021-01-01"


def test_afternoon_applies_to_continental_sites_only():
    # 20 UTC at 105 W is 13:00 local solar time; 02 UTC is 19:00
    times = ["2021-07-01T20:00", "2021-07-02T02:00", "2021-07-02T02:00"]
    ds = obs([400.0, 401.0, 402.0], [0.5] * 3, ["tower", "tower", "mbl"], time=times, longitude=-105.0)
    np.testing.assert_allclose(local_solar_hour(ds), [13.0, 19.0, 19.0])
    assert afternoon(ds)["value"].values.tolist() == [400.0, 402.0]
    assert select(ds, start="2021-07-02", sites=["AAA"]).sizes["obs"] == 2
