"""Skill of the emulator on years it never saw: blocked cross-validation, calibration, a linear baseline,
the 2020-2024 extrapolation and the sensitivities to warming and to El Nino.

Definitions (used by ``benchmarks/emulator.py`` and ``docs/emulator.md``):

* **Blocked cross-validation by year**: the training years are cut into consecutive blocks of
  ``block_years``; each block is held out in turn (never random months) and predicted by an
  emulator fitted on the others.
* **IAV correlation**: Pearson correlation of the *annual* flux anomalies (annual means,
  each series linearly detrended over the years compared) of the prediction and of the DGVM
  mean; per region and for the global land total.
* **RMSE / bias**: of the monthly prediction against the DGVM mean (PgC/yr).
* **Coverage**: share of the individual DGVMs' held-out monthly region fluxes within 1 and 2
  predicted sd of the prediction (a calibrated Gaussian gives 68.3 % and 95.4 %).
* **Linear baseline**: ordinary least squares of the annual global flux on annual-mean global
  temperature, ENSO index and CO2, scored in leave-one-year-out.

Signs: fluxes positive to the atmosphere (PgC/yr); :func:`extrapolation` reports the land
*sink* (positive uptake) because it compares with the Global Carbon Budget table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from sklearn.base import clone
from sklearn.linear_model import LinearRegression

from priors.emulator import (
    CO2_DRIVER,
    ENSO_DRIVER,
    TEMPERATURE_DRIVER,
    EmulatorError,
    LandFluxEmulator,
    annual_mean_sd,
)

__all__ = [
    "annual_anomaly",
    "annual_coverage",
    "apparent_temperature_sensitivity",
    "blocked_cross_validation",
    "extrapolation",
    "iav_correlation",
    "linear_baseline_cv",
    "sensitivities",
    "skill_scores",
]

GLOBAL = "Global land"


def annual_anomaly(monthly: xr.DataArray) -> xr.DataArray:
    """Annual means of a (time, ...) series minus their least-squares linear trend over the years."""
    annual = monthly.groupby("time.year").mean("time")
    fit = annual.polyfit("year", deg=1)["polyfit_coefficients"]
    return annual - xr.polyval(annual["year"], fit)


def iav_correlation(prediction: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """Correlation over years of :func:`annual_anomaly` of two monthly series (time[, region])."""
    return xr.corr(annual_anomaly(prediction), annual_anomaly(truth), dim="year")


def blocked_cross_validation(
    emulator: LandFluxEmulator, drivers: xr.Dataset, flux: xr.DataArray, block_years: int = 5
) -> xr.Dataset:
    """Held-out predictions for every training month, one block of consecutive years at a time.

    Parameters
    ----------
    emulator : LandFluxEmulator
        Unfitted template (cloned for each block).
    drivers : Dataset (time)
        Covering ``flux.time`` and the lag history before it.
    flux : DataArray (model, time, region), PgC yr-1
        Teacher fluxes.
    block_years : int
        Length of each held-out block.

    Returns
    -------
    Dataset (time, region)
        ``flux`` and ``flux_sd`` predicted by emulators that did not see that year; the
        ``time_correlation_months`` attribute of ``flux_sd_interannual`` is the mean over the folds.
    """
    years = pd.DatetimeIndex(flux["time"].values).year.to_numpy()
    unique = np.unique(years)
    parts, lengths = [], []
    for start in range(0, unique.size, block_years):
        held = np.isin(years, unique[start : start + block_years])
        model = clone(emulator).fit(drivers, flux.isel(time=~held))
        parts.append(model.predict(drivers, time=flux["time"].values[held]))
        lengths.append(model.time_correlation_months_)
    heldout = xr.concat(parts, dim="time").sortby("time")
    heldout["flux_sd_interannual"].attrs["time_correlation_months"] = float(np.mean(lengths))
    return heldout


def skill_scores(prediction: xr.Dataset, flux: xr.DataArray) -> xr.Dataset:
    """IAV correlation, RMSE, bias and 1/2-sigma coverage per region and for the global total.

    Parameters
    ----------
    prediction : Dataset (time, region)
        ``flux`` and ``flux_sd`` (held-out, e.g. from :func:`blocked_cross_validation`).
    flux : DataArray (model, time, region)
        Teacher fluxes on the same months.

    Returns
    -------
    Dataset (region)
        ``iav_corr``, ``rmse`` and ``bias`` (PgC/yr) against the DGVM mean, ``coverage_1sigma``
        and ``coverage_2sigma`` of the individual DGVM values; ``region`` ends with
        ``"Global land"`` (the sum of the regions; its coverage is left NaN because the
        regional sd do not give the sd of the sum).
    """
    flux = flux.sel(time=prediction["time"])
    dgvm_mean = flux.mean("model")
    mu, sd = prediction["flux"], prediction["flux_sd"]
    with_global = {
        "prediction": xr.concat([mu, mu.sum("region").expand_dims(region=[GLOBAL])], dim="region"),
        "truth": xr.concat([dgvm_mean, dgvm_mean.sum("region").expand_dims(region=[GLOBAL])], dim="region"),
    }
    error = with_global["prediction"] - with_global["truth"]
    z = np.abs(flux - mu) / sd
    valid = flux.notnull()
    coverage = {k: ((z <= k) & valid).sum(("model", "time")) / valid.sum(("model", "time")) for k in (1, 2)}
    nan_global = xr.DataArray([np.nan], dims="region", coords={"region": [GLOBAL]})
    units = {"units": "PgC yr-1"}
    return xr.Dataset(
        {
            "iav_corr": iav_correlation(with_global["prediction"], with_global["truth"]),
            "rmse": np.sqrt((error**2).mean("time")).assign_attrs(units),
            "bias": error.mean("time").assign_attrs(units),
            "coverage_1sigma": xr.concat([coverage[1], nan_global], dim="region"),
            "coverage_2sigma": xr.concat([coverage[2], nan_global], dim="region"),
        }
    )


def annual_coverage(prediction: xr.Dataset, flux: xr.DataArray) -> xr.Dataset:
    """Coverage of the individual DGVMs' annual-mean region fluxes by the annual-scale prior sd.

    The annual sd combines the monthly ``flux_sd_interannual`` with the exponential time
    correlation of length ``flux_sd_interannual.attrs["time_correlation_months"]``
    (:func:`priors.emulator.annual_mean_sd`), i.e. the annual-mean block of an inversion's B
    built from them.

    Parameters
    ----------
    prediction : Dataset (time, region)
        Held-out ``flux`` and ``flux_sd_interannual`` over whole calendar years (January to December).
    flux : DataArray (model, time, region)
        Teacher fluxes.

    Returns
    -------
    Dataset (region)
        ``annual_coverage_1sigma``, ``annual_coverage_2sigma`` (a calibrated Gaussian gives 0.683
        and 0.954) and ``annual_sd`` (PgC yr-1, mean over years).
    """
    sd_name = "flux_sd_interannual"
    length = prediction[sd_name].attrs.get("time_correlation_months") if sd_name in prediction else None
    if length is None:
        raise EmulatorError(f"prediction has no {sd_name} with a time_correlation_months attribute; use the emulator")
    month = prediction["time"].dt.month.values
    if month.size % 12 or not (month.reshape(-1, 12) == np.arange(1, 13)).all():
        raise EmulatorError("annual coverage needs whole calendar years (January..December) in the prediction")
    n_years, n_regions = month.size // 12, prediction.sizes["region"]
    shape = (n_years, 12, n_regions)
    residual = (flux.sel(time=prediction["time"]) - prediction["flux"]).transpose("model", "time", "region").values
    annual_error = residual.reshape(-1, *shape).mean(axis=2)
    sd = annual_mean_sd(prediction[sd_name].transpose("time", "region").values.reshape(shape), float(length))
    z = np.abs(annual_error) / sd[None]
    valid = np.isfinite(z)
    coverage = {k: ((z <= k) & valid).sum(axis=(0, 1)) / valid.sum(axis=(0, 1)) for k in (1, 2)}
    region = {"region": prediction["region"].values}
    return xr.Dataset(
        {
            "annual_coverage_1sigma": ("region", coverage[1]),
            "annual_coverage_2sigma": ("region", coverage[2]),
            "annual_sd": ("region", sd.mean(axis=0), {"units": "PgC yr-1"}),
        },
        coords=region,
        attrs={"time_correlation_months": float(length)},
    )


def linear_baseline_cv(drivers: xr.Dataset, flux: xr.DataArray) -> xr.DataArray:
    """Leave-one-year-out OLS of the global annual flux on annual temperature, ENSO and CO2.

    Returns
    -------
    DataArray (time)
        The held-out prediction of each year's global flux (PgC/yr), repeated over its months
        (so :func:`iav_correlation` applies unchanged).
    """
    time = flux["time"].values
    years = pd.DatetimeIndex(time).year.to_numpy()
    features = pd.DataFrame(
        {name: drivers[name].sel(time=time).values for name in (TEMPERATURE_DRIVER, ENSO_DRIVER, CO2_DRIVER)}
    )
    X = features.groupby(years).mean().to_numpy()
    y = pd.Series(flux.mean("model").sum("region").values).groupby(years).mean().to_numpy()
    held_out = np.array(
        [LinearRegression().fit(np.delete(X, i, 0), np.delete(y, i)).predict(X[i : i + 1])[0] for i in range(y.size)]
    )
    return xr.DataArray(held_out[np.searchsorted(np.unique(years), years)], dims="time", coords={"time": time})


def extrapolation(emulator: LandFluxEmulator, drivers: xr.Dataset, gcb: xr.Dataset, years: range) -> xr.Dataset:
    """Global annual land sink predicted for years after training, next to the GCB2025 DGVM mean.

    Parameters
    ----------
    emulator : fitted LandFluxEmulator
    drivers : Dataset (time)
        Covering ``years`` and 12 months before.
    gcb : Dataset
        :func:`priors.read_gcb2025_dgvm_sinks`.
    years : range
        e.g. ``range(2020, 2025)``.

    Returns
    -------
    Dataset (year)
        ``land_sink_emulator``, ``land_sink_gcb_dgvm_mean`` and their difference ``bias``
        (emulator - GCB), PgC yr-1, positive = uptake.
    """
    time = pd.date_range(f"{years[0]}-01", f"{years[-1]}-12", freq="MS").to_numpy("datetime64[ns]")
    flux = emulator.predict(drivers, return_std=False, time=time)["flux"].sum("region")
    sink = -flux.groupby("time.year").mean("time")
    reference = gcb["dgvm_mean"].sel(year=list(years))
    attrs = {"units": "PgC yr-1", "sign": "positive = uptake"}
    return xr.Dataset(
        {
            "land_sink_emulator": sink.assign_attrs(attrs),
            "land_sink_gcb_dgvm_mean": reference.assign_attrs(attrs),
            "bias": (sink - reference).assign_attrs(attrs),
        }
    )


def sensitivities(
    emulator: LandFluxEmulator, drivers: xr.Dataset, time: np.ndarray, el_nino_k: float = 2.0
) -> xr.Dataset:
    """Response of the emulated flux to +1 K of uniform warming and to a strong El Nino.

    The drivers over ``time`` are perturbed and the change of the ensemble-mean flux, averaged
    over ``time``, is returned. Warming: +1 K on every temperature driver of the emulator
    (``emulator.temperature_drivers``: by default global, hemispheric and tropical GISTEMP) at
    every lag (CO2 and ENSO unchanged), so the response is per K of uniform warming. El Nino:
    the ENSO index raised by ``el_nino_k`` (2 K, a 1997/98 or 2015/16-strength event) at every
    lag, i.e. the year-round response to a sustained event.

    Returns
    -------
    Dataset (region)
        ``flux_per_K_warming`` (PgC yr-1 K-1) and ``flux_el_nino`` (PgC yr-1), positive =
        more flux to the atmosphere (a weaker sink); ``region`` ends with ``"Global land"``.
    """
    base = emulator.predict(drivers, return_std=False, time=time)["flux"]

    def response(names: tuple[str, ...], delta: float) -> xr.DataArray:
        perturbed = drivers.assign({name: drivers[name] + delta for name in names})
        change = (emulator.predict(perturbed, return_std=False, time=time)["flux"] - base).mean("time")
        return xr.concat([change, change.sum("region").expand_dims(region=[GLOBAL])], dim="region")

    return xr.Dataset(
        {
            "flux_per_K_warming": response(tuple(emulator.temperature_drivers), 1.0).assign_attrs(units="PgC yr-1 K-1"),
            "flux_el_nino": response((ENSO_DRIVER,), el_nino_k).assign_attrs(units="PgC yr-1", oni_anomaly_K=el_nino_k),
        }
    )


def apparent_temperature_sensitivity(flux: xr.DataArray, temperature: xr.DataArray) -> float:
    """Interannual sensitivity of a land flux to temperature, as in Wang et al. (2013, PNAS 110, 13061).

    Least-squares slope of the linearly detrended annual flux on the linearly detrended annual
    temperature over their common years: the diagnostic whose observed value (CO2 growth rate
    against tropical land temperature, 1959-2011) is 3.5 +- 0.6 PgC yr-1 K-1.

    Parameters
    ----------
    flux : DataArray (time), PgC yr-1, positive to the atmosphere
        Monthly flux (e.g. tropical land total).
    temperature : DataArray (year), K
        Annual temperature anomaly (e.g. GISTEMP 24S-24N).

    Returns
    -------
    float
        PgC yr-1 K-1; positive = more flux to the atmosphere (a weaker sink) in warm years.
    """
    years = np.intersect1d(np.unique(flux["time"].dt.year.values), temperature["year"].values)
    flux_anomaly = annual_anomaly(flux.sel(time=flux["time"].dt.year.isin(years)))
    t = temperature.sel(year=years).values
    t = t - np.polyval(np.polyfit(years, t, 1), years)
    return float(np.polyfit(t, flux_anomaly.values, 1)[0])
