"""LandFluxEmulator and its skill metrics on small synthetic worlds with a known answer (plus real-data checks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from priors import land_flux_prior
from priors.emulator import (
    EmulatorError,
    LandFluxEmulator,
    StaleEmulatorError,
    _stump_tables,
    annual_mean_sd,
    design_matrix,
    interannual_error,
)
from priors.prior import covered_temperature_drivers
from priors.skill import (
    annual_anomaly,
    annual_coverage,
    apparent_temperature_sensitivity,
    iav_correlation,
    linear_baseline_cv,
    sensitivities,
    skill_scores,
)
from priors.teachers import TRANSCOM3_LAND_REGIONS
from priors.towers import VEGETATION_GROUPS, TowerNEEEmulator, heat_drought_response, heldout_site_skill, tower_table

REGIONS = ["north", "tropics"]
SMALL = {
    "n_members": 3,
    "max_iter": 60,
    "learning_rate": 0.1,
    "min_samples_leaf": 10,
    "smoothing_months": 3,
    "enso_lags": (0, 3),
    "temperature_drivers": ("gistemp_global",),
}


@pytest.fixture(autouse=True, scope="module")
def one_openmp_thread():
    """Small fits on a shared 2-core machine: OpenMP threads only add overhead."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def synthetic_drivers(n_years: int = 24, seed: int = 0, temperature_noise: float = 0.1) -> xr.Dataset:
    """Monthly ONI (AR(1)), temperature (trend + AR(1) noise) and CO2 (trend), with one spin-up year."""
    rng = np.random.default_rng(seed)
    n = 12 * (n_years + 1)
    oni = np.zeros(n)
    for t in range(1, n):
        oni[t] = 0.9 * oni[t - 1] + 0.4 * rng.normal()
    time = pd.date_range("1979-01", periods=n, freq="MS").to_numpy("datetime64[ns]")
    return xr.Dataset(
        {
            "oni": ("time", oni, {"units": "K"}),
            "gistemp_global": (
                "time",
                0.015 * np.arange(n) / 12 + temperature_noise * ar1(rng, (n,), 6.0),
                {"units": "K"},
            ),
            "co2": ("time", 337 + 1.8 * np.arange(n) / 12, {"units": "ppm"}),
        },
        coords={"time": time},
    )


def synthetic_teachers(drivers: xr.Dataset, n_models: int = 4, seed: int = 1) -> xr.DataArray:
    """Flux = seasonal cycle + CO2 trend + 0.8 PgC/yr per K of ONI three months earlier (tropics only)
    + model offsets and noise."""
    rng = np.random.default_rng(seed)
    time = drivers["time"].values[12:]
    month = pd.DatetimeIndex(time).month.to_numpy()
    co2 = drivers["co2"].values[12:]
    oni_lag3 = drivers["oni"].values[9:-3]
    north = 3 * np.cos(2 * np.pi * (month - 1) / 12) - 0.01 * (co2 - 337)
    tropics = -0.5 - 0.005 * (co2 - 337) + 0.8 * oni_lag3
    signal = np.stack([north, tropics], axis=1)
    noise = 0.3 * rng.normal(size=(n_models, *signal.shape)) + 0.2 * rng.normal(size=(n_models, 1, 2))
    return xr.DataArray(
        signal[None] + noise,
        dims=("model", "time", "region"),
        coords={"model": [f"m{i}" for i in range(n_models)], "time": time, "region": REGIONS},
        attrs={"units": "PgC yr-1"},
    )


@pytest.fixture(scope="module")
def world():
    drivers = synthetic_drivers()
    teachers = synthetic_teachers(drivers)
    emulator = LandFluxEmulator(**SMALL, random_state=0).fit(drivers, teachers)
    return drivers, teachers, emulator


def test_compiled_stump_tables_reproduce_sklearn_predictions() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    models = [
        [
            HistGradientBoostingRegressor(max_depth=1, max_iter=40, random_state=i + r).fit(
                X[i::2], np.sin(X[i::2, r]) + X[i::2, 2] ** 2
            )
            for r in range(3)
        ]
        for i in range(2)
    ]
    thresholds, tables, intercept = _stump_tables(models, X.shape[1])
    X_new = rng.normal(size=(50, 4))
    compiled = intercept[None] + sum(
        table[np.searchsorted(thr, X_new[:, f], side="left")]
        for f, (thr, table) in enumerate(zip(thresholds, tables, strict=True))
    )
    expected = np.stack([[m.predict(X_new) for m in member] for member in models])  # member, region, row
    np.testing.assert_allclose(compiled, expected.transpose(2, 0, 1), rtol=1e-10, atol=1e-10)


def test_emulator_learns_the_planted_enso_response(world) -> None:
    drivers, teachers, emulator = world
    prediction = emulator.predict(drivers)
    assert prediction["flux"].dims == ("time", "region") and prediction["flux"].attrs["units"] == "PgC yr-1"
    truth = teachers.mean("model")
    # the tropical anomaly (ONI 3 months earlier, sd ~0.9 K x 0.8 PgC/yr/K) is recovered, not just the mean
    assert float(xr.corr(prediction["flux"].sel(region="tropics"), truth.sel(region="tropics"))) > 0.85
    # +1 K of ENSO: the tropics respond by ~0.8 PgC/yr (stumps saturate at the edges of the range)
    time = drivers["time"].values[60:-60]
    per_k = sensitivities(emulator, drivers, time, el_nino_k=1.0)["flux_el_nino"]
    assert 0.4 < float(per_k.sel(region="tropics")) < 1.0
    assert abs(float(per_k.sel(region="north"))) < 0.2


def test_sd_combines_spread_and_error_and_is_positive(world) -> None:
    drivers, _, emulator = world
    sd = emulator.predict(drivers)["flux_sd"]
    assert (sd > 0).all()
    # between-model sd of the teachers (0.3 noise, 0.2 offsets) is ~0.36: the sd is of that order
    assert 0.2 < float(sd.mean()) < 1.0
    assert emulator.dgvm_spread_.shape == emulator.model_error_.shape == (12, 2)


def test_params_unchanged_by_fit_and_clone_works(world) -> None:
    _, _, emulator = world
    assert emulator.get_params() == LandFluxEmulator(**SMALL, random_state=0).get_params()
    assert not hasattr(clone(emulator), "tables_")


def test_save_load_round_trip_without_pickle(world, tmp_path) -> None:
    drivers, _, emulator = world
    path = emulator.save(tmp_path / "new" / "cache" / "emulator.npz")  # missing folders are created
    with np.load(path, allow_pickle=False) as npz:
        assert "meta" in npz.files
    loaded = LandFluxEmulator.load(path)
    xr.testing.assert_identical(loaded.predict(drivers), emulator.predict(drivers))
    assert loaded.get_params() == emulator.get_params()
    np.savez(tmp_path / "old.npz", meta=np.array('{"format": "priors.LandFluxEmulator/1"}'))
    with pytest.raises(StaleEmulatorError, match=r"old\.npz.*re-train"):
        LandFluxEmulator.load(tmp_path / "old.npz")
    (tmp_path / "other.npz").write_bytes(b"not a zip")
    with pytest.raises(EmulatorError, match=r"other\.npz"):
        LandFluxEmulator.load(tmp_path / "other.npz")


def test_predict_ensemble_mean_is_predict(world) -> None:
    drivers, _, emulator = world
    members = emulator.predict_ensemble(drivers)
    assert members.sizes["member"] == SMALL["n_members"]
    # float32 arithmetic inside prediction: agreement to float32 rounding
    np.testing.assert_allclose(members.mean("member").values, emulator.predict(drivers)["flux"].values, rtol=1e-6)


def test_drivers_too_short_for_the_lags_raise_naming_months(world) -> None:
    drivers, _, emulator = world
    with pytest.raises(EmulatorError, match=r"need them from 1978-10"):
        design_matrix(drivers, drivers["time"].values[:5], (0, 3), (0,), ("gistemp_global",))
    with pytest.raises(EmulatorError, match=r"lack \['co2'\]"):
        emulator.predict(drivers.drop_vars("co2"))


def test_wrong_teacher_units_are_refused() -> None:
    drivers = synthetic_drivers(4)
    teachers = synthetic_teachers(drivers).assign_attrs(units="GtC month-1")
    with pytest.raises(EmulatorError, match="units"):
        LandFluxEmulator(**SMALL).fit(drivers, teachers)


def test_annual_anomaly_removes_a_linear_trend_exactly() -> None:
    time = pd.date_range("2000-01", "2009-12", freq="MS")
    year = time.year.to_numpy()
    wiggle = np.array([1.0, -1, 2, 0, -2, 1, 0, 0, -1, 0])
    series = xr.DataArray(0.3 * (year - 2000) + wiggle[year - 2000] - wiggle.mean(), dims="time", coords={"time": time})
    anomaly = annual_anomaly(series)
    t = np.arange(10)
    expected = wiggle - np.polyval(np.polyfit(t, wiggle, 1), t)
    np.testing.assert_allclose(anomaly.values, expected, atol=1e-12)
    assert float(iav_correlation(series, 2 * series + 5)) == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore:Polyfit may be poorly conditioned")  # one month: no IAV to score
def test_coverage_counts_models_within_one_and_two_sd() -> None:
    time = pd.date_range("2001-01", periods=1, freq="MS")
    prediction = xr.Dataset(
        {"flux": (("time", "region"), [[0.0]]), "flux_sd": (("time", "region"), [[1.0]])},
        coords={"time": time, "region": ["r"]},
    )
    teachers = xr.DataArray(
        [[[0.5]], [[-1.5]], [[3.0]], [[0.9]]],
        dims=("model", "time", "region"),
        coords={"model": list("abcd"), "time": time, "region": ["r"]},
    )
    scores = skill_scores(prediction, teachers)
    assert float(scores["coverage_1sigma"].sel(region="r")) == 0.5  # 0.5 and 0.9 of 4
    assert float(scores["coverage_2sigma"].sel(region="r")) == 0.75  # and -1.5
    assert float(scores["bias"].sel(region="r")) == pytest.approx(-(0.5 - 1.5 + 3.0 + 0.9) / 4)


def test_linear_baseline_is_exact_when_the_world_is_linear() -> None:
    drivers = synthetic_drivers(12)
    time = drivers["time"].values[12:]
    annual = drivers.sel(time=time).groupby("time.year").mean()
    flux_by_year = 2.0 * annual["gistemp_global"] - 0.5 * annual["oni"] + 0.01 * annual["co2"]
    values = flux_by_year.sel(year=pd.DatetimeIndex(time).year.to_numpy()).values
    teachers = xr.DataArray(
        values[None, :, None], dims=("model", "time", "region"), coords={"model": ["m"], "time": time, "region": ["r"]}
    )
    np.testing.assert_allclose(linear_baseline_cv(drivers, teachers).values, values, atol=1e-9)


@pytest.mark.realdata
def test_land_flux_prior_contract(shared_data, tmp_path) -> None:
    path = tmp_path / "emulator.npz"
    prior = land_flux_prior("2015-01", "2024-12", data_dir=shared_data, model_path=path)
    assert path.exists()
    assert prior["flux"].dims == ("time", "region") and prior["flux_sd"].dims == ("time", "region")
    assert prior["time"].dtype == np.dtype("datetime64[ns]") and prior.sizes["time"] == 120
    assert list(prior["region"].values) == list(TRANSCOM3_LAND_REGIONS)
    for name in ("flux", "flux_sd"):
        assert prior[name].attrs["units"] == "PgC yr-1" and "positive to the atmosphere" in prior[name].attrs["sign"]
    assert {"prior_source", "training_years", "teacher_models", "software_version"} <= set(prior.attrs)
    assert (prior["flux_sd"] > 0).all()
    # the annual-scale error model for B: shorter than a year, smaller than the seasonal-cycle-dominated sd
    assert 0 < prior["flux_sd_interannual"].attrs["time_correlation_months"] < 12
    assert (prior["flux_sd_interannual"] < prior["flux_sd"]).mean() > 0.9
    annual_sink = -prior["flux"].sum("region").groupby("time.year").mean()
    assert ((annual_sink > -1) & (annual_sink < 4)).all()  # a net land sink of the TRENDY-v9 S3 kind
    again = land_flux_prior("2015-01", "2024-12", data_dir=shared_data, model_path=path)  # loads, same answer
    xr.testing.assert_allclose(again.drop_attrs(), prior.drop_attrs())
    assert prior.attrs["drivers"] == "gistemp_global gistemp_nh gistemp_sh gistemp_tropics oni co2"
    # past the end of the hemispheric GISTEMP files (2025-02) the prior drops them and re-trains
    later = land_flux_prior("2024-01", "2025-12", data_dir=shared_data, model_path=path)
    assert later.attrs["drivers"] == "gistemp_global gistemp_tropics oni co2" and later.sizes["time"] == 24
    assert LandFluxEmulator.load(path).temperature_drivers == ("gistemp_global", "gistemp_tropics")


@pytest.mark.realdata
def test_temperature_drivers_past_their_files_are_dropped(shared_data) -> None:
    everything = ("gistemp_global", "gistemp_nh", "gistemp_sh", "gistemp_tropics")
    assert covered_temperature_drivers("1958-12", "2025-02", shared_data) == everything
    # hemispheric monthly files end 2025-02, the zonal annual file (tropics) with 2025
    assert covered_temperature_drivers("2024-01", "2025-03", shared_data) == ("gistemp_global", "gistemp_tropics")
    assert covered_temperature_drivers("2025-01", "2026-01", shared_data) == ("gistemp_global",)


def synthetic_tower_table(n_sites: int = 12, seed: int = 0) -> pd.DataFrame:
    """Site-months where uptake rises with light and falls with VPD, twice as VPD-sensitive in savannas."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(n_sites):
        igbp = "SAV" if s % 2 else "EBF"
        month = np.tile(np.arange(1, 13), 3)
        sw_in = 200 + 80 * np.cos(2 * np.pi * (month - 1) / 12) + 20 * rng.normal(size=month.size)
        vpd = np.clip(10 + 5 * rng.normal(size=month.size), 0, None)
        nee = -0.02 * sw_in + (0.2 if igbp == "SAV" else 0.1) * vpd + 0.1 * rng.normal(size=month.size)
        frames.append(
            pd.DataFrame(
                {
                    "site": f"S{s}",
                    "igbp": igbp,
                    "month": month,
                    "ta": 25 + rng.normal(size=month.size),
                    "vpd": vpd,
                    "precip": rng.gamma(2.0, 1.5, month.size),
                    "sw_in": sw_in,
                    "swc": rng.uniform(10, 30, month.size),
                    "nee": nee,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_tower_emulator_generalises_to_unseen_sites_and_ranks_vpd_sensitivity() -> None:
    table = synthetic_tower_table()
    emulator = TowerNEEEmulator(max_iter=100, learning_rate=0.1, min_samples_leaf=10, random_state=0)
    skill = heldout_site_skill(emulator, table, n_splits=3)
    assert skill.loc["all", "r2"] > 0.7 and skill.loc["all", "sites"] == 12
    response = heat_drought_response(emulator.fit(table), table)
    # VPD x 1.5 (mean VPD ~10 hPa -> +5 hPa): +1.0 gC m-2 d-1 in savannas, +0.5 in rainforest (less uptake)
    savanna, forest = response.loc["savanna and grassland"], response.loc["evergreen broadleaf forest"]
    assert savanna["heat_delta_nee"] > forest["heat_delta_nee"] > 0
    assert savanna["heat_delta_nee"] == pytest.approx(1.0, abs=0.4)


@pytest.mark.realdata
def test_real_tower_table_reads_every_site(shared_data) -> None:
    table = tower_table(shared_data)
    assert table["site"].nunique() > 150 and set(VEGETATION_GROUPS["savanna and grassland"]) <= set(table["igbp"])
    assert table["nee"].between(-20, 20).all()  # gC m-2 d-1, monthly means


def test_apparent_sensitivity_recovers_a_planted_slope_despite_trends() -> None:
    years = np.arange(1980, 2000)
    rng = np.random.default_rng(5)
    temperature = xr.DataArray(
        0.02 * (years - 1980) + 0.2 * rng.normal(size=years.size), dims="year", coords={"year": years}
    )
    time = pd.date_range("1980-01", "1999-12", freq="MS")
    annual_flux = 3.5 * temperature.values - 0.05 * (years - 1980)  # warm years: weaker sink, plus a trend
    flux = xr.DataArray(np.repeat(annual_flux, 12), dims="time", coords={"time": time})
    assert apparent_temperature_sensitivity(flux, temperature) == pytest.approx(3.5, rel=1e-9)


def ar1(rng: np.random.Generator, shape: tuple[int, ...], length: float) -> np.ndarray:
    """Unit-variance AR(1) series along axis -1 with correlation exp(-|lag| / length)."""
    phi = np.exp(-1 / length)
    x = np.empty(shape)
    x[..., 0] = rng.normal(size=shape[:-1])
    for t in range(1, shape[-1]):
        x[..., t] = phi * x[..., t - 1] + np.sqrt(1 - phi**2) * rng.normal(size=shape[:-1])
    return x


def test_annual_mean_sd_matches_limits_and_sampled_ar1() -> None:
    sd = np.full((1, 12, 1), 2.0)
    assert annual_mean_sd(sd, 1e-6)[0, 0] == pytest.approx(2.0 / np.sqrt(12))  # independent months
    assert annual_mean_sd(sd, 1e9)[0, 0] == pytest.approx(2.0, rel=1e-6)  # one shared error
    sampled = 2.0 * ar1(np.random.default_rng(0), (20_000, 12), 4.0)
    assert annual_mean_sd(sd, 4.0)[0, 0] == pytest.approx(sampled.mean(axis=1).std(), rel=0.03)


def test_interannual_error_separates_a_persistent_seasonal_error_and_recovers_the_rest() -> None:
    """Residual = each model's own seasonal shape (1 PgC/yr, repeats every year) + AR(1) of sd 0.3, length 4."""
    rng = np.random.default_rng(1)
    n_models, n_years, n_regions = 4, 300, 2
    phase = rng.integers(12, size=(n_models, 1, 1, n_regions))
    seasonal = np.cos(2 * np.pi * (np.arange(12)[None, None, :, None] - phase) / 12)  # model, 1, month, region
    noise = 0.3 * ar1(rng, (n_models, n_regions, n_years * 12), 4.0)
    residual = seasonal + noise.reshape(n_models, n_regions, n_years, 12).transpose(0, 2, 3, 1)
    rms, scale, length = interannual_error(residual, np.zeros((n_years, 12, n_regions)))
    np.testing.assert_allclose(rms, 0.3, rtol=0.1)  # the seasonal shape is not in it
    assert length == pytest.approx(4.0, rel=0.15)
    assert scale == pytest.approx(1.0, abs=0.1)  # AR(1) is exponential: already calibrated


def test_annual_coverage_of_a_calibrated_prior_is_gaussian() -> None:
    rng = np.random.default_rng(2)
    n_years, length = 300, 3.0
    time = pd.date_range("1700-01", periods=12 * n_years, freq="MS")
    sd = 0.4 + 0.2 * np.cos(2 * np.pi * time.month.to_numpy() / 12)[:, None] * np.ones((1, 2))
    teachers = xr.DataArray(
        sd[None] * ar1(rng, (4, 2, time.size), length).transpose(0, 2, 1),
        dims=("model", "time", "region"),
        coords={"model": list("abcd"), "time": time, "region": REGIONS},
    )
    prediction = xr.Dataset(
        {"flux": (("time", "region"), np.zeros(sd.shape)), "flux_sd_interannual": (("time", "region"), sd)},
        coords={"time": time, "region": REGIONS},
    )
    with pytest.raises(EmulatorError, match="time_correlation_months"):
        annual_coverage(prediction, teachers)
    prediction["flux_sd_interannual"].attrs["time_correlation_months"] = length
    coverage = annual_coverage(prediction, teachers)
    np.testing.assert_allclose(coverage["annual_coverage_1sigma"], 0.683, atol=0.04)
    np.testing.assert_allclose(coverage["annual_coverage_2sigma"], 0.954, atol=0.02)


def test_linear_part_extrapolates_a_planted_temperature_response() -> None:
    """Flux = 1.5 PgC/yr per K of temperature (tropics): +1 K, beyond most of the training range, gives ~1.5."""
    drivers = synthetic_drivers(temperature_noise=0.3)
    teachers = synthetic_teachers(drivers)
    warm = 1.5 * drivers["gistemp_global"].values[12:]
    teachers = teachers + xr.DataArray(np.stack([0 * warm, warm], axis=1), dims=("time", "region"))
    emulator = LandFluxEmulator(**SMALL, random_state=0).fit(drivers, teachers.assign_attrs(units="PgC yr-1"))
    per_k = sensitivities(emulator, drivers, drivers["time"].values[24:-24])["flux_per_K_warming"]
    assert float(per_k.sel(region="tropics")) == pytest.approx(1.5, abs=0.3)
    assert abs(float(per_k.sel(region="north"))) < 0.3


def test_warming_perturbs_every_temperature_driver_including_an_annual_step() -> None:
    """Flux = 1.5 PgC/yr per K of global T + 1.0 per K of an independent tropical band that changes only
    once a year (annual means as a monthly step): +1 K on both gives ~2.5 in the tropics."""
    drivers = synthetic_drivers(temperature_noise=0.3)
    rng = np.random.default_rng(5)
    n_years = drivers.sizes["time"] // 12
    drivers["gistemp_tropics"] = ("time", np.repeat(0.4 * rng.normal(size=n_years), 12), {"units": "K"})
    warm = 1.5 * drivers["gistemp_global"].values[12:] + 1.0 * drivers["gistemp_tropics"].values[12:]
    teachers = synthetic_teachers(drivers)
    teachers = teachers + xr.DataArray(np.stack([0 * warm, warm], axis=1), dims=("time", "region"))
    params = SMALL | {"temperature_drivers": ("gistemp_global", "gistemp_tropics")}
    emulator = LandFluxEmulator(**params, random_state=0).fit(drivers, teachers.assign_attrs(units="PgC yr-1"))
    per_k = sensitivities(emulator, drivers, drivers["time"].values[24:-24])["flux_per_K_warming"]
    assert float(per_k.sel(region="tropics")) == pytest.approx(2.5, abs=0.4)
    assert abs(float(per_k.sel(region="north"))) < 0.3


def test_threaded_chunked_prediction_equals_one_thread(world) -> None:
    drivers, _, emulator = world
    n = 5000  # several chunks of 2048 months
    tiled = drivers.isel(time=np.arange(n) % drivers.sizes["time"]).assign_coords(
        time=pd.date_range("1000-01", periods=n, freq="MS").to_numpy("datetime64[ns]")
    )
    fitted = {k: v for k, v in vars(emulator).items() if k.endswith("_") or k == "_compiled"}
    one, two = (clone(emulator).set_params(n_jobs=n_jobs) for n_jobs in (1, 2))
    for copy in (one, two):
        copy.__dict__.update(fitted)
    xr.testing.assert_identical(one.predict(tiled), two.predict(tiled))
