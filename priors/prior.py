"""The Prior Dataset for the inversion: train (or load) the emulator and predict a period.

This is the one call the inversion pipeline needs::

    from priors import land_flux_prior
    prior = land_flux_prior("2015-01", "2024-12")            # trains on TRENDY-v9 1960-2019 (~1 min)
    prior = land_flux_prior("2015-01", "2024-12", model_path="emulator.npz")  # trains once, then loads

``prior`` holds ``flux`` and ``flux_sd`` over (``time`` = month starts, ``region`` = the 11
TransCom-3 land regions as in ``assim.state.TRANSCOM3_LAND``), PgC yr-1, positive to the
atmosphere, with CF and provenance attributes; ``assim.Problem.from_datasets(prior, ...)``
takes it as ``x_prior`` and scales B with ``flux_sd``.

``flux_sd`` is the monthly 1-sigma and is dominated by each DGVM's own seasonal cycle, an error
that repeats every year and averages out over a year. For an inversion of annual-scale signals
use instead ``flux_sd_interannual`` with an exponential time correlation of e-folding
``prior["flux_sd_interannual"].attrs["time_correlation_months"]`` months: that pair covers 68 %
of held-out annual means (``priors.emulator.interannual_error``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from priors.drivers import DriverError, load_drivers
from priors.emulator import (
    TEMPERATURE_DRIVER,
    TEMPERATURE_DRIVERS,
    EmulatorError,
    LandFluxEmulator,
    StaleEmulatorError,
)
from priors.teachers import TRANSCOM3_LAND_REGIONS, read_trendy_monthly

__all__ = ["covered_temperature_drivers", "land_flux_prior", "train_emulator"]

TRAINING_PERIOD = ("1960-01", "2019-12")


def train_emulator(
    data_dir: Path | None = None,
    training_period: tuple[str, str] = TRAINING_PERIOD,
    random_state: int | None = 0,
    temperature_drivers: tuple[str, ...] = TEMPERATURE_DRIVERS,
) -> LandFluxEmulator:
    """Fit :class:`LandFluxEmulator` on every TRENDY-v9 DGVM over ``training_period``.

    Parameters
    ----------
    data_dir : Path, optional
        ``../shared/data`` by default.
    training_period : (str, str)
        First and last training month (the TRENDY-v9 files end 2019-12).
    random_state : int or None
        Seed of the bootstrap and boosting.
    temperature_drivers : tuple of str
        As :class:`LandFluxEmulator`.
    """
    flux = read_trendy_monthly(data_dir, start=training_period[0], end=training_period[1])
    emulator = LandFluxEmulator(random_state=random_state, temperature_drivers=temperature_drivers)
    lag_start = (pd.Timestamp(training_period[0]) - pd.DateOffset(months=emulator.max_lag())).strftime("%Y-%m")
    drivers = load_drivers(emulator.driver_names(), lag_start, training_period[1], data_dir)
    return emulator.fit(drivers, flux)


def covered_temperature_drivers(first: str, last: str, data_dir: Path | None = None) -> tuple[str, ...]:
    """The default temperature drivers that cover ``first``..``last`` (global GISTEMP always kept).

    The hemispheric GISTEMP files end 2025-02 and the zonal annual file (tropics) ends with its
    last complete year (2025) while the global monthly file is current, so a prior reaching past
    those months uses an emulator on fewer temperature drivers: global and tropics (held-out IAV
    correlation 0.754 vs 0.759 with all four, docs/emulator.md) or global alone (0.724). Global
    GISTEMP itself not covering the period is reported by :func:`land_flux_prior`'s driver loading.
    """

    def covers(name: str) -> bool:
        try:
            load_drivers([name], first, last, data_dir)
        except DriverError:
            return False
        return True

    return tuple(name for name in TEMPERATURE_DRIVERS if name == TEMPERATURE_DRIVER or covers(name))


def land_flux_prior(
    start: str,
    end: str,
    data_dir: Path | None = None,
    model_path: str | os.PathLike[str] | None = None,
    random_state: int | None = 0,
) -> xr.Dataset:
    """Prior land flux per TransCom-3 land region and month from the climate-driven emulator.

    Parameters
    ----------
    start, end : str
        First and last month (``"2015-01"``, ``"2024-12"``); the drivers (GISTEMP global, and
        hemispheric and tropical when they cover the period (:func:`covered_temperature_drivers`),
        ONI, NOAA CO2) must cover them and the 12 months before ``start``.
    data_dir : Path, optional
        ``../shared/data`` (or ``$ASSIM_SHARED_DATA``) by default.
    model_path : path-like, optional
        A saved emulator (``.npz``). Loaded if it exists; otherwise (or if it was written by an
        older file format, or uses temperature drivers other than
        :func:`covered_temperature_drivers` of the period) the emulator is trained and saved there.
        ``None`` trains in memory every call.
    random_state : int or None
        Seed used when training.

    Returns
    -------
    Dataset (time, region)
        ``flux``, ``flux_sd`` and ``flux_sd_interannual`` (with attribute
        ``time_correlation_months``), PgC yr-1, positive to the atmosphere; ``time`` = month starts
        (datetime64[ns]), ``region`` = the 11 TransCom-3 land region names; attrs
        ``prior_source``, ``training_years``, ``teacher_models``, ``software_version``,
        ``Conventions``, ``history``.
    """
    time = pd.date_range(start, end, freq="MS").to_numpy("datetime64[ns]")
    if time.size == 0:
        raise EmulatorError(f"empty period {start}..{end}")
    first = (pd.Timestamp(time[0]) - pd.DateOffset(months=LandFluxEmulator().max_lag())).strftime("%Y-%m")
    last = str(np.datetime_as_string(time[-1], unit="M"))
    temperature = covered_temperature_drivers(first, last, data_dir)
    emulator = None
    if model_path is not None and Path(model_path).exists():
        try:
            emulator = LandFluxEmulator.load(model_path)
        except StaleEmulatorError:  # a cache written by an older version: train again and replace it
            emulator = None
    if emulator is None or tuple(emulator.temperature_drivers) != temperature:
        emulator = train_emulator(data_dir, random_state=random_state, temperature_drivers=temperature)
        if model_path is not None:
            emulator.save(model_path)
    if list(emulator.regions_) != list(TRANSCOM3_LAND_REGIONS):
        raise EmulatorError(f"emulator regions {list(emulator.regions_)} are not the 11 TransCom-3 land regions")
    drivers = load_drivers(emulator.driver_names(), first, last, data_dir)
    prior = emulator.predict(drivers, time=time)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    prior["time"].attrs.update(long_name="month start", standard_name="time")
    prior["region"].attrs.update(long_name="TransCom-3 land region")
    return prior.assign_attrs(
        title="Prior land CO2 flux by TransCom-3 land region (climate-driven DGVM emulator)",
        history=f"{stamp} priors.land_flux_prior({start!r}, {end!r})",
    )
