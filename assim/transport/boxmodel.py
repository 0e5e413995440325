"""The AGAGE 12-box model of the atmosphere for an inert tracer (CO2 without chemical loss).

Twelve boxes: the four latitude bands of :data:`assim.state.LATITUDE_BANDS` (90-30N, 30N-0,
0-30S, 30-90S, each a quarter of the globe) times three levels split at 500 and 200 hPa
(:data:`LEVELS`). Box air masses are proportional to pressure thickness x band area: 0.125,
0.075 and 0.05 of the atmosphere for the surface (1000-500 hPa), upper-tropospheric
(500-200 hPa) and stratospheric (200-0 hPa) boxes.

Transport follows Cunnold et al. (1983, JGR 88(C13), 8379-8400; 1994, JGR 99(D1), 1107-1126)
as re-derived by Rigby et al. (2013, ACP 13, 2691-2702) and coded in ``py12box``
(Rigby & Western, MIT licence): eddy mixing between adjacent boxes with a timescale per
interface, plus a mean meridional (Hadley) circulation with centred differences, all by
calendar month and periodic from year to year. The timescales ship as
``data/agage12_transport.csv`` (see DATA_SOURCES.md). A mixing timescale refers to the
heavier box of its pair; an advection timescale gives the surface-level air-mass flux
between two surface boxes in units of a surface box's mass, positive from ``box_b`` into
``box_a``; the upper troposphere carries the return flow and vertical flows close each
column by continuity. That last step differs from ``py12box``, which ships rounded
vertical velocities balanced only globally: there a uniform 400 ppm field drifts into
spurious gradients of up to 2 ppm (0.5 %), here a uniform field is an exact steady state.
Time runs in real days (28-31 per month), not in ``py12box``'s 30-day model months.
``py12box`` itself is not a dependency: it pins numba 0.55, reads species files and models
chemical loss; an inert tracer needs only its transport matrix, rebuilt here.

The model is linear, ``d chi / dt = F_m chi + s``, with ``F_m`` the (12, 12) transport
matrix of calendar month ``m`` (day-1), mass conserving (``mass @ F_m = 0``) and with
``F_m @ 1 = 0``. Within a month ``F_m`` and ``s`` are constant, so the end-of-month state
and the exact monthly mean come from one matrix exponential per month length
(:class:`MonthPropagator`); nothing is time-stepped.

The default parameters imply an interhemispheric exchange time of 1.32 yr
(:meth:`BoxModel12.interhemispheric_exchange_time`, the two-box definition of Jacob 1999,
ch. 3, for a steady source spread evenly over the northern surface boxes; 1.11 yr for a
source in 30N-0 only, 1.54 yr for 90N-30N only; the hemispheric difference left by a pulse
decays with e-folding time 0.69 yr, i.e. tau_ex = 1.38 yr), of the ~1 yr order of two-box
estimates (Jacob 1999) and of SF6-based ones (Patra et al. 2011, ACP 11, 12813; Yang et al.
2019, GRL 46, 1113). A steady 1 PgC/yr emitted into the
90N-30N band keeps the 90N-30N surface box 1.23 ppm above the 30S-90S one (0.72 ppm
between hemispheric means).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.linalg
import xarray as xr

from assim.state import LATITUDE_BANDS, StateVector
from assim.transport.jacobian import Jacobian, sampling_matrix, surface_jacobian
from observations.units import PGC_PER_PPM, convert

#: Vertical levels as (bottom, top) pressure in hPa, lowest first.
LEVELS = {
    "surface": (1000.0, 500.0),
    "upper troposphere": (500.0, 200.0),
    "stratosphere": (200.0, 0.0),
}
BANDS = tuple(LATITUDE_BANDS)
#: Box labels, level-major then band north to south (the ``py12box`` order).
BOX_LABELS = tuple(f"{band} {level}" for level in LEVELS for band in BANDS)
N_BOX = len(BOX_LABELS)
N_SURFACE = len(BANDS)

DEFAULT_PARAMETERS = "agage12_transport.csv"
_PROCESSES = ("mixing", "advection")
_PARAMETER_COLUMNS = ("calendar_month", "process", "box_a", "box_b", "timescale_days")


def box_mass_fractions() -> np.ndarray:
    """Air mass of each box as a fraction of the atmosphere, shape (12,), in :data:`BOX_LABELS` order.

    Pressure thickness over the 1000 hPa column times 1/4 (each band is a quarter of the globe).
    """
    thickness = np.array([bottom - top for bottom, top in LEVELS.values()]) / 1000.0
    return np.repeat(thickness / N_SURFACE, N_SURFACE)


def read_parameters(path: Path | None = None) -> pd.DataFrame:
    """Read and check a transport-parameter table (the shipped one when ``path`` is None).

    Returns
    -------
    DataFrame
        Columns ``calendar_month`` (1-12), ``process`` (mixing | advection), ``box_a``, ``box_b``
        (labels from :data:`BOX_LABELS`) and ``timescale_days`` (days; signed for advection).
    """
    if path is None:
        with resources.files("assim.transport").joinpath("data", DEFAULT_PARAMETERS).open() as f:
            table = pd.read_csv(f, comment="#")
        name = DEFAULT_PARAMETERS
    else:
        table, name = pd.read_csv(path, comment="#"), str(path)
    _check_parameters(table, name)
    return table


def _check_parameters(table: pd.DataFrame, name: str) -> None:
    missing = set(_PARAMETER_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{name}: missing columns {sorted(missing)}; expected {list(_PARAMETER_COLUMNS)}")
    for column, allowed in (("process", _PROCESSES), ("box_a", BOX_LABELS), ("box_b", BOX_LABELS)):
        bad = ~table[column].isin(allowed)
        if bad.any():
            raise ValueError(
                f"{name}: row {int(np.flatnonzero(bad)[0])} has {column} "
                f"{table[column][bad].iloc[0]!r}; expected one of {list(allowed)}"
            )
    months = sorted(table["calendar_month"].unique())
    if months != list(range(1, 13)):
        raise ValueError(f"{name}: calendar_month must cover 1..12, found {months}")
    tau = table["timescale_days"].to_numpy(float)
    bad = ~np.isfinite(tau) | (tau == 0) | ((table["process"] == "mixing").to_numpy() & (tau < 0))
    if bad.any():
        raise ValueError(
            f"{name}: row {int(np.flatnonzero(bad)[0])} has timescale_days {tau[bad][0]}; "
            "mixing needs > 0 days and advection a finite non-zero value"
        )
    advection = table[table["process"] == "advection"]
    level_a = advection["box_a"].map(BOX_LABELS.index) // N_SURFACE
    level_b = advection["box_b"].map(BOX_LABELS.index) // N_SURFACE
    if ((level_a != 0) | (level_b != 0)).any():
        raise ValueError(
            f"{name}: advection rows must join two surface boxes (the upper "
            "troposphere return flow and vertical flows follow by continuity)"
        )


def transport_matrices(table: pd.DataFrame) -> np.ndarray:
    """Transport matrices ``F_m`` (calendar month, box, box), day-1, from a parameter table.

    ``d chi / dt = F_m @ chi`` for mole fractions ``chi`` (12,). Each mixing pair and each
    surface-level mass flux (with its return flow aloft and the vertical flows that close its
    circulation) adds a term that conserves mass (``mass @ F_m = 0``) and keeps a uniform
    field uniform (``F_m @ 1 = 0``).
    """
    mass = box_mass_fractions()
    matrices = np.zeros((12, N_BOX, N_BOX))
    for month, rows in table.groupby("calendar_month"):
        F = matrices[int(month) - 1]
        for row in rows.itertuples(index=False):
            a, b = BOX_LABELS.index(row.box_a), BOX_LABELS.index(row.box_b)
            if row.process == "mixing":
                _add_mixing(F, a, b, max(mass[a], mass[b]) / row.timescale_days, mass)
            else:
                _add_circulation(F, a, b, mass[a] / row.timescale_days, mass)
    return matrices


def _add_mixing(F: np.ndarray, a: int, b: int, air_flux: float, mass: np.ndarray) -> None:
    """Exchange ``air_flux`` (atmosphere fraction per day) each way between boxes a and b."""
    for i, j in ((a, b), (b, a)):
        F[i, i] -= air_flux / mass[i]
        F[i, j] += air_flux / mass[i]


def _add_advection(F: np.ndarray, source: int, sink: int, air_flux: float, mass: np.ndarray) -> None:
    """Move ``air_flux`` (atmosphere fraction per day) from ``source`` to ``sink``, centred differences."""
    for box, sign in ((source, -1.0), (sink, 1.0)):
        F[box, source] += sign * air_flux / 2 / mass[box]
        F[box, sink] += sign * air_flux / 2 / mass[box]


def _add_circulation(F: np.ndarray, a: int, b: int, air_flux: float, mass: np.ndarray) -> None:
    """A closed overturning cell: surface flow b -> a, rising at a, return aloft a -> b, sinking at b."""
    a_up, b_up = a + N_SURFACE, b + N_SURFACE
    for source, sink in ((b, a), (a, a_up), (a_up, b_up), (b_up, b)):
        _add_advection(F, source, sink, air_flux, mass)


class MonthPropagator(NamedTuple):
    """Exact solution operators of ``d chi / dt = F chi + s`` over one month of ``days`` days.

    ``chi_end = phi @ chi_0 + gamma @ s`` and the monthly mean is
    ``(gamma @ chi_0 + lam @ s) / days``, with ``s`` in ppm/day constant over the month.
    """

    phi: np.ndarray
    gamma: np.ndarray
    lam: np.ndarray
    days: float

    @classmethod
    def exact(cls, F: np.ndarray, days: float) -> MonthPropagator:
        """Van Loan (1978) block exponential: expm([[F, I, 0], [0, 0, I], [0, 0, 0]] * days)."""
        n = F.shape[0]
        block = np.zeros((3 * n, 3 * n))
        block[:n, :n] = F
        block[:n, n : 2 * n] = np.eye(n)
        block[n : 2 * n, 2 * n :] = np.eye(n)
        E = scipy.linalg.expm(block * days)
        return cls(E[:n, :n], E[:n, n : 2 * n], E[:n, 2 * n :], float(days))


def month_lengths(time: np.ndarray) -> np.ndarray:
    """Days in each month of ``time`` (consecutive month starts), or ValueError naming the gap."""
    index = pd.DatetimeIndex(time)
    if not (index == index.normalize()).all() or (index.day != 1).any():
        raise ValueError(f"time must hold month starts (day 1, 00:00); found {index[index.day != 1][:1].tolist()}")
    expected = pd.date_range(index[0], periods=index.size, freq="MS")
    if not index.equals(expected):
        first = int(np.flatnonzero(index != expected)[0])
        raise ValueError(
            f"time must be consecutive months; after {expected[first - 1]:%Y-%m} comes "
            f"{index[first]:%Y-%m}, expected {expected[first]:%Y-%m}"
        )
    return index.days_in_month.to_numpy(float)


class BoxModel12:
    """The AGAGE 12-box model as a transport operator for monthly surface fluxes.

    Parameters
    ----------
    config : BoxModel12.Config
        Parameter file and cache switch; build with ``make_transport("box12", **options)``.
    """

    @dataclass(frozen=True)
    class Config:
        """Options of :class:`BoxModel12`.

        Parameters
        ----------
        parameter_file : str, optional
            CSV of transport timescales in the layout of ``data/agage12_transport.csv``;
            None uses the shipped ``py12box`` defaults.
        cache : bool
            Keep Jacobians on disk under ``$ASSIM_CACHE_DIR`` (default ``~/.cache/assim``).
        timescale_factor : float
            Multiplies every transport timescale (1.2 = 20 % slower mixing and circulation); used
            to estimate the transport-error term of R.
        """

        parameter_file: str | None = None
        cache: bool = True
        timescale_factor: float = 1.0

        def __post_init__(self) -> None:
            if not self.timescale_factor > 0:
                raise ValueError(f"timescale_factor must be > 0, got {self.timescale_factor!r}")

    def __init__(self, config: BoxModel12.Config) -> None:
        self.config = config
        table = read_parameters(None if config.parameter_file is None else Path(config.parameter_file))
        table = table.assign(timescale_days=table["timescale_days"] * config.timescale_factor)
        self.matrices = transport_matrices(table)
        self.mass = box_mass_fractions()
        # ppm/day in each surface box per PgC/yr emitted into it.
        per_day = convert(1.0, "PgC/year", "PgC/day") / PGC_PER_PPM.to("PgC/ppm").magnitude
        self.unit_source = np.zeros((N_BOX, N_SURFACE))
        self.unit_source[np.arange(N_SURFACE), np.arange(N_SURFACE)] = per_day / self.mass[:N_SURFACE]
        self._propagators: dict[tuple[int, float], MonthPropagator] = {}

    def describe(self) -> str:
        """One line for reports: model, parameters and interhemispheric exchange time."""
        source = self.config.parameter_file or f"py12box defaults ({DEFAULT_PARAMETERS})"
        return (
            f"AGAGE 12-box model (Cunnold et al. 1983; Rigby et al. 2013), transport from {source}, "
            f"interhemispheric exchange time {self.interhemispheric_exchange_time():.2f} yr"
        )

    def fingerprint(self) -> str:
        """sha256 of the configuration and every transport parameter value (for cache keys)."""
        digest = hashlib.sha256(f"{type(self).__qualname__} {asdict(self.config)}".encode())
        digest.update(np.ascontiguousarray(self.matrices).tobytes())
        digest.update(np.ascontiguousarray(self.unit_source).tobytes())
        return digest.hexdigest()

    def propagators(self, time: np.ndarray) -> list[MonthPropagator]:
        """Exact per-month propagators for consecutive month starts ``time``; one expm per distinct month."""
        days = month_lengths(time)
        months = pd.DatetimeIndex(time).month.to_numpy()
        out = []
        for month, length in zip(months, days, strict=True):
            key = (int(month), float(length))
            if key not in self._propagators:
                self._propagators[key] = MonthPropagator.exact(self.matrices[month - 1], length)
            out.append(self._propagators[key])
        return out

    def run(self, emissions: xr.DataArray, initial_ppm: float) -> xr.DataArray:
        """Run monthly surface-band emissions from a uniform initial mole fraction.

        Parameters
        ----------
        emissions : DataArray (time, band), PgC/yr, positive to the atmosphere
            Mean emission of each month (``time`` = consecutive month starts) into the surface
            box of each of the 4 bands of :data:`assim.state.LATITUDE_BANDS`.
        initial_ppm : float
            Uniform CO2 mole fraction (ppm) at the start of the first month.

        Returns
        -------
        DataArray (time, box), ppm
            Monthly-mean mole fraction of the 12 boxes (labels :data:`BOX_LABELS`).
        """
        if set(emissions.dims) != {"time", "band"}:
            raise ValueError(f"emissions must have dims (time, band), found {emissions.dims}")
        bands = emissions["band"].values.tolist() if "band" in emissions.coords else None
        if bands != list(BANDS):
            raise ValueError(f"emissions band labels must be {list(BANDS)} in that order, found {bands}")
        flux = emissions.transpose("time", "band").values.astype(float)
        time = emissions["time"].values
        chi, means = np.zeros(N_BOX), np.empty((time.size, N_BOX))
        for t, P in enumerate(self.propagators(time)):
            s = self.unit_source @ flux[t]
            means[t] = (P.gamma @ chi + P.lam @ s) / P.days
            chi = P.phi @ chi + P.gamma @ s
        return self._box_array(means + float(initial_ppm), time)

    def band_response(self, time: np.ndarray) -> np.ndarray:
        """Monthly-mean surface mole fraction (ppm) per PgC/yr emitted into one band in one month.

        Returns
        -------
        ndarray (time, band, source_time, source_band), ppm per PgC/yr
            Zero where ``time < source_time``. Built in one forward sweep that carries the
            response to every earlier source together (exact, leap years included).
        """
        props = self.propagators(time)
        n = len(props)
        chi = np.zeros((N_BOX, n * N_SURFACE))
        out = np.zeros((n, N_SURFACE, n * N_SURFACE))
        for t, P in enumerate(props):
            seen, new = slice(0, t * N_SURFACE), slice(t * N_SURFACE, (t + 1) * N_SURFACE)
            out[t, :, seen] = (P.gamma[:N_SURFACE] @ chi[:, seen]) / P.days
            out[t, :, new] = (P.lam[:N_SURFACE] @ self.unit_source) / P.days
            chi[:, seen] = P.phi @ chi[:, seen]
            chi[:, new] = P.gamma @ self.unit_source
        return out.reshape(n, N_SURFACE, n, N_SURFACE)

    def jacobian(self, state: StateVector, obs: xr.Dataset) -> Jacobian:
        """H (obs, state): d(obs ppm) / d(state PgC/yr); each obs sees its band's surface box that month."""
        surface = surface_jacobian(self, state, cache=self.config.cache)
        return Jacobian(sampling_matrix(state, obs) @ surface)

    def simulate(self, state: StateVector, flux: xr.DataArray, initial_ppm: float) -> xr.DataArray:
        """Run a (time, region) flux (PgC/yr, positive to the atmosphere) spread over bands by area.

        Returns
        -------
        DataArray (time, box), ppm
            Monthly-mean mole fractions from a uniform ``initial_ppm`` at the first month's start.
        """
        field = state.to_dataarray(state.to_vector(flux), name="flux")
        emissions = xr.dot(field, state.regions["band_fraction"], dim="region")
        return self.run(emissions.transpose("time", "band"), initial_ppm)

    def interhemispheric_exchange_time(self, years: int = 30) -> float:
        """Two-box interhemispheric exchange time (yr) implied by the transport parameters.

        tau = PGC_PER_PPM x (northern minus southern hemispheric-mean ppm, mass weighted,
        averaged over the last of ``years`` years) / (1 PgC/yr emitted, half into each northern
        surface box): a steady source makes both hemispheres grow alike while the exchange
        flux carries half of it south (Jacob 1999, *Introduction to Atmospheric Chemistry*, ch. 3).
        """
        time = pd.date_range("2001-01", periods=12 * years, freq="MS").to_numpy("datetime64[ns]")
        north = np.arange(N_BOX) % N_SURFACE < N_SURFACE // 2
        emissions = np.tile(np.where(north[:N_SURFACE], 2.0 / N_SURFACE, 0.0), (time.size, 1))
        chi = (
            self.run(xr.DataArray(emissions, dims=("time", "band"), coords={"time": time, "band": list(BANDS)}), 0.0)
            .values[-12:]
            .mean(0)
        )
        w = self.mass
        gap = (w[north] @ chi[north]) / w[north].sum() - (w[~north] @ chi[~north]) / w[~north].sum()
        return float(PGC_PER_PPM.to("PgC/ppm").magnitude * gap)

    @staticmethod
    def _box_array(values: np.ndarray, time: np.ndarray) -> xr.DataArray:
        return xr.DataArray(
            values,
            dims=("time", "box"),
            name="co2",
            coords={
                "time": time,
                "box": list(BOX_LABELS),
                "band": ("box", [label.split(" ", 1)[0] for label in BOX_LABELS]),
                "level": ("box", [label.split(" ", 1)[1] for label in BOX_LABELS]),
            },
            attrs={"units": "ppm", "long_name": "monthly-mean CO2 dry-air mole fraction"},
        )
