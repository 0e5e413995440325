"""Super-observations against hand computations, the satellite operator, and the real OCO-2 sounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import observations
from assim.transport.xco2 import xco2_from_profile
from observations.superobs import superobs
from observations.synthetic import write_oco2_lite

LITE = Path(__file__).resolve().parent / "fixtures" / "oco2" / "oco2_LtCO2_210701_fixture.nc4"

# Five soundings on 3 levels: 0-2 in one 1-degree cell and day, 3 flagged (same cell), 4 in the next cell.
XCO2 = np.array([410.0, 411.0, 413.0, 450.0, 420.0])
SIGMA = np.array([0.5, 0.6, 0.9, 0.5, 0.7])
KERNEL = np.array([[0.4, 0.9, 1.1], [0.5, 1.0, 1.05], [0.3, 0.8, 1.2], [0.5, 1.0, 1.0], [0.6, 0.9, 1.0]])
WEIGHT = np.array([[0.2, 0.5, 0.3], [0.25, 0.45, 0.3], [0.1, 0.6, 0.3], [0.2, 0.5, 0.3], [0.3, 0.4, 0.3]])
APRIORI = np.array(
    [[400.0, 405.0, 408.0], [401.0, 404.0, 409.0], [399.0, 406.0, 407.0], [400, 405, 408], [402, 404, 406]]
)
PRESSURE = np.array([[1.0, 500.0, 1000.0], [1.0, 510.0, 990.0], [1.0, 490.0, 1010.0], [1, 500, 1000], [1, 500, 1000]])


@pytest.fixture
def soundings(tmp_path):
    path = write_oco2_lite(
        tmp_path / "oco2_LtCO2_hand.nc4",
        xco2=XCO2,
        time=np.array(
            [
                "2021-07-01T05:00:00",
                "2021-07-01T05:00:10",
                "2021-07-01T05:00:20",
                "2021-07-01T05:00:30",
                "2021-07-01T05:01",
            ],
            "datetime64[s]",
        ),
        latitude=np.array([30.1, 30.4, 30.7, 30.5, 31.2]),
        longitude=np.array([100.2, 100.3, 100.4, 100.3, 100.5]),
        averaging_kernel=KERNEL,
        pressure_weight=WEIGHT,
        apriori=APRIORI,
        pressure_levels=PRESSURE,
        uncertainty=SIGMA,
        quality_flag=np.array([0, 0, 0, 1, 0]),
    )
    return observations.read(path, keep_rejected=True)  # the flagged sounding is kept and must be left out


def test_cell_mean_and_uncertainty_with_independent_errors(soundings):
    out = superobs(soundings, correlation=0.0, floor_ppm=0.3, grid_deg=1.0, period="day")
    assert out.sizes["obs"] == 2 and out["n_soundings"].values.tolist() == [3, 1]
    assert out.attrs["n_flagged_left_out"] == 1
    assert float(out["value"][0]) == pytest.approx((410.0 + 411.0 + 413.0) / 3)
    # hand: sqrt((0.5^2 + 0.6^2 + 0.9^2) / 3^2 + 0.3^2)
    assert float(out["uncertainty"][0]) == pytest.approx(np.sqrt((0.25 + 0.36 + 0.81) / 9 + 0.09))
    assert float(out["uncertainty"][1]) == pytest.approx(np.sqrt(0.7**2 + 0.3**2))  # one sounding: its own error
    assert float(out["xco2_std"][0]) == pytest.approx(np.std([410.0, 411.0, 413.0], ddof=1))
    assert float(out["latitude"][0]) == pytest.approx(30.4) and float(out["longitude"][0]) == pytest.approx(100.3)
    assert out["time"].values[0] == np.datetime64("2021-07-01T05:00:10")
    assert out["time_start"].values[0] == np.datetime64("2021-07-01") and out.attrs["superob_error_correlation"] == 0


def test_correlated_errors_inflate_the_uncertainty(soundings):
    equal = soundings.assign(uncertainty=soundings["uncertainty"] * 0 + 0.6)
    rho, floor = 0.4, 0.2
    out = superobs(equal, correlation=rho, floor_ppm=floor)
    n_eff = 3 / (1 + 2 * rho)  # the n_eff form: n / (1 + (n - 1) rho)
    assert float(out["n_effective"][0]) == pytest.approx(n_eff)
    assert float(out["uncertainty"][0]) == pytest.approx(np.sqrt(0.6**2 / n_eff + floor**2))
    # unequal errors: var(mean) = 1' C 1 / n^2 with C_ij = rho s_i s_j off the diagonal, s_i^2 on it
    s = SIGMA[:3]
    cov = rho * np.outer(s, s) + (1 - rho) * np.diag(s**2)
    out = superobs(soundings, correlation=rho, floor_ppm=floor)
    assert float(out["uncertainty"][0]) == pytest.approx(np.sqrt(cov.sum() / 9 + floor**2))
    assert float(out["uncertainty"][0]) > float(superobs(soundings, correlation=0.0, floor_ppm=floor)["uncertainty"][0])


def test_kernel_weights_and_apriori_are_averaged_by_hand(soundings):
    out = superobs(soundings, correlation=0.0)
    w, a, ca = WEIGHT[:3], KERNEL[:3], APRIORI[:3]
    for k in range(3):
        weight = (w[0, k] + w[1, k] + w[2, k]) / 3
        kernel = (w[0, k] * a[0, k] + w[1, k] * a[1, k] + w[2, k] * a[2, k]) / 3 / weight
        prior_weights = [w[i, k] * (1 - a[i, k]) for i in range(3)]
        apriori = sum(p * ca[i, k] for i, p in enumerate(prior_weights)) / sum(prior_weights)
        assert float(out["pressure_weight"][0, k]) == pytest.approx(weight)
        assert float(out["xco2_averaging_kernel"][0, k]) == pytest.approx(kernel)
        assert float(out["co2_profile_apriori"][0, k]) == pytest.approx(apriori)
        assert float(out["pressure_levels"][0, k]) == pytest.approx(PRESSURE[:3, k].mean())
    assert float(out["pressure_weight"][0].sum()) == pytest.approx(1.0)


def test_operator_on_a_superob_is_the_mean_of_the_operator_on_its_soundings(soundings):
    out = superobs(soundings, correlation=0.5)
    usable = soundings.isel(obs=[0, 1, 2])
    for profile in (np.array([395.0, 402.0, 415.0]), np.array([410.0, 410.0, 410.0])):
        each = xco2_from_profile(usable, np.tile(profile, (3, 1)))
        assert xco2_from_profile(out, np.tile(profile, (2, 1)))[0] == pytest.approx(each.mean(), abs=1e-9)


def test_cells_by_a_region_coord_and_month(soundings):
    regional = soundings.assign_coords(region=("obs", np.array(["east", "east", "west", "east", "west"])))
    out = superobs(regional, correlation=0.0, grid_deg=None, period="month", by=("region",))
    assert out["region"].values.tolist() == ["east", "west"] and out["n_soundings"].values.tolist() == [2, 2]
    assert out["time_end"].values[0] == np.datetime64("2021-08-01")


def test_bad_requests_raise(soundings):
    with pytest.raises(observations.ObservationError, match=r"correlation must be in \[0, 1\]"):
        superobs(soundings, correlation=1.5)
    with pytest.raises(observations.ObservationError, match=r"period must be one of"):
        superobs(soundings, correlation=0.0, period="week")
    with pytest.raises(observations.ObservationError, match=r"super-obbing needs \['xco2_averaging_kernel'"):
        superobs(soundings.drop_vars("xco2_averaging_kernel"), correlation=0.0)


def test_lite_fixture_with_real_kernels():
    ds = observations.read(LITE)  # 10 soundings with the real sounding's kernel, one flagged (left out by the reader)
    out = superobs(ds, correlation=0.2, grid_deg=2.0)
    assert out.sizes["obs"] == 1 and int(out["n_soundings"][0]) == 9
    assert float(out["value"][0]) == pytest.approx(ds["value"].values.mean())
    profile = np.linspace(390.0, 412.0, ds.sizes["level"])
    each = xco2_from_profile(ds, np.tile(profile, (9, 1)))
    assert xco2_from_profile(out, profile[None, :])[0] == pytest.approx(each.mean(), abs=1e-9)


@pytest.mark.realdata
def test_real_oco2_sounding_is_its_own_superob(shared_data):
    ds = observations.read(
        shared_data / "satellite_xco2" / "oco2-spectrometer_oco2_20150131-336_co2-column.nc", kind="oco2"
    )
    out = superobs(ds, correlation=0.5, floor_ppm=0.5)
    assert float(out["value"][0]) == pytest.approx(float(ds["value"][0]), abs=1e-12)
    assert float(out["uncertainty"][0]) == pytest.approx(np.hypot(float(ds["uncertainty"][0]), 0.5))
    for name in ("xco2_averaging_kernel", "pressure_weight", "co2_profile_apriori", "pressure_levels"):
        np.testing.assert_allclose(out[name].values, ds[name].values, rtol=1e-10, err_msg=name)
    profile = ds["co2_profile_apriori"].values + 3.0
    np.testing.assert_allclose(xco2_from_profile(out, profile), xco2_from_profile(ds, profile), rtol=1e-12)
