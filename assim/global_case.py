"""The real global case: the land sink by year from NOAA CO2, with the other budget terms uncertain.

State: the monthly flux of the 11 TransCom-3 land regions (the *natural* land flux, -S_LAND in
Global Carbon Budget terms), plus annual fossil (E_FOS - S_CEMENT), ocean (-S_OCEAN) and land-use
change (E_LUC) fluxes with the GCB 2025 values as prior means and their stated 1-sigma as prior
sd, plus the initial CO2 mole fraction; optionally one offset per station (calibration scale and
representativeness of a point against a box). One spin-up year precedes ``first_year``.

Observations: NOAA's global marine-surface monthly means (sampling the mean of the four
surface boxes of the AGAGE 12-box model); optionally NOAA/CSIRO/SO station monthly means for
the latitudinal split. NOAA's annual growth rates are derived from the same network, so they are
*withheld* and used to check the posterior (assimilating both would count the data twice).

R = measurement^2 + model-data mismatch^2 (temporally correlated within a site, AR(1) in
months) + transport error^2, the last being the change in the prior simulation when every
box-model timescale is stretched by ``transport_error_factor`` (default 1.2, i.e. an
interhemispheric exchange time 20 % longer). Everything is documented in docs/global_case.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.optimize
import xarray as xr
from scipy.linalg import block_diag
from scipy.stats import norm

import observations
from assim.covariance import (
    BlockDiagonalCovariance,
    ExponentialCorrelation,
    StackedCovariance,
    prior_covariance,
    to_dense,
)
from assim.posterior import Posterior, annual_mean_weights, land_aggregates
from assim.problem import Problem
from assim.state import LATITUDE_BANDS, StateVector, flux_sources, month_starts
from assim.summary import summarize
from assim.transport import Jacobian, Transport, make_transport
from assim.transport.jacobian import cache_dir
from observations.budget import stated_uncertainty
from observations.errors import add_mismatch, usable
from observations.selection import monthly_means, period_means
from priors import land_flux_prior
from priors.climatology import climatological_prior
from priors.drivers import CLIMATE, default_data_dir
from priors.teachers import TRENDY_DIR

BUNDLED = "bundled"

#: Files of the global case: name -> path under ../shared/data (the same names are bundled in assim/data).
DATA_FILES = {
    "noaa_monthly": "noaa_co2_global/co2_mm_gl.csv",
    "noaa_annual": "noaa_co2_global/co2_annmean_gl.csv",
    "noaa_growth": "noaa_co2_global/co2_gr_gl.csv",
    "gcb_budget": "global_carbon_budget/gcb2025_global_budget_GtC.csv",
    "gcb_dgvm": "global_carbon_budget/gcb2025_terrestrial_sink_DGVMs_GtC.csv",
}

#: Station records for the latitudinal split (needs the shared data folder).
STATION_FILES = (
    "noaa_co2_global/co2_mm_mlo.csv",
    "station_co2/noaa_insitu_monthly_v2016-08/co2_brw_surface-insitu_1_ccgg_MonthlyData.txt",
    "station_co2/noaa_insitu_monthly_v2016-08/co2_smo_surface-insitu_1_ccgg_MonthlyData.txt",
    "station_co2/noaa_insitu_monthly_v2016-08/co2_spo_surface-insitu_1_ccgg_MonthlyData.txt",
    "station_co2/noaa_flask_monthly/co2_asc_surface-flask_1_ccgg_month.txt",
    "station_co2/noaa_flask_monthly/co2_kum_surface-flask_1_ccgg_month_DERIVED_noheader.csv",
    "station_co2/southern_ocean_long2021/SO_CO2_monthly.txt",
)


@dataclass(frozen=True)
class Component:
    """A known flux carried as annual state elements: GCB prior, its 1-sigma and where it goes.

    ``gcb_term`` names the GCB term whose stated 1-sigma (:data:`observations.budget.TERM_UNCERTAINTY`)
    the prior takes. ``bands`` splits the flux over the four surface boxes (north to south); ``bands_late`` is the
    split from 2020 on, linearly interpolated from 1990 (fossil emissions moved south with Asia).
    """

    description: str
    bands: tuple[float, float, float, float]
    gcb_term: str
    correlation_years: float
    bands_late: tuple[float, float, float, float] | None = None

    def split(self, year: int) -> np.ndarray:
        early = np.asarray(self.bands)
        if self.bands_late is None:
            return early
        w = np.clip((year - 1990) / 30, 0, 1)
        return (1 - w) * early + w * np.asarray(self.bands_late)


#: The budget terms other than the natural land flux, in flux sign (positive to the atmosphere).
#: Zonal splits are approximate: fossil after EDGAR-like zonal totals, ocean after RECCAP2
#: (DeVries et al. 2023; southern extratropics dominate, tropics a weak source), land-use change
#: mostly tropical (Houghton & Nassikas 2017). 1-sigma as stated by the GCB 2025 (observations.budget: fossil 5 %,
#: ocean 0.4, LUC 0.7 PgC/yr), errors correlated across years (exponential, length in years).
COMPONENTS = {
    "fossil": Component(
        "E_FOS - S_CEMENT (GCB 2025)",
        (0.78, 0.16, 0.04, 0.02),
        "fossil_emissions_excl_carbonation",
        10.0,
        (0.66, 0.28, 0.04, 0.02),
    ),
    "ocean": Component("-S_OCEAN (GCB 2025)", (0.38, -0.05, -0.05, 0.72), "ocean_sink", 5.0),
    "land_use": Component("E_LUC (GCB 2025)", (0.10, 0.40, 0.45, 0.05), "land_use_change_emissions", 10.0),
}


@dataclass(frozen=True)
class RealConfig:
    """The real-data case (TOML section ``[real]``).

    data_dir : "bundled" (the small global tables shipped in the package) or a path to the shared
    data folder (needed for ``stations``). Fluxes in PgC/yr, positive to the atmosphere.
    """

    first_year: int = 1990
    last_year: int = 2024
    tail_years: int = 1
    data_dir: str = BUNDLED
    stations: bool = False
    prior: str = "climatology"
    emulator_path: str = ""
    prior_mean_land_flux: float = -2.5
    prior_seasonal_amplitude: float = 5.0
    prior_sd_scale: float = 0.4
    time_correlation_months: float = 3.0
    region_correlation_km: float = 1500.0
    initial_sd_ppm: float = 2.0
    station_offset_sd_ppm: float = 1.0
    averaging: str = "month"
    global_mismatch_ppm: float = 0.15
    station_mismatch_ppm: float = 0.3
    seasonal_error_ppm: float = 1.0
    mismatch_correlation_months: float = 3.0
    transport_error_factor: float = 1.2
    estimate_mismatch_scale: bool = True

    def __post_init__(self) -> None:
        if not 1980 <= self.first_year <= self.last_year <= 2024:
            raise ValueError(
                f"first_year/last_year must satisfy 1980 <= first <= last <= 2024 (GCB 2025 and NOAA global "
                f"means), got {self.first_year}..{self.last_year}"
            )
        if self.prior not in ("climatology", "emulator"):
            raise ValueError(f"prior must be 'climatology' or 'emulator', got {self.prior!r}")
        if self.prior == "emulator" and self.data_dir == BUNDLED:
            raise ValueError("prior = 'emulator' needs data_dir pointing at the shared data folder (drivers, TRENDY)")
        if self.averaging not in ("month", "year"):
            raise ValueError(f"averaging must be 'month' or 'year', got {self.averaging!r}")
        if not 0 <= self.tail_years <= 2:
            raise ValueError(f"tail_years must be 0, 1 or 2, got {self.tail_years}")
        if self.stations and self.data_dir == BUNDLED:
            raise ValueError("stations = true needs data_dir pointing at the shared data folder (not 'bundled')")
        if self.transport_error_factor <= 0:
            raise ValueError(f"transport_error_factor must be > 0, got {self.transport_error_factor}")


def data_path(config: RealConfig, name: str) -> Path:
    """Where a data file is: inside the package (``bundled``) or under ``data_dir``; clear error if absent."""
    if config.data_dir == BUNDLED:
        return Path(str(resources.files("assim.data").joinpath(Path(DATA_FILES[name]).name)))
    path = Path(config.data_dir).expanduser() / DATA_FILES.get(name, name)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: [real] data_dir = {config.data_dir!r} must be the shared data folder "
            "(with noaa_co2_global/, global_carbon_budget/, station_co2/), or 'bundled' for the global case"
        )
    return path


def demo_real_config(data_dir: Path | None = None) -> RealConfig:
    """The real case of ``assim demo``: the emulator prior when the shared data are there.

    With the tables of the global case and the emulator's drivers and teachers under
    ``data_dir`` (default ``$ASSIM_SHARED_DATA`` or ``../shared/data``), the land prior is the
    DGVM emulator (trained once, then cached); otherwise the bundled tables and the climatology.
    """
    shared = Path(data_dir or default_data_dir())
    needed = [*DATA_FILES.values(), str(CLIMATE), str(TRENDY_DIR)]
    if all((shared / name).exists() for name in needed):
        return RealConfig(data_dir=str(shared), prior="emulator")
    return RealConfig()


def gcb_table(config: RealConfig) -> pd.DataFrame:
    """GCB 2025 global budget terms by year (PgC/yr, GCB sign: sinks positive = uptake)."""
    ds = observations.read(data_path(config, "gcb_budget"))
    table = ds.to_dataframe()[["value", "term"]].assign(year=ds["time"].dt.year.values)
    return table.pivot(index="year", columns="term", values="value")


def _years(config: RealConfig) -> np.ndarray:
    """State years: one spin-up year, ``first_year..last_year``, then ``tail_years`` constrained by later data."""
    return np.arange(config.first_year - 1, config.last_year + config.tail_years + 1)


def build_state(config: RealConfig, regions: xr.Dataset) -> StateVector:
    """Land regions x months from one spin-up year before ``first_year``, plus the annual extras."""
    years = _years(config)
    labels, components, units, extra_years = [], [], [], []
    for name in COMPONENTS:
        labels += [f"{name} {y}" for y in years]
        components += [name] * years.size
        units += ["PgC yr-1"] * years.size
        extra_years += years.tolist()
    labels.append("initial")
    components.append("initial")
    units.append("ppm")
    extra_years.append(int(years[0]))
    extras = xr.Dataset(
        coords={
            "extra": labels,
            "component": ("extra", components),
            "units": ("extra", units),
            "extra_year": ("extra", extra_years),
        }
    )
    return StateVector(month_starts(f"{years[0]}-01", f"{years[-1]}-12"), regions, extras)


def _extra_prior(config: RealConfig, gcb: pd.DataFrame, initial_ppm: float) -> tuple[np.ndarray, np.ndarray]:
    """Prior mean (extras,) and covariance (extras, extras) of the extra components."""
    years = _years(config)
    missing = sorted(set(years[years <= config.last_year]) - set(gcb.index))
    if missing:
        raise ValueError(f"GCB budget table has no values for years {missing}")
    # tail years (after the budget ends) persist the last budget year with twice its uncertainty
    g = gcb.reindex(years).ffill()
    tail = np.where(years > gcb.index.max(), 2.0, 1.0)
    values = {
        "fossil": (g["fossil_emissions_excl_carbonation"] - g["cement_carbonation_sink"]).to_numpy(),
        "ocean": -g["ocean_sink"].to_numpy(),
        "land_use": g["land_use_change_emissions"].to_numpy(),
    }
    means, blocks = [], []
    lags = np.abs(years[:, None] - years[None, :]).astype(float)
    for name, component in COMPONENTS.items():
        sd = tail * stated_uncertainty(component.gcb_term, values[name])
        means.append(values[name])
        blocks.append(sd[:, None] * ExponentialCorrelation(component.correlation_years).matrix(lags) * sd[None, :])
    means.append([initial_ppm])
    blocks.append(np.array([[config.initial_sd_ppm**2]]))
    return np.concatenate(means), block_diag(*blocks)


_COORDS = ("time", "latitude", "longitude", "altitude", "site", "platform", "category", "time_start", "time_end")


def read_observations(config: RealConfig) -> xr.Dataset:
    """NOAA's global means (and station records) inside the state's years, with mismatch added.

    ``averaging = "month"`` keeps monthly means (the seasonal cycle the 12-box model misses is
    carried in R as a random seasonal error, see :func:`observation_covariance`); ``"year"`` uses
    calendar-year means (a station year needs all 12 months).
    """
    years = _years(config)
    annual = config.averaging == "year"
    parts = [observations.read(data_path(config, "noaa_annual" if annual else "noaa_monthly"))]
    if config.stations:
        stations = [observations.read(data_path(config, f)) for f in STATION_FILES]
        parts += [_annual_means(ds) if annual else monthly_means(ds, correlation=1.0) for ds in stations]
    kept = []
    for ds in map(usable, parts):
        inside = np.isin(ds["time_start"].dt.year.values, years) & (ds["time_end"].dt.year.values <= years[-1] + 1)
        ds = ds.isel(obs=inside)
        if ds.sizes["obs"]:
            kept.append(xr.Dataset({name: ("obs", ds[name].values) for name in ("value", "uncertainty", *_COORDS)}))
    merged = xr.concat(kept, dim="obs").set_coords(list(_COORDS))
    merged["value"].attrs["units"] = merged["uncertainty"].attrs["units"] = "ppm"
    merged = observations.validate(merged.assign_attrs(source_file="global case observations"))
    mismatch = {"global": config.global_mismatch_ppm, "mbl": config.station_mismatch_ppm}
    merged = add_mismatch(merged, observations.errors.ErrorModel(mismatch=mismatch))
    order = np.lexsort((merged["time"].values, merged["site"].values))
    return merged.isel(obs=order)


def _annual_means(ds: xr.Dataset) -> xr.Dataset:
    """Calendar-year means of a station's monthly record: one value per site and year with all 12 months.

    Several records at one site (labs, methods) are first averaged per month. The uncertainty of
    the annual mean takes the monthly errors as fully correlated (no reduction), the cautious choice.
    """
    annual = period_means(monthly_means(ds, correlation=1.0), "year", correlation=1.0)
    return annual.isel(obs=(annual["n_values"] == 12).values)


def _band_jacobian(transport: Transport, state: StateVector, obs: xr.Dataset) -> np.ndarray:
    """(obs, month, band): response to 1 PgC/yr emitted into each surface band in each month."""
    bands = flux_sources({f"band {b}": tuple(np.eye(4)[i]) for i, b in enumerate(LATITUDE_BANDS)})
    H = transport.jacobian(StateVector(state.time, bands), obs).todense()
    return np.asarray(H).reshape(obs.sizes["obs"], state.time.size, 4)


def build_jacobian(transport: Transport, state: StateVector, obs: xr.Dataset) -> np.ndarray:
    """Dense H (obs, state): land block from the transport, annual extras from band responses, initial = 1."""
    land = np.asarray(transport.jacobian(StateVector(state.time, state.regions), obs).todense())
    per_band = _band_jacobian(transport, state, obs)
    year_of_month = pd.DatetimeIndex(state.time).year.to_numpy()
    columns = []
    for name, year in zip(state.extras["component"].values, state.extras["extra_year"].values, strict=True):
        if name == "initial":
            columns.append(np.ones(obs.sizes["obs"]))
        elif name == "site_offset":
            continue
        else:
            months = year_of_month == year
            columns.append(per_band[:, months, :].sum(axis=1) @ COMPONENTS[str(name)].split(int(year)))
    H = np.column_stack([land, *columns])
    if "site_offset" in state.extras["component"].values:
        H = np.hstack([H, state.site_offset_matrix(obs).toarray()])
    return H


def add_station_offsets(state: StateVector, obs: xr.Dataset) -> StateVector:
    """One offset (ppm) per station (not for the global means), appended to the extras."""
    return state.with_site_offsets(sorted(set(obs["site"].values[obs["category"].values != "global"].tolist())))


def observation_covariance(
    obs: xr.Dataset, transport_error: np.ndarray, config: RealConfig, mismatch_scale: float = 1.0
) -> BlockDiagonalCovariance:
    """R: per site, measurement^2 + transport error^2 on the diagonal plus AR(1)-correlated mismatch.

    With monthly data a random seasonal cycle is added: a first harmonic of amplitude sd
    ``seasonal_error_ppm`` and a second of half that, the same every year (covariance
    s^2 (cos(w dt) + cos(2 w dt) / 4)), so a seasonal cycle the box model cannot reproduce is not
    read as interannual signal. The mismatch (ppm, by category) is multiplied by ``mismatch_scale``.
    ``obs`` must be sorted by site, then time (as :func:`read_observations` returns it).
    """
    blocks = []
    sites = obs["site"].values
    for site in pd.unique(sites):
        idx = np.flatnonzero(sites == site)
        months = obs["time"].values[idx].astype("datetime64[M]").astype(float)
        corr = ExponentialCorrelation(config.mismatch_correlation_months).matrix(np.abs(months[:, None] - months))
        mismatch = mismatch_scale * obs["mismatch"].values[idx]
        block = mismatch[:, None] * corr * mismatch[None, :]
        if config.averaging == "month":
            angle = 2 * np.pi * (months[:, None] - months) / 12
            block += config.seasonal_error_ppm**2 * (np.cos(angle) + 0.25 * np.cos(2 * angle))
        block[np.diag_indices_from(block)] += (
            obs["measurement_uncertainty"].values[idx] ** 2 + transport_error[idx] ** 2
        )
        blocks.append(block)
    return BlockDiagonalCovariance(blocks)


def chi2_mismatch_scale(
    H: np.ndarray, B: StackedCovariance, d: np.ndarray, make_R: Callable[[float], BlockDiagonalCovariance]
) -> float:
    """Scale of the model-data mismatch that makes the innovation chi-square per observation 1.

    d^T (H B H^T + R(s))^-1 d / m = 1 (Tarantola 2005, sec. 6.8; Michalak et al. 2005, JGR 110,
    D24107); H B H^T is formed once, each trial costs one (m, m) Cholesky. Returns 1 when the
    stated errors already give chi-square <= 1 (errors are never shrunk below what is stated).
    """
    HBHt = H @ B.matmat(H.T)

    def excess(scale: float) -> float:
        S = HBHt + make_R(scale).todense()
        factor = scipy.linalg.cho_factor(S, lower=True)
        return float(d @ scipy.linalg.cho_solve(factor, d)) / d.size - 1.0

    if excess(1.0) <= 0:
        return 1.0
    high = 2.0
    while excess(high) > 0:
        high *= 2.0
        if high > 1e3:
            raise ValueError("no model-data mismatch scale up to 1000 brings chi-square to 1: check the data")
    return float(scipy.optimize.brentq(excess, 1.0, high, xtol=1e-3))


def land_prior(config: RealConfig, state: StateVector, regions: xr.Dataset, gcb: pd.DataFrame) -> xr.Dataset:
    """The prior natural land flux (time, region), PgC/yr: the climatology or the DGVM emulator.

    The emulator learnt TRENDY-v9 NBP, which includes land-use change (its 2000-2009 mean net sink
    is 1.3 PgC/yr, the GCB's S_LAND minus E_LUC); the natural flux is its prediction minus the
    GCB's E_LUC, shared among regions by the land-use band split and each region's area in the band.
    """
    if config.prior == "climatology":
        return climatological_prior(
            state.time, regions, config.prior_mean_land_flux, config.prior_seasonal_amplitude, config.prior_sd_scale
        )
    start, end = (np.datetime_as_string(state.time[i], unit="M") for i in (0, -1))
    model_path = Path(config.emulator_path) if config.emulator_path else cache_dir() / "land_flux_emulator.npz"
    net = land_flux_prior(str(start), str(end), data_dir=Path(config.data_dir).expanduser(), model_path=model_path)
    area_in_band = regions["band_fraction"] * regions["area"]
    share = (area_in_band / area_in_band.sum("region")).values @ np.asarray(COMPONENTS["land_use"].bands)
    luc = gcb["land_use_change_emissions"].reindex(pd.DatetimeIndex(state.time).year).ffill().to_numpy()
    natural = net["flux"].transpose("time", "region") - xr.DataArray(np.outer(luc, share), dims=("time", "region"))
    return net.assign(flux=natural.assign_attrs(net["flux"].attrs)).assign_attrs(
        prior_source=f"{net.attrs.get('prior_source', 'DGVM emulator')} minus GCB E_LUC (natural land flux)"
    )


def land_prior_sd(prior: xr.Dataset, config: RealConfig) -> tuple[np.ndarray, float]:
    """The land prior's 1-sigma (time, region), PgC/yr, and the e-folding time (months) of its errors.

    The emulator's interannual error (``flux_sd_interannual``, with its fitted
    ``time_correlation_months``) when the prior has it: its monthly ``flux_sd`` is mostly each
    DGVM's own seasonal cycle, an error that repeats every year and that R's seasonal term
    already carries; with a short correlation it made the annual prior about 3 PgC/yr loose.
    Else ``flux_sd`` with ``config.time_correlation_months``.
    """
    if "flux_sd_interannual" in prior:
        sd = prior["flux_sd_interannual"]
        return sd.transpose("time", "region").values, float(sd.attrs["time_correlation_months"])
    return prior["flux_sd"].transpose("time", "region").values, config.time_correlation_months


@dataclass(frozen=True)
class GlobalCase:
    """The assembled problem and what the summary needs besides the posterior."""

    problem: Problem
    gcb: pd.DataFrame
    prior_source: str
    transport: Transport
    mismatch_scale: float


def global_problem(config: RealConfig, regions: xr.Dataset, transport_name: str = "box12", **options) -> GlobalCase:
    """Read the data and assemble the real global Problem (see the module docstring)."""
    transport = make_transport(transport_name, **options)
    gcb = gcb_table(config)
    obs = read_observations(config)
    state = add_station_offsets(build_state(config, regions), obs)
    prior = land_prior(config, state, regions, gcb)
    first_global = obs["value"].values[(obs["category"] == "global").values][0]
    extra_mean, extra_cov = _extra_prior(config, gcb, first_global)
    n_offsets = state.n_extra - extra_mean.size
    x_prior = np.concatenate([prior["flux"].values.ravel(), extra_mean, np.zeros(n_offsets)])
    sd, months = land_prior_sd(prior, config)
    land_cov = prior_covariance(
        StateVector(state.time, regions),
        sd,
        ExponentialCorrelation(months),
        ExponentialCorrelation(config.region_correlation_km),
    )
    B = StackedCovariance([land_cov, block_diag(extra_cov, np.eye(n_offsets) * config.station_offset_sd_ppm**2)])
    H = build_jacobian(transport, state, obs)
    perturbed = make_transport(transport_name, **{**options, "timescale_factor": config.transport_error_factor})
    transport_error = build_jacobian(perturbed, state, obs) @ x_prior - H @ x_prior

    def make_R(scale: float) -> BlockDiagonalCovariance:
        return observation_covariance(obs, transport_error, config, scale)

    y = obs["value"].values
    scale = chi2_mismatch_scale(H, B, y - H @ x_prior, make_R) if config.estimate_mismatch_scale else 1.0
    obs = obs.assign(mismatch=obs["mismatch"] * scale).assign_attrs(mismatch_scale=scale)
    problem = Problem(state, x_prior, B, Jacobian(H), y, make_R(scale), obs).validate()
    return GlobalCase(problem, gcb, prior.attrs["prior_source"], transport, scale)


def growth_rate_check(case: GlobalCase, posterior: Posterior, config: RealConfig) -> xr.Dataset:
    """NOAA annual growth rates (withheld) against the prior and posterior simulation (ppm/yr).

    The simulated rate of year y is the global surface mean of (Dec y + Jan y+1)/2 minus
    (Dec y-1 + Jan y)/2, NOAA's definition; years whose January y+1 lies outside the state are left out.
    """
    problem = posterior.problem
    growth = observations.read(data_path(config, "noaa_growth"))
    years = growth["time"].dt.year.values
    state = problem.state
    month_index = {(t.year, t.month): i for i, t in enumerate(pd.DatetimeIndex(state.time))}
    mean_obs = observations.observation_dataset(
        np.zeros(state.time.size),
        np.ones(state.time.size),
        units="ppm",
        time=state.time + np.timedelta64(14, "D"),
        latitude=np.full(state.time.size, np.nan),
        longitude=np.full(state.time.size, np.nan),
        altitude=np.full(state.time.size, np.nan),
        site="GLOBAL",
        platform="surface",
        category="global",
    )
    H_mean = build_jacobian(case.transport, state, mean_obs)
    rows, kept = [], []
    for y in years:
        keys = [(y, 12), (y + 1, 1), (y - 1, 12), (y, 1)]
        if all(k in month_index for k in keys):
            w = np.zeros(state.time.size)
            w[[month_index[k] for k in keys]] = [0.5, 0.5, -0.5, -0.5]
            rows.append(w @ H_mean)
            kept.append(y)
    G = np.array(rows)
    sel = np.isin(years, kept)
    post_var = np.einsum("ij,ij->i", G @ to_dense(posterior.covariance), G)
    return xr.Dataset(
        {
            "growth_rate_observed": ("year", growth["value"].values[sel]),
            "growth_rate_observed_sd": ("year", growth["uncertainty"].values[sel]),
            "growth_rate_prior": ("year", G @ problem.x_prior),
            "growth_rate_posterior": ("year", G @ posterior.mean),
            "growth_rate_posterior_sd": ("year", np.sqrt(post_var)),
        },
        coords={"year": np.array(kept)},
    )


def probability_below(anomaly_mean: np.ndarray, anomaly_sd: np.ndarray) -> np.ndarray:
    """P(sink below the reference mean) for a Gaussian anomaly of the sink (uptake positive)."""
    return norm.cdf(-np.asarray(anomaly_mean) / np.asarray(anomaly_sd))


def uncertainty_budget(posterior: Posterior, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Share of the posterior variance of each weighted total that each error source leaves.

    A = A B^-1 A + A H^T R^-1 H A, so for a total w.x with g = A w the variance w^T A w splits into
    g_j^T B_j^-1 g_j per independent prior block j (land flux; each extra component) and
    |R^-1/2 H g|^2 for the observations. Returns source -> (k,) variances, (PgC/yr)^2.

    Parameters
    ----------
    weights : ndarray (k, n)
    """
    problem = posterior.problem
    state, B = problem.state, problem.B
    G = to_dense(posterior.covariance) @ weights.T  # (n, k)
    land_cov, extra_cov = B.blocks
    n_flux = state.n_flux
    parts = {"land prior": np.einsum("ik,ik->k", G[:n_flux], land_cov.solve(G[:n_flux]))}
    for component in pd.unique(state.extras["component"].values):
        idx = state.extra_index(str(component))
        block = np.asarray(extra_cov)[np.ix_(idx - n_flux, idx - n_flux)]
        parts[f"{component} prior"] = np.einsum("ik,ik->k", G[idx], np.linalg.solve(block, G[idx]))
    HG = problem.R.whiten(problem.H.matmat(G))
    parts["observations"] = np.einsum("ik,ik->k", HG, HG)
    return parts


def summarize_global(
    case: GlobalCase, posterior: Posterior, config: RealConfig, reference: tuple[int, int]
) -> xr.Dataset:
    """The run Dataset (docs/outputs.md) of the real case, with the GCB comparison and the 2023/2024 analysis."""
    years = np.arange(config.first_year, config.last_year + 1)
    run = summarize(posterior, reference=reference, attrs={"prior_source": case.prior_source})
    run = run.sel(year=years, year_b=years)
    gcb = case.gcb.loc[years]
    run = run.merge(_gcb_comparison(gcb, config))
    run["probability_below_reference"] = xr.DataArray(
        probability_below(run["land_sink_anomaly_posterior"], run["land_sink_anomaly_posterior_sd"]),
        dims=("year", "aggregate"),
        attrs={"units": "1", "long_name": "probability that the land sink is below its reference-period mean"},
    )
    run = run.merge(_tropical_share(run, reference))
    weights = _global_weights(posterior.state, years)
    budget = uncertainty_budget(posterior, weights)
    run["uncertainty_budget"] = xr.DataArray(
        np.stack(list(budget.values()), axis=1),
        dims=("year", "error_source"),
        coords={"error_source": list(budget)},
        attrs={
            "units": "PgC2 yr-2",
            "long_name": "posterior variance of the global land sink left by each error source",
        },
    )
    run = run.merge(growth_rate_check(case, posterior, config).rename(year="growth_year"))
    return run.assign_attrs(
        title=f"assim: global land sink {config.first_year}-{config.last_year} from NOAA CO2 and the GCB 2025 terms",
        mismatch_scale=case.mismatch_scale,
        transport=case.transport.describe(),
        observations=f"{posterior.problem.m} NOAA {config.averaging}ly means"
        + (" with stations" if config.stations else ""),
    )


def _global_weights(state: StateVector, years: np.ndarray) -> np.ndarray:
    """(years, n) weights of the annual-mean global land sink (uptake positive: minus the flux)."""
    weights = annual_mean_weights(state, land_aggregates(state.regions).sel(aggregate=["Global land"])).sel(year=years)
    flat = state.to_vector(weights.isel(aggregate=0).transpose("time", "region", "year"))
    return -state.pad(flat).T


def _gcb_comparison(gcb: pd.DataFrame, config: RealConfig) -> xr.Dataset:
    """GCB 2025 land sinks by year: S_LAND, S_LAND + B_IM (atmosphere-implied) and the DGVM mean/spread."""
    dgvm = observations.read(data_path(config, "gcb_dgvm"))
    mean = dgvm.isel(obs=(dgvm["site"] == "Multi-model_mean").values)
    by_year = pd.Series(mean["value"].values, index=mean["time"].dt.year.values)
    sd = pd.Series(mean["uncertainty"].values, index=mean["time"].dt.year.values)
    years = gcb.index.to_numpy()
    terms = ("fossil_emissions_excl_carbonation", "land_use_change_emissions", "atmospheric_growth", "ocean_sink")
    implied_sd = np.sqrt(sum(stated_uncertainty(term, gcb[term].to_numpy()) ** 2 for term in terms))
    attrs = {"units": "PgC yr-1", "sign": "positive = uptake"}
    return xr.Dataset(
        {
            "gcb_land_sink": ("year", gcb["land_sink"].to_numpy(), {**attrs, "long_name": "GCB 2025 S_LAND (DGVMs)"}),
            "gcb_land_sink_sd": (
                "year",
                stated_uncertainty("land_sink", gcb["land_sink"].to_numpy()),
                {**attrs, "long_name": "GCB 2025 S_LAND 1-sigma"},
            ),
            "gcb_atmosphere_implied_land_sink": (
                "year",
                (gcb["land_sink"] + gcb["budget_imbalance"]).to_numpy(),
                {**attrs, "long_name": "GCB 2025 S_LAND + B_IM = E_FOS + E_LUC - G_ATM - S_OCEAN - S_CEMENT"},
            ),
            "gcb_atmosphere_implied_land_sink_sd": (
                "year",
                implied_sd,
                {**attrs, "long_name": "1-sigma of S_LAND + B_IM from the GCB's stated term uncertainties"},
            ),
            "gcb_dgvm_mean": ("year", by_year.reindex(years).to_numpy(), {**attrs, "long_name": "GCB 2025 DGVM mean"}),
            "gcb_dgvm_sd": ("year", sd.reindex(years).to_numpy(), {**attrs, "long_name": "GCB 2025 DGVM spread"}),
        },
        coords={"year": years},
    )


def _tropical_share(run: xr.Dataset, reference: tuple[int, int], draws: int = 20000) -> xr.Dataset:
    """Share of the global land-sink anomaly in the tropics, by Monte Carlo from the joint posterior."""
    years = run["year"].values
    aggs = ["Global land", "Tropics (30S-30N)"]
    cov = run["land_sink_posterior_covariance"].sel(aggregate=aggs, aggregate_b=aggs).values  # (y, a, y, a)
    mean = run["land_sink_posterior"].sel(aggregate=aggs).values  # (y, a)
    in_ref = (years >= reference[0]) & (years <= reference[1])
    D = np.eye(years.size) - np.outer(np.ones(years.size), in_ref / in_ref.sum())
    k = years.size * 2
    C = np.einsum("yz,zawb,vw->yavb", D, cov, D).reshape(k, k)
    m = (D @ mean).reshape(k)
    rng = np.random.default_rng(0)
    sample = rng.multivariate_normal(m, 0.5 * (C + C.T), size=draws, method="eigh").reshape(draws, years.size, 2)
    share = sample[:, :, 1] / sample[:, :, 0]
    attrs = {"units": "1", "long_name": "tropical (30S-30N) share of the global land-sink anomaly"}
    return xr.Dataset(
        {
            "tropical_share_of_anomaly": ("year", np.median(share, axis=0), {**attrs, "statistic": "median"}),
            "tropical_share_of_anomaly_p16": ("year", np.percentile(share, 16, axis=0), attrs),
            "tropical_share_of_anomaly_p84": ("year", np.percentile(share, 84, axis=0), attrs),
        },
        coords={"year": years},
    )
