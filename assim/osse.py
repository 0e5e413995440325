"""Synthetic worlds with a known truth (observing-system simulation experiments).

A world is: a climatological prior land flux per region and month (mean sink plus a seasonal
cycle), a truth = prior + one draw from B + a planted 2023-like heat/drought anomaly (the
tropical land sink weakens by ``anomaly_pgc_per_yr`` for one year), fixed fossil and ocean
fluxes that give the observations a realistic CO2 trend, and monthly-mean observations at
real NOAA/CSIRO station locations with noise drawn from R.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from assim.covariance import DiagonalCovariance, ExponentialCorrelation, KroneckerCovariance, prior_covariance
from assim.problem import Problem
from assim.state import StateVector, flux_sources, month_starts
from assim.transport import Transport
from observations import observation_dataset
from observations.errors import MISMATCH_PPM
from observations.sites import SITES
from priors.climatology import climatological_prior

#: Default OSSE network: NOAA GML / CSIRO baseline stations (coordinates in observations.sites.SITES).
DEFAULT_SITES = ("ALT", "BRW", "MHD", "NWR", "MLO", "KUM", "RPB", "ASC", "SMO", "CPT", "CGO", "SPO")

#: Fixed (known) non-land fluxes in PgC/yr and their share per latitude band (north to south):
#: fossil emissions mostly northern extratropical, ocean uptake spread over all bands.
FIXED_FLUXES = {
    "fossil": (9.5, (0.75, 0.19, 0.04, 0.02)),
    "ocean": (-2.8, (0.25, 0.20, 0.20, 0.35)),
}


@dataclass(frozen=True)
class World:
    """One synthetic world: everything a Problem needs, plus the truth."""

    prior: xr.Dataset
    obs: xr.Dataset
    truth: xr.DataArray
    background_ppm: np.ndarray
    seed: int


@dataclass(frozen=True)
class OsseConfig:
    """Parameters of a synthetic world (all fluxes PgC/yr, positive to the atmosphere)."""

    start: str = "2015-01"
    end: str = "2024-12"
    seed: int = 0
    sites: tuple[str, ...] = DEFAULT_SITES
    mean_land_flux: float = -2.0
    northern_seasonal_amplitude: float = 5.0
    prior_sd_scale: float = 0.4
    time_correlation_months: float = 3.0
    region_correlation_km: float = 1500.0
    anomaly_year: int = 2023
    anomaly_pgc_per_yr: float = 1.5
    initial_ppm: float = 400.0
    obs_per_month: int = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sites) - set(SITES))
        if unknown:
            raise ValueError(f"osse.sites: unknown station(s) {unknown}; choose from {sorted(SITES)}")
        if self.prior_sd_scale <= 0:
            raise ValueError(f"osse.prior_sd_scale must be > 0, got {self.prior_sd_scale}")


def planted_anomaly(state: StateVector, config: OsseConfig) -> np.ndarray:
    """(time, region) flux anomaly: the tropical land sink weakens by ``anomaly_pgc_per_yr`` in ``anomaly_year``.

    Each region gets a share proportional to its tropical (30S-30N) area, constant over the
    12 months, scaled so that the annual-mean *Tropics (30S-30N)* aggregate of
    :func:`assim.posterior.land_aggregates` rises by exactly ``anomaly_pgc_per_yr`` (the global
    total rises slightly more, as partly tropical regions carry it outside the band too).
    """
    regions = state.regions
    frac = regions["band_fraction"]
    tropical_fraction = (frac.sel(band="30N-0") + frac.sel(band="0-30S")).values
    share = tropical_fraction * regions["area"].values
    in_year = pd.DatetimeIndex(state.time).year == config.anomaly_year
    anomaly = np.zeros(state.shape)
    anomaly[in_year] = config.anomaly_pgc_per_yr * share / (tropical_fraction * share).sum()
    return anomaly


def observation_layout(state: StateVector, config: OsseConfig) -> xr.Dataset:
    """Observation times and places (values zero, uncertainties from the mismatch table)."""
    sites = list(config.sites)
    days = np.linspace(5, 25, config.obs_per_month).astype(int)
    times = np.array([t + np.timedelta64(int(d) - 1, "D") for t in state.time for d in days], dtype="datetime64[ns]")
    time, site = np.meshgrid(times, sites, indexing="ij")
    site = site.ravel()
    lat, lon, alt, cat = (
        np.array([getattr(SITES[s], k) for s in site]) for k in ("latitude", "longitude", "altitude", "category")
    )
    return observation_dataset(
        np.zeros(site.size),
        np.array([MISMATCH_PPM[c] for c in cat]),  # model-data mismatch alone: the OSSE has no measurement error
        units="ppm",
        time=time.ravel(),
        latitude=lat,
        longitude=lon,
        altitude=alt,
        site=site,
        platform="surface",
        category=cat,
        attrs={"source_file": "osse"},
    )


def fixed_flux_background(state: StateVector, obs: xr.Dataset, transport: Transport, initial_ppm: float) -> np.ndarray:
    """CO2 (ppm) at each observation from the initial condition and the fixed fossil and ocean fluxes."""
    fixed_state = StateVector(state.time, flux_sources({name: split for name, (_, split) in FIXED_FLUXES.items()}))
    x_fixed = np.tile([flux for flux, _ in FIXED_FLUXES.values()], state.time.size)
    return initial_ppm + transport.jacobian(fixed_state, obs).matvec(x_fixed)


def world_prior(state: StateVector, config: OsseConfig) -> tuple[xr.Dataset, KroneckerCovariance]:
    """The world's climatological Prior Dataset over ``state`` and its B (the world's correlation lengths)."""
    prior = climatological_prior(
        state.time, state.regions, config.mean_land_flux, config.northern_seasonal_amplitude, config.prior_sd_scale
    )
    B = prior_covariance(
        state,
        prior["flux_sd"].values,
        ExponentialCorrelation(config.time_correlation_months),
        ExponentialCorrelation(config.region_correlation_km),
    )
    return prior, B


def make_world(config: OsseConfig, regions: xr.Dataset, transport: Transport) -> World:
    """Draw one synthetic world with seed ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    state = StateVector(month_starts(config.start, config.end), regions)
    prior, B = world_prior(state, config)
    truth = prior["flux"].values + B.sample(rng).reshape(state.shape) + planted_anomaly(state, config)
    layout = observation_layout(state, config)
    background = fixed_flux_background(state, layout, transport, config.initial_ppm)
    H = transport.jacobian(state, layout)
    noise = DiagonalCovariance(layout["uncertainty"].values ** 2).sample(rng)
    obs = layout.assign(value=layout["value"].copy(data=background + H.matvec(truth.ravel()) + noise))
    obs = obs.assign_attrs(source_file=f"osse seed {config.seed}")
    truth_da = state.to_dataarray(truth.ravel(), "flux_truth", {"long_name": "synthetic true land flux"})
    return World(prior=prior, obs=obs, truth=truth_da, background_ppm=background, seed=config.seed)


def world_problem(world: World, config: OsseConfig, regions: xr.Dataset, transport: Transport) -> Problem:
    """The inversion problem of a world, with the world's own (correct) error statistics."""
    return Problem.from_datasets(
        world.prior,
        world.obs,
        transport,
        regions,
        ExponentialCorrelation(config.time_correlation_months),
        ExponentialCorrelation(config.region_correlation_km),
        background_ppm=world.background_ppm,
    )
