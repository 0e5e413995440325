"""Selecting and averaging observations: time windows, site lists, afternoon-only, monthly means.

Monthly means carry the error of the mean under a stated correlation assumption: with n values
of 1-sigma s_i whose errors have a common pairwise correlation rho,

    var(mean) = [(1 - rho) * sum(s_i**2) + rho * (sum(s_i))**2] / n**2,

so rho = 0 gives sum(s_i**2)/n**2 (independent errors, s/sqrt(n) for equal s) and rho = 1 gives
(mean s)**2 (fully correlated: averaging does not help). Average *measurement* uncertainties here
and add the model-data mismatch (:func:`observations.errors.add_mismatch`) to the monthly values.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import xarray as xr

from observations.schema import ObservationError, observation_dataset, validate

#: Categories treated as continental, where only afternoon values represent the mixed layer.
CONTINENTAL = ("land", "tower")


def select(
    ds: xr.Dataset,
    *,
    start: str | np.datetime64 | None = None,
    end: str | np.datetime64 | None = None,
    sites: Iterable[str] | None = None,
) -> xr.Dataset:
    """Observations with ``start <= time < end`` at ``sites`` (all when omitted)."""
    time = ds["time"].values
    keep = np.ones(time.size, bool)
    if start is not None:
        keep &= time >= np.datetime64(start, "ns")
    if end is not None:
        keep &= time < np.datetime64(end, "ns")
    if sites is not None:
        keep &= np.isin(ds["site"].values.astype(str), list(sites))
    if not keep.any():
        raise ObservationError(f"no observations left after selecting start={start}, end={end}, sites={sites}")
    return ds.isel(obs=np.flatnonzero(keep))


def local_solar_hour(ds: xr.Dataset) -> np.ndarray:
    """Local solar hour (0-24) of each observation: UTC hour + longitude / 15."""
    time = ds["time"].values.astype("datetime64[ns]")
    utc_hours = (time - time.astype("datetime64[D]")).astype("timedelta64[s]").astype(float) / 3600.0
    return np.mod(utc_hours + ds["longitude"].values.astype(float) / 15.0, 24.0)


def afternoon(ds: xr.Dataset, hours: tuple[float, float] = (12.0, 16.0), categories=CONTINENTAL) -> xr.Dataset:
    """Keep values of ``categories`` sites between ``hours`` local solar time (start inclusive, end
    exclusive; 12-16 as in CarbonTracker); other categories pass unchanged."""
    solar = local_solar_hour(ds)
    continental = np.isin(ds["category"].values.astype(str), list(categories))
    keep = ~continental | ((solar >= hours[0]) & (solar < hours[1]))
    if not keep.any():
        raise ObservationError(f"no observations left after the afternoon selection {hours}")
    return ds.isel(obs=np.flatnonzero(keep)).assign_attrs(afternoon_hours=f"{hours[0]:g}-{hours[1]:g} local solar time")


_PERIOD_UNITS = {"month": "M", "year": "Y"}


def mean_uncertainty(sigma: np.ndarray, correlation: float) -> float:
    """1-sigma of the mean of values with errors ``sigma`` and common pairwise ``correlation``."""
    n = sigma.size
    return float(np.sqrt((1.0 - correlation) * np.sum(sigma**2) + correlation * np.sum(sigma) ** 2) / n)


def monthly_means(ds: xr.Dataset, correlation: float = 0.0, by: tuple[str, ...] = ("site",)) -> xr.Dataset:
    """Average usable observations to calendar-month means per ``by`` group: :func:`period_means` by month."""
    return period_means(ds, "month", correlation, by)


def period_means(
    ds: xr.Dataset, period: str = "month", correlation: float = 0.0, by: tuple[str, ...] = ("site",)
) -> xr.Dataset:
    """Average usable observations to calendar-month or calendar-year means per ``by`` group (plus intake height).

    Parameters
    ----------
    ds : Observation Dataset (obs,)
        Flagged observations (``flag`` != 0) are left out of the means and counted.
    period : {"month", "year"}
        Calendar period of the means.
    correlation : float in [0, 1]
        Assumed pairwise correlation of the errors within one period and group (see the module
        docstring); recorded in ``attrs["uncertainty_correlation"]``.
    by : names of obs coords that define a group (default ``site``).

    Returns
    -------
    Observation Dataset of period means: ``time`` mid-period, ``time_start``/``time_end``, ``value``,
    ``uncertainty`` (error of the mean), ``n_values`` and ``value_std`` (spread within the period);
    position is the mean of the group's positions.
    """
    unit = _PERIOD_UNITS.get(period)
    if unit is None:
        raise ObservationError(f"period must be one of {sorted(_PERIOD_UNITS)}, got {period!r}")
    if not 0.0 <= correlation <= 1.0:
        raise ObservationError(f"correlation must be in [0, 1], got {correlation!r}")
    ds = validate(ds)
    usable = ds["flag"].values == 0 if "flag" in ds.coords else np.ones(ds.sizes["obs"], bool)
    keys = [k for k in (*by, "intake_height") if k in ds.coords]
    frame = pd.DataFrame({k: ds[k].values for k in (*keys, "category", "platform")})
    frame = frame.assign(
        period_start=ds["time"].values.astype(f"datetime64[{unit}]"),
        value=ds["value"].values,
        sigma=ds["uncertainty"].values,
        latitude=ds["latitude"].values,
        longitude=ds["longitude"].values,
        altitude=ds["altitude"].values,
    )[usable]
    if frame.empty:
        raise ObservationError("no usable observations to average")
    rows = []
    for group, part in frame.groupby([*keys, "period_start"], sort=True, dropna=False):
        rows.append(
            {
                **dict(zip([*keys, "period_start"], group, strict=True)),
                "category": part["category"].iloc[0],
                "platform": part["platform"].iloc[0],
                "value": part["value"].mean(),
                "uncertainty": mean_uncertainty(part["sigma"].to_numpy(), correlation),
                "n_values": len(part),
                "value_std": part["value"].std(ddof=1) if len(part) > 1 else np.nan,
                **{c: part[c].mean() for c in ("latitude", "longitude", "altitude")},
            }
        )
    out = pd.DataFrame(rows)
    start = out["period_start"].to_numpy().astype(f"datetime64[{unit}]").astype("datetime64[ns]")
    end = (start.astype(f"datetime64[{unit}]") + 1).astype("datetime64[ns]")
    units = ds["value"].attrs["units"]
    extra = {k: out[k].to_numpy() for k in keys if k != "site"}
    return observation_dataset(
        out["value"].to_numpy(),
        out["uncertainty"].to_numpy(),
        units=units,
        time=start + (end - start) // 2,
        latitude=out["latitude"].to_numpy(),
        longitude=out["longitude"].to_numpy(),
        altitude=out["altitude"].to_numpy(),
        site=out["site"].to_numpy() if "site" in out else "all",
        platform=out["platform"].to_numpy(),
        category=out["category"].to_numpy(),
        coords={"time_start": start, "time_end": end, **extra},
        data_vars={
            "n_values": ("obs", out["n_values"].to_numpy(), {"long_name": "values averaged"}),
            "value_std": ("obs", out["value_std"].to_numpy(), {"units": units, "long_name": f"spread in the {period}"}),
        },
        attrs={
            **ds.attrs,
            "averaging_period": period,
            "uncertainty_correlation": correlation,
            "n_flagged_left_out": int((~usable).sum()),
        },
    )
