"""Super-observations: XCO2 soundings averaged to grid cells x time windows, with their errors inflated.

Many soundings fall in one model grid cell and time window, and their errors are not independent
(shared aerosol, surface and a priori errors along a track), so treating each as an independent
observation over-weights the satellite. :func:`superobs` replaces the usable soundings of each cell
(a latitude/longitude box, or any obs coord such as a state region, x a calendar hour/day/month)
by their plain mean, with

Uncertainty (the stated error-correlation assumption)
    The n soundings of a cell have 1-sigma errors s_i with one common pairwise correlation rho
    (``correlation``, no default: the caller states it). The error of their mean is

        sigma_mean**2 = [(1 - rho) * sum(s_i**2) + rho * (sum(s_i))**2] / n**2

    (as in :mod:`observations.selection`), which for equal s is s**2 / n_eff with
    n_eff = n / (1 + (n - 1) * rho): rho = 0 is independent errors (s / sqrt(n)), rho = 1 means
    averaging does not reduce the error. The super-observation's uncertainty adds a floor
    (representation error of the cell, ``floor_ppm``) in quadrature:
    uncertainty = sqrt(sigma_mean**2 + floor_ppm**2).

Averaging kernel, pressure weights, a priori (what the satellite operator needs)
    The operator of :mod:`assim.transport.xco2` predicts sounding i from a model profile c_k as
    xco2_i = sum_k w_ik a_ik c_k + sum_k w_ik (1 - a_ik) ca_ik. The mean of these predictions over
    a cell (the model has one profile per cell) is reproduced exactly by a super-observation with

        W_k = mean_i w_ik                                       (pressure weights; still sum to 1)
        A_k = mean_i (w_ik a_ik) / W_k                          (kernel, weighted by w)
        CA_k = mean_i (w_ik (1 - a_ik) ca_ik) / mean_i (w_ik (1 - a_ik))
                                                                (a priori, weighted by its weight
                                                                 in each column)

    so H(super-ob) c = mean_i H(sounding_i) c for every profile c: the super-observation's value
    (the mean XCO2) and its operator describe the same average. Where a level's a priori weight
    mean_i w_ik (1 - a_ik) vanishes (|.| < 1e-12 W_k) the a priori does not enter the column there
    and CA_k is the plain mean. ``pressure_levels`` are averaged plainly (the levels the model
    profile is sampled on). Position and time are the means of the soundings' (a cell spans no
    dateline: longitude cells start at -180).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import xarray as xr

from observations._build import VERSION
from observations.oco2 import PROFILE
from observations.schema import ObservationError, observation_dataset, validate

KERNEL, WEIGHT, APRIORI, PRESSURE = PROFILE  # the (obs, level) variables of a satellite Observation Dataset

#: Time windows: name -> numpy datetime64 unit.
PERIODS = {"hour": "h", "day": "D", "month": "M"}


def superob_uncertainty(
    sigma_sum: np.ndarray, sigma_sq_sum: np.ndarray, n: np.ndarray, correlation: float, floor: float
) -> np.ndarray:
    """Uncertainty of cell means (see the module docstring) from per-cell sum(s_i), sum(s_i**2) and n."""
    variance = ((1.0 - correlation) * sigma_sq_sum + correlation * sigma_sum**2) / n**2
    return np.sqrt(variance + floor**2)


def effective_count(n: np.ndarray, correlation: float) -> np.ndarray:
    """n_eff = n / (1 + (n - 1) rho): independent soundings worth the n correlated ones (equal errors)."""
    return n / (1.0 + (n - 1.0) * correlation)


def superobs(
    ds: xr.Dataset,
    *,
    correlation: float,
    floor_ppm: float = 0.0,
    grid_deg: float | tuple[float, float] | None = 1.0,
    period: str = "day",
    by: tuple[str, ...] = (),
) -> xr.Dataset:
    """Average the usable soundings of each cell x time window into one super-observation.

    Parameters
    ----------
    ds : satellite Observation Dataset (obs,) with ``xco2_averaging_kernel``, ``pressure_weight``,
        ``co2_profile_apriori`` and ``pressure_levels`` over (obs, level), as from
        ``observations.read(path, kind="oco2")``. Soundings with ``flag`` != 0 are left out (counted).
    correlation : float in [0, 1]
        Common pairwise error correlation of the soundings of one cell (module docstring).
    floor_ppm : float >= 0
        Added in quadrature to the error of the mean (ppm): what averaging cannot remove.
    grid_deg : float or (dlat, dlon), optional
        Latitude/longitude cell size in degrees (cells from -90 N and -180 E); None = no spatial
        cells (group by ``by`` only, e.g. a state region coord).
    period : {"hour", "day", "month"}
        Calendar time window (UTC).
    by : names of further obs coords that define a cell (e.g. ``("region",)``); ``site``,
        ``platform`` and ``category`` always do.

    Returns
    -------
    Observation Dataset (obs,) of super-observations, validated: ``value`` mean XCO2 (ppm),
    ``uncertainty`` (ppm), the four (obs, level) variables averaged as in the module docstring,
    ``n_soundings``, ``n_effective``, ``xco2_std`` (spread in the cell, ppm; NaN for one sounding),
    coords ``time_start``/``time_end`` (the window), attrs recording the assumptions.
    """
    unit = PERIODS.get(period)
    if unit is None:
        raise ObservationError(f"period must be one of {sorted(PERIODS)}, got {period!r}")
    if not 0.0 <= correlation <= 1.0:
        raise ObservationError(f"correlation must be in [0, 1], got {correlation!r}")
    if not floor_ppm >= 0.0:
        raise ObservationError(f"floor_ppm must be >= 0, got {floor_ppm!r}")
    ds = validate(ds)
    missing = [name for name in (*PROFILE, *by) if name not in ds.variables]
    if missing:
        raise ObservationError(
            f"{ds.attrs.get('source_file', 'observations')}: super-obbing needs {missing}; "
            'read the soundings with observations.read(path, kind="oco2") (and assign any by= coords)'
        )
    usable = ds["flag"].values == 0 if "flag" in ds.variables else np.ones(ds.sizes["obs"], bool)
    if not usable.any():
        raise ObservationError(f"{ds.attrs.get('source_file', 'observations')}: no usable soundings to average")
    sub = ds.isel(obs=np.flatnonzero(usable))
    cells, first = _cells(sub, grid_deg, unit, by)
    n = np.bincount(cells).astype(float)

    def total(x: np.ndarray) -> np.ndarray:
        """Per-cell sum of x (obs,) or (obs, level)."""
        sums = np.zeros((n.size, *x.shape[1:]))
        np.add.at(sums, cells, x)
        return sums

    def mean(x: np.ndarray) -> np.ndarray:
        return total(x) / n.reshape(-1, *([1] * (x.ndim - 1)))

    value, sigma = sub["value"].values, sub["uncertainty"].values
    levels = {
        name: sub[name].transpose("obs", ...).values.astype(float) for name in (KERNEL, WEIGHT, APRIORI, PRESSURE)
    }
    profiles = _average_profiles(levels, mean)
    start = sub["time"].values[first].astype(f"datetime64[{unit}]")
    t0 = sub["time"].values.min()
    seconds = (sub["time"].values - t0) / np.timedelta64(1, "s")
    xco2 = mean(value)
    spread = np.sqrt(total((value - xco2[cells]) ** 2) / np.where(n > 1, n - 1, np.nan))
    level_attrs = {name: ds[name].attrs for name in profiles}
    return observation_dataset(
        xco2,
        superob_uncertainty(total(sigma), total(sigma**2), n, correlation, floor_ppm),
        units=ds["value"].attrs["units"],
        time=t0 + np.round(mean(seconds) * 1e9).astype("timedelta64[ns]"),
        latitude=mean(sub["latitude"].values),
        longitude=mean(sub["longitude"].values),
        altitude=np.nan,
        site=sub["site"].values[first],
        platform=sub["platform"].values[first],
        category=sub["category"].values[first],
        coords={
            "time_start": start.astype("datetime64[ns]"),
            "time_end": (start + 1).astype("datetime64[ns]"),
            "flag": np.zeros(n.size, np.int8),
            **{name: sub[name].values[first] for name in by},
        },
        data_vars={
            **{name: (("obs", "level"), profile, level_attrs[name]) for name, profile in profiles.items()},
            "n_soundings": ("obs", n.astype(np.int64), {"long_name": "soundings averaged"}),
            "n_effective": ("obs", effective_count(n, correlation), {"long_name": "n / (1 + (n - 1) rho)"}),
            "xco2_std": ("obs", spread, {"units": ds["value"].attrs["units"], "long_name": "spread in the cell"}),
        },
        attrs={
            **ds.attrs,
            "history": f"{ds.attrs.get('history', '')}; super-obbed by observations.superobs (assim {VERSION})",
            "superob_grid_deg": "none" if grid_deg is None else str(grid_deg),
            "superob_period": period,
            "superob_by": " ".join(by),
            "superob_error_correlation": correlation,
            "superob_floor_ppm": floor_ppm,
            "superob_uncertainty": "sqrt(((1 - rho) sum s_i^2 + rho (sum s_i)^2) / n^2 + floor^2)",
            "n_soundings_in": int(ds.sizes["obs"]),
            "n_flagged_left_out": int((~usable).sum()),
        },
    )


def _cells(
    ds: xr.Dataset, grid_deg: float | tuple[float, float] | None, unit: str, by: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Cell number of each obs (0..cells-1, sorted by key) and the first obs of each cell."""
    keys = {name: ds[name].values for name in ("site", "platform", "category", *by)}
    keys["window"] = ds["time"].values.astype(f"datetime64[{unit}]")
    if grid_deg is not None:
        dlat, dlon = np.broadcast_to(np.asarray(grid_deg, dtype=float), (2,))
        keys["lat_cell"] = np.floor((ds["latitude"].values + 90.0) / dlat).astype(np.int64)
        keys["lon_cell"] = np.floor(((ds["longitude"].values + 180.0) % 360.0) / dlon).astype(np.int64)
    cells = pd.DataFrame(keys).groupby(list(keys), sort=True, dropna=False).ngroup().to_numpy()
    first = np.unique(cells, return_index=True)[1]
    return cells, first


def _average_profiles(levels: dict[str, np.ndarray], mean: Callable[[np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
    """Cell-mean pressure weights, w-weighted kernel and a-priori-weight-weighted a priori (module docstring)."""
    w, a, ca = levels[WEIGHT], levels[KERNEL], levels[APRIORI]
    weight = mean(w)
    apriori_weight = mean(w * (1.0 - a))
    vanishing = np.abs(apriori_weight) < 1e-12 * np.abs(weight)
    apriori = np.where(vanishing, mean(ca), mean(w * (1.0 - a) * ca) / np.where(vanishing, 1.0, apriori_weight))
    kernel = np.where(weight > 0, mean(w * a) / np.where(weight > 0, weight, 1.0), mean(a))  # w = 0: a does not matter
    return {
        KERNEL: kernel,
        WEIGHT: weight,
        APRIORI: apriori,
        PRESSURE: mean(levels[PRESSURE]),
    }
