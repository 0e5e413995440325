"""A climatological prior: the land flux a scientist would assume knowing no interannual variability.

Used for synthetic worlds and whenever the emulator (``priors.emulator``) is not available; every
run records which prior it used in ``prior_source``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

FLUX_ATTRS = {"units": "PgC yr-1", "sign": "positive to the atmosphere (negative = uptake)"}


def climatological_prior(
    time: np.ndarray,
    regions: xr.Dataset,
    mean_flux: float,
    northern_seasonal_amplitude: float,
    sd_scale: float,
    uptake_peak_month: float = 7.0,
    growing_season_concentration: float = 0.0,
) -> xr.Dataset:
    """Prior Dataset: a mean flux shared by area, a hemispheric seasonal cycle and an sd by area.

    Parameters
    ----------
    time : ndarray of datetime64
        Month starts.
    regions : Dataset (region)
        Region table with ``area`` (m2) and ``band_fraction`` (region, band) over the bands
        "90N-30N", "30N-0", "0-30S", "30S-90S".
    mean_flux : float
        Global annual-mean land flux, PgC/yr, positive to the atmosphere (e.g. -2.5 for a 2.5
        PgC/yr sink), shared among regions by area.
    northern_seasonal_amplitude : float
        Amplitude (PgC/yr) of the northern-extratropical cosine seasonal cycle: an uptake peak in
        ``uptake_peak_month`` and a source peak six months later; the southern extratropics get -0.2 and the tropics 0.1
        of it, each shared by area within the band.
    sd_scale : float
        Prior 1-sigma (PgC/yr) of a region of mean area in one month; scaled by area.
    uptake_peak_month : float
        Calendar month (1-12, fractional allowed) of the northern uptake maximum.
    growing_season_concentration : float
        0 gives a cosine; larger values (von Mises concentration) squeeze the uptake into a
        shorter, deeper growing season with a long weak release, as observed NEE does. The
        cycle is scaled so its annual mean is zero and its uptake peak is ``-amplitude``.

    Returns
    -------
    Dataset with ``flux`` and ``flux_sd`` over (time, region), PgC/yr
    """
    area_share = (regions["area"] / regions["area"].sum()).values
    frac = regions["band_fraction"]
    north, south = frac.sel(band="90N-30N").values, frac.sel(band="30S-90S").values
    tropics = 1 - north - south

    def within(band_share: np.ndarray) -> np.ndarray:
        weights = band_share * area_share
        return weights / weights.sum() if weights.sum() > 0 else weights

    month = pd.DatetimeIndex(time).month.to_numpy()
    phase = seasonal_shape(month, uptake_peak_month, growing_season_concentration)[:, None]
    amplitude = northern_seasonal_amplitude * (within(north) - 0.2 * within(south) + 0.1 * within(tropics))
    flux = mean_flux * area_share[None, :] + amplitude[None, :] * phase
    sd = np.broadcast_to(sd_scale * area_share / area_share.mean(), flux.shape).copy()
    return xr.Dataset(
        {
            "flux": (("time", "region"), flux, {**FLUX_ATTRS, "long_name": "prior land flux (climatology)"}),
            "flux_sd": (("time", "region"), sd, {**FLUX_ATTRS, "long_name": "prior land flux 1-sigma"}),
        },
        coords={"time": np.asarray(time, dtype="datetime64[ns]"), "region": regions["region"].values},
        attrs={
            "prior_source": (
                f"climatology: global mean {mean_flux:+.2f} PgC/yr shared by area, hemispheric cosine seasonal "
                f"cycle of amplitude {northern_seasonal_amplitude:g} PgC/yr, sd {sd_scale:g} PgC/yr per region-month"
            )
        },
    )


def seasonal_shape(month: np.ndarray, uptake_peak_month: float, concentration: float) -> np.ndarray:
    """Zero-mean seasonal cycle per calendar month, -1 at the uptake peak (cosine when concentration = 0)."""
    angle = 2 * np.pi * (np.arange(1, 13) - uptake_peak_month) / 12
    bump = np.cos(angle) if concentration == 0 else np.exp(concentration * np.cos(angle))
    cycle = -(bump - bump.mean())
    return (cycle / -cycle.min())[np.asarray(month) - 1]
