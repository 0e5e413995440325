"""The regional case: a folder of footprint files, observations at their sites, monthly fluxes by region.

State: the monthly mean flux (PgC/yr, positive to the atmosphere) of each region of an integer
mask (the footprint transport's ``region_mask``), over the months of the observations, plus
optionally one constant offset (ppm) per site for a biased background. Observations: any
files :func:`observations.read` takes (ObsPack, NOAA station files, an Observation Dataset
written to netCDF, ...), in ppm; model-data mismatch added by site category unless they
already carry it. H: the footprints projected onto the regions (:mod:`assim.transport.footprints`,
a chunked zarr store applied with dask). The background (what the regional fluxes do not
explain: inflow through the domain boundary) is an observation variable or one number.

Prior: a Prior Dataset netCDF (``flux``, ``flux_sd`` over time x region) or a uniform flux
density with its 1-sigma; B = sd x (exponential correlation in months) x (exponential
correlation in km between region centroids). Every choice is a key of :class:`RegionalConfig`;
docs/transport.md walks through an example.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy.sparse.linalg import aslinearoperator

import observations
from assim.covariance import (
    DiagonalCovariance,
    ExponentialCorrelation,
    KroneckerCovariance,
    StackedCovariance,
    prior_covariance,
)
from assim.posterior import Posterior
from assim.problem import Problem
from assim.state import TRANSCOM3_LAND, StateVector, month_starts
from assim.summary import summarize
from assim.transport import FootprintTransport
from assim.transport.stack import ColumnStack
from observations.errors import add_mismatch, usable
from observations.units import convert

DOMAIN_TOTAL = "Domain total"


@dataclass(frozen=True)
class RegionalConfig:
    """The regional case (TOML section ``[regional]``; the footprints are ``[transport] name = "footprints"``).

    observations : files or glob patterns, each read by ``observations.read`` (``observation_kind``
        forces a reader, "" detects); flagged records are dropped, counted in the run's attrs.
    add_mismatch : add the CarbonTracker/CTDAS model-data mismatch of each site category
        (``observations.errors``) to the measurement uncertainty.
    start, end : first and last state month ("YYYY-MM"); "" = the months of the observations.
    region_ids : mask codes in the state; empty = every positive code of the mask.
    prior : a Prior Dataset netCDF (``flux``, ``flux_sd`` over time x region; region names of
        the mask's table); "" = ``prior_flux_density`` +/- ``prior_sd_density`` everywhere,
        in gC m-2 yr-1 (positive to the atmosphere).
    time_correlation_months, region_correlation_km : e-folding lengths of B's correlations.
    background_variable : observation variable holding the background (ppm); "" = use
        ``background_ppm`` for every observation.
    site_offset_sd_ppm : > 0 adds one offset per site (prior 0 +/- this) to the state.
    truth : twin experiments only: a netCDF with the true ``flux`` (time, region) in PgC/yr,
        reported beside the posterior (``flux_truth``, ``land_sink_truth``).
    """

    observations: tuple[str, ...] = ()
    observation_kind: str = ""
    add_mismatch: bool = True
    start: str = ""
    end: str = ""
    region_ids: tuple[int, ...] = ()
    prior: str = ""
    prior_flux_density: float = 0.0
    prior_sd_density: float = 200.0
    time_correlation_months: float = 1.0
    region_correlation_km: float = 500.0
    background_variable: str = "background"
    background_ppm: float = 0.0
    site_offset_sd_ppm: float = 0.0
    truth: str = ""

    def __post_init__(self) -> None:
        for key in ("start", "end"):
            value = getattr(self, key)
            if value and not _is_month(value):
                raise ValueError(f"{key} must be a month 'YYYY-MM' or empty, got {value!r}")
        if self.prior_sd_density <= 0 or self.site_offset_sd_ppm < 0:
            raise ValueError("prior_sd_density must be > 0 and site_offset_sd_ppm >= 0")
        if self.time_correlation_months < 0 or self.region_correlation_km < 0:
            raise ValueError("time_correlation_months and region_correlation_km must be >= 0")


def _is_month(text: str) -> bool:
    try:
        return pd.Timestamp(text).strftime("%Y-%m") == text
    except ValueError:
        return False


def read_observations(config: RegionalConfig) -> tuple[xr.Dataset, dict]:
    """Every observation file of ``config`` in one Observation Dataset (usable records only) and counts."""
    if not config.observations:
        raise ValueError("[regional] observations is empty: list the observation files (paths or glob patterns)")
    paths = []
    for pattern in config.observations:
        found = sorted(glob.glob(str(Path(pattern).expanduser()))) or [pattern]
        paths += [Path(p) for p in found]
    parts = [observations.read(p, kind=config.observation_kind or None) for p in paths]
    for path, part in zip(paths, parts, strict=True):
        if part["value"].attrs["units"] != "ppm":
            units = part["value"].attrs["units"]
            raise ValueError(f"{path}: the regional case takes CO2 mole fractions in ppm, got {units!r}")
    keep = sorted(set.intersection(*(set(p.variables) for p in parts)))
    obs = xr.concat([p[[v for v in keep if v in p.data_vars]] for p in parts], dim="obs", combine_attrs="override")
    obs = observations.validate(obs.assign_attrs(source_file=", ".join(p.name for p in paths)))
    if config.add_mismatch:
        obs = add_mismatch(obs)
    kept = usable(obs)
    counts = {"observations_read": int(obs.sizes["obs"]), "observations_used": int(kept.sizes["obs"])}
    return kept.sortby("time"), counts


def regional_state(config: RegionalConfig, obs: xr.Dataset, regions: xr.Dataset) -> StateVector:
    """Regions x months from ``start``..``end`` (default: the observations' months); offsets appended."""
    months = obs["time"].values.astype("datetime64[M]")
    start = config.start or str(months.min())
    end = config.end or str(months.max())
    state = StateVector(month_starts(start, end), regions)
    if config.site_offset_sd_ppm == 0:
        return state
    return state.with_site_offsets(np.unique(obs["site"].values.astype(str)).tolist())


def regional_prior(config: RegionalConfig, state: StateVector) -> tuple[np.ndarray, np.ndarray]:
    """Prior flux and 1-sigma (time, region) in PgC/yr."""
    if not config.prior:
        area = state.regions["area"].values
        per_region = [
            convert(density * area, "gC m-2 yr-1 m2", "PgC/yr")
            for density in (config.prior_flux_density, config.prior_sd_density)
        ]
        return tuple(np.broadcast_to(v, state.shape).copy() for v in per_region)
    return tuple(read_fluxes(config.prior, ("flux", "flux_sd"), state))


def regional_covariance(config: RegionalConfig, state: StateVector, sd: np.ndarray) -> KroneckerCovariance:
    """B of the flux block: ``sd`` (PgC/yr) with the config's correlations in months and km."""
    return prior_covariance(
        state,
        sd,
        ExponentialCorrelation(config.time_correlation_months),
        ExponentialCorrelation(config.region_correlation_km),
    )


def read_fluxes(path: str, names: tuple[str, ...], state: StateVector) -> list[np.ndarray]:
    """Variables ``names`` (time, region) of a netCDF file on the state's months and regions, in PgC/yr.

    Regions are matched by :func:`prior_region_names`; a file that misses a state region or
    month is an error naming it.
    """
    with xr.open_dataset(path) as ds:
        for name in names:
            if name not in ds or set(ds[name].dims) != {"time", "region"}:
                raise ValueError(f"{path}: needs {name!r} over (time, region); has {sorted(ds.data_vars)}")
        regions = prior_region_names(ds["region"].values.astype(str), state.regions)
        missing = [region for region, name in zip(state.region, regions, strict=True) if name is None]
        if missing:
            raise ValueError(f"{path}: no values for regions {missing} of the mask (has {ds['region'].values})")
        wanted = ds[list(names)].sel(region=regions).reindex(time=state.time)
        if any(wanted[name].isnull().any() for name in names):
            raise ValueError(f"{path}: does not cover every state month {state.time[0]}..{state.time[-1]}")
        return [
            convert(wanted[name].transpose("time", "region").values, ds[name].attrs.get("units", "PgC yr-1"), "PgC/yr")
            for name in names
        ]


def prior_region_names(available: np.ndarray, regions: xr.Dataset) -> list[str | None]:
    """The prior's region for each state region: the same name, else the TransCom-3 land region of its code.

    A mask without CF flag meanings names its regions "region <code>"; a prior over the
    TransCom-3 land regions (as ``assim prior`` writes) then matches by code (1-11).
    """
    available = set(available.tolist())
    out = []
    for name, code in zip(regions["region"].values, regions["region_id"].values, strict=True):
        transcom = TRANSCOM3_LAND.get(int(code))
        out.append(str(name) if name in available else transcom if transcom in available else None)
    return out


def background(config: RegionalConfig, obs: xr.Dataset) -> np.ndarray:
    """Background mole fraction (ppm) per observation."""
    if not config.background_variable:
        return np.full(obs.sizes["obs"], config.background_ppm)
    name = config.background_variable
    if name not in obs:
        raise ValueError(
            f"[regional] background_variable {name!r} is not in the observations (variables {sorted(obs.data_vars)}); "
            "name the variable holding the background in ppm, or set it to '' and give background_ppm"
        )
    values = convert(obs[name].values, obs[name].attrs.get("units", "ppm"), "ppm")
    if not np.isfinite(values).all():
        raise ValueError(f"[regional] background {name!r}: {int((~np.isfinite(values)).sum())} values are not finite")
    return values


def regional_problem(config: RegionalConfig, transport: FootprintTransport) -> tuple[Problem, dict]:
    """The Problem of the regional case and the observation counts.

    The transport provides the region table of its mask and H from its footprint files.
    """
    obs, counts = read_observations(config)
    regions = transport.regions(list(config.region_ids) or None)
    state = regional_state(config, obs, regions)
    flux_state = StateVector(state.time, regions)
    flux, sd = regional_prior(config, flux_state)
    B = regional_covariance(config, flux_state, sd)
    H = transport.jacobian(flux_state, obs)
    x_prior = flux.ravel()
    if state.n_extra:
        H = ColumnStack([H, aslinearoperator(state.site_offset_matrix(obs))])
        B = StackedCovariance([B, DiagonalCovariance(np.full(state.n_extra, config.site_offset_sd_ppm**2))])
        x_prior = np.concatenate([x_prior, np.zeros(state.n_extra)])
    bg = background(config, obs)
    obs = obs.assign(background=("obs", bg, {"units": "ppm", "long_name": "background"}))
    problem = Problem(
        state, x_prior, B, H, obs["value"].values - bg, DiagonalCovariance(obs["uncertainty"].values ** 2), obs
    )
    return problem.validate(), counts


def domain_aggregates(regions: xr.Dataset) -> xr.DataArray:
    """Weights (aggregate, region): each region and the domain total."""
    names = list(regions["region"].values)
    weights = np.vstack([np.eye(len(names)), np.ones(len(names))])
    return xr.DataArray(
        weights, dims=("aggregate", "region"), coords={"aggregate": [*names, DOMAIN_TOTAL], "region": names}
    )


def read_truth(path: str, state: StateVector) -> xr.DataArray:
    """The true flux (time, region) of a twin experiment, in PgC/yr, on the state's months and regions."""
    (flux,) = read_fluxes(path, ("flux",), state)
    return state.to_dataarray(flux.ravel(), "flux_truth")


def summarize_regional(posterior: Posterior, reference: tuple[int, int], attrs: dict, truth: str = "") -> xr.Dataset:
    """The run Dataset (docs/outputs.md) with regions and the domain total; years may be partial.

    ``year`` carries ``months_in_year``: how many state months each year's mean covers.
    """
    state = posterior.state
    years = pd.DatetimeIndex(state.time).year
    if not ((years >= reference[0]) & (years <= reference[1])).any():
        raise ValueError(
            f"[run] reference_period {list(reference)} has no year in the regional state "
            f"({years.min()}..{years.max()}); set reference_period = [{years.min()}, {years.max()}]"
        )
    run = summarize(
        posterior,
        reference,
        truth=read_truth(truth, state) if truth else None,
        attrs=attrs,
        aggregates=domain_aggregates(state.regions),
        partial_years=True,
    )
    counts = pd.Series(years).value_counts()
    return run.assign_coords(months_in_year=("year", counts.reindex(run["year"].values).to_numpy()))


def write_twin_case(directory: str | Path, seed: int = 0) -> Path:
    """Write a regional twin experiment from synthetic footprints and return its config file.

    Three sites (one with a +0.5 ppm calibration bias) over a 6 x 9 degree domain of 2 x 3
    block regions, footprints every 6 h for January-February 2020 (plume-like, 0.05 s m2 mol-1
    at the site, about 1 ppm per umol m-2 s-1 over the domain; :mod:`assim.transport.synthetic`);
    a true flux drawn from the prior; observations =
    background (410 ppm) + bias + H x_true + N(0, 1 ppm). Files: ``mask.nc`` (CF flag
    meanings), ``footprints/*.nc`` (PARIS layout), ``observations.nc`` (an Observation Dataset
    with ``background``), ``truth.nc`` and ``regional.toml`` (solving one offset per site).
    """
    from assim.config import Config, RunConfig, TransportConfig
    from assim.report import atomic_write
    from assim.transport import make_transport
    from assim.transport.synthetic import block_regions, write_footprint_file

    directory = Path(directory)
    (directory / "footprints").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    latitude, longitude = np.arange(42.25, 48.0, 0.5), np.arange(0.25, 9.0, 0.5)
    mask, _ = block_regions(latitude, longitude, 2, 3)
    codes = np.unique(mask.values)
    mask = mask.assign_attrs(flag_values=codes, flag_meanings=" ".join(f"block_{c}" for c in codes))
    atomic_write(directory / "mask.nc", mask.to_dataset().to_netcdf)
    sites = {"AAA": (43.5, 2.0), "BBB": (46.5, 4.5), "CCC": (44.0, 7.5)}
    time = pd.date_range("2020-01-01", "2020-02-29 18:00", freq="6h").to_numpy()
    for k, (site, position) in enumerate(sites.items()):
        path = directory / "footprints" / f"{site}-10magl_TWIN.nc"
        write_footprint_file(path, site, position, time, latitude, longitude, peak=0.05, seed=seed + k)
    options = {"directory": str(directory / "footprints"), "region_mask": str(directory / "mask.nc")}
    config = Config(
        run=RunConfig(case="regional", output_dir=str(directory / "output"), reference_period=(2020, 2020)),
        transport=TransportConfig("footprints", options),
        regional=RegionalConfig(
            observations=(str(directory / "observations.nc"),),
            add_mismatch=False,
            site_offset_sd_ppm=1.0,
            truth=str(directory / "truth.nc"),
        ),
    )
    transport = make_transport("footprints", **options)
    state = StateVector(month_starts("2020-01", "2020-02"), transport.regions())
    flux, sd = regional_prior(config.regional, state)
    truth = flux.ravel() + regional_covariance(config.regional, state, sd).sample(rng)
    table = transport.releases()
    site = table["site"].values.astype(str)
    bias = np.where(site == "BBB", 0.5, 0.0)
    value = 410.0 + bias + transport.jacobian(state, table).matvec(truth) + rng.standard_normal(site.size)
    obs = observations.observation_dataset(
        value,
        np.ones(site.size),
        units="ppm",
        time=table["time"].values,
        latitude=table["release_latitude"].values,
        longitude=table["release_longitude"].values,
        altitude=np.full(site.size, 10.0),
        site=site,
        platform="surface",
        category="continental",
        data_vars={"background": ("obs", np.full(site.size, 410.0), {"units": "ppm"})},
        attrs={"title": "assim regional twin experiment (synthetic)"},
    )
    atomic_write(directory / "observations.nc", obs.to_netcdf)
    atomic_write(directory / "truth.nc", state.to_dataarray(truth, "flux").to_dataset().to_netcdf)
    return atomic_write(directory / "regional.toml", lambda tmp: tmp.write_text(config.to_toml(), encoding="utf-8"))
