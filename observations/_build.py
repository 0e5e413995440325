"""Assemble an Observation Dataset for records that are averages over calendar periods."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import xarray as xr

from observations._text import fail
from observations.schema import observation_dataset
from observations.units import convert

#: Value units every CO2 mole-fraction reader returns.
PPM = "ppm"

try:
    VERSION = version("assim")
except PackageNotFoundError:  # running from a source tree without an install
    VERSION = "unknown"


#: Species this package reads: the units values are returned in and the plausible range in those units.
SPECIES = {"co2": ("ppm", (100.0, 2000.0)), "ch4": ("ppb", (300.0, 10000.0))}


def check_plausible(path: Path, values: np.ndarray, species: str, where: np.ndarray | str) -> None:
    """Raise when a mole fraction is outside the plausible range: the classic units slip (mol/mol vs ppm vs ppb).

    ``where`` is the line number of each value (text files) or the variable name (netCDF).
    """
    units, (low, high) = SPECIES[species]
    if values.size and low <= np.fmin.reduce(values) and np.fmax.reduce(values) <= high:  # NaN ignored
        return
    bad = np.flatnonzero(~((values >= low) & (values <= high)) & ~np.isnan(values))
    if bad.size:
        i = bad[0]
        line = int(where[i]) if not isinstance(where, str) else None
        variable = f"variable {where!r} " if isinstance(where, str) else ""
        raise fail(
            path,
            f"{variable}value {values[i]:g} {units} is not a plausible {species.upper()} dry-air mole fraction "
            f"({low:g}..{high:g} {units}; {bad.size} values affected): are the units mol/mol, ppm or ppb? "
            "fix the units attribute or header",
            line,
        )


def to_ppm(path: Path, values: np.ndarray, units: str, variable: str) -> np.ndarray:
    """Convert a mole fraction from ``units`` (mol mol-1, ppb, micromol mol-1, ...) to ppm; raise naming the file."""
    try:
        return convert(values, units, PPM)
    except ValueError as err:
        raise fail(path, f"variable {variable!r}: units {units!r} are not a mole fraction convertible to ppm") from err


def record_dataset(
    path: Path,
    reader: str,
    *,
    value: np.ndarray,
    uncertainty: np.ndarray,
    units: str,
    time: tuple[np.ndarray, np.ndarray, np.ndarray],
    where: dict[str, np.ndarray | str | float],
    flag: np.ndarray | None = None,
    flag_reason: np.ndarray | None = None,
    coords: dict[str, np.ndarray | str | float] | None = None,
    data_vars: dict[str, tuple] | None = None,
    attrs: dict | None = None,
) -> xr.Dataset:
    """Observation Dataset of period means sorted by (site, time).

    Parameters
    ----------
    time : (time, time_start, time_end)
        Middle, start and (exclusive) end of each averaging period, datetime64[ns].
    where : dict
        ``latitude``, ``longitude``, ``altitude``, ``site``, ``platform``, ``category`` (scalars broadcast).
    flag, flag_reason : ndarray (obs,), optional
        0/"" = usable; default all usable.
    """
    n = np.asarray(value).shape[0]
    if n == 0:
        raise fail(path, "no usable observations (all values missing or rejected)")
    flag = np.zeros(n, dtype=np.int8) if flag is None else np.asarray(flag, dtype=np.int8)
    flag_reason = np.full(n, "") if flag_reason is None else np.asarray(flag_reason, dtype=str)
    ds = observation_dataset(
        value,
        uncertainty,
        units=units,
        time=time[0],
        **where,
        coords={"time_start": time[1], "time_end": time[2], "flag": flag, "flag_reason": flag_reason, **(coords or {})},
        data_vars=data_vars,
        check=False,  # the registered reader validates the result once
        attrs={
            "source_file": path.name,
            "history": f"read by observations.{reader} (assim {VERSION})",
            **(attrs or {}),
        },
    )
    order = np.lexsort((ds["time"].values, ds["site"].values))
    return ds.isel(obs=order)
