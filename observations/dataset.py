"""The Observation Dataset itself as a netCDF file (kind ``"dataset"``).

What this package writes with ``ds.to_netcdf`` (pre-processed or synthetic observations, the
``NEW_DATA`` of ``assim nowcast``) reads back unchanged: ``value`` and ``uncertainty`` over
``obs`` with the coordinates of :mod:`observations.schema`, validated. Detected by content: a
netCDF file with the variables ``value``, ``uncertainty`` and ``platform`` (ObsPack files have
no ``platform``).
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import xarray as xr

from observations.readers import reader

_MAGIC = (b"CDF\x01", b"CDF\x02", b"\x89HDF")
_MARKERS = ("value", "uncertainty", "platform")


def _is_observation_dataset(path: Path, head: bytes) -> bool:
    if path.is_dir() or head[:4] not in _MAGIC:
        return False
    try:
        with netCDF4.Dataset(path) as nc:
            return all(name in nc.variables for name in _MARKERS)
    except OSError:
        return False


@reader("dataset", _is_observation_dataset)
def read_observation_dataset(path: Path | str) -> xr.Dataset:
    """Read an Observation Dataset written to netCDF (validated by the ``reader`` wrapper)."""
    with xr.open_dataset(path) as ds:
        return ds.load().assign_attrs(source_file=Path(path).name)
