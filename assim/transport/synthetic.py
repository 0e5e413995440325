"""Synthetic footprints: plume-like sensitivities decaying upwind of each site (tests and benchmarks).

A plume seen from a receptor spreads upwind: the sensitivity at a point a great-circle
distance d from the site, at an angle delta between the bearing to the point and the upwind
direction, is

    s(d, delta) = exp(-d / length) * max(exp(-delta^2 / (2 spread^2)), exp(-d / (0.1 length)))

(the second term is the isotropic near field around the inlet). :func:`write_footprint_file`
writes gridded footprints in the PARIS or ACRG layout, so the readers and the region overlay
can be tested end to end; :func:`write_synthetic_jacobian` writes H rows directly in the state
basis (the plume at each region centroid, the ``nnz`` largest kept), one dask task per chunk,
for problems far too large for gridded footprints (m = 1e6 observations).
"""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import xarray as xr

from assim.covariance import EARTH_RADIUS_KM
from assim.report import atomic_write
from assim.state import StateVector, region_table_from_mask
from assim.transport.chunked import ChunkedJacobian, JacobianWriter, atomic_store, default_chunk_obs
from assim.transport.footprints import LAYOUTS, SRR_UNITS, grid_cell_area

#: Direction the wind mostly blows from (degrees clockwise from north), and its spread.
PREVAILING_UPWIND_DEG = 270.0
UPWIND_SD_DEG = 60.0


def plume(
    site_latitude: np.ndarray,
    site_longitude: np.ndarray,
    upwind_deg: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    length_km: float = 500.0,
    spread_deg: float = 30.0,
) -> np.ndarray:
    """Relative sensitivity (0..1) at points (latitude, longitude) of a site; all inputs broadcast, degrees."""
    phi1, phi2 = np.deg2rad(site_latitude), np.deg2rad(latitude)
    dlam = np.deg2rad(np.asarray(longitude) - site_longitude)
    cos_angle = np.sin(phi1) * np.sin(phi2) + np.cos(phi1) * np.cos(phi2) * np.cos(dlam)
    distance = EARTH_RADIUS_KM * np.arccos(np.clip(cos_angle, -1.0, 1.0))
    bearing = np.rad2deg(
        np.arctan2(
            np.sin(dlam) * np.cos(phi2), np.cos(phi1) * np.sin(phi2) - np.sin(phi1) * np.cos(phi2) * np.cos(dlam)
        )
    )
    offset = (bearing - upwind_deg + 180.0) % 360.0 - 180.0
    along = np.exp(-0.5 * (offset / spread_deg) ** 2)
    return np.exp(-distance / length_km) * np.maximum(along, np.exp(-distance / (0.1 * length_km)))


def block_regions(
    latitude: np.ndarray, longitude: np.ndarray, n_lat: int, n_lon: int
) -> tuple[xr.DataArray, xr.Dataset]:
    """A mask of ``n_lat`` x ``n_lon`` rectangular regions (codes 1..R, latitude-major) on a grid, and its table.

    Returns
    -------
    (DataArray (latitude, longitude) of int, Dataset (region))
        The mask and :func:`assim.state.region_table_from_mask` of it.
    """
    i = np.arange(latitude.size) * n_lat // latitude.size
    j = np.arange(longitude.size) * n_lon // longitude.size
    codes = 1 + i[:, None] * n_lon + j[None, :]
    mask = xr.DataArray(
        codes, dims=("latitude", "longitude"), coords={"latitude": latitude, "longitude": longitude}, name="region"
    )
    area = xr.DataArray(grid_cell_area(latitude, longitude), dims=mask.dims)
    return mask, region_table_from_mask(mask, area)


def write_footprint_file(
    path: str | Path,
    site: str,
    site_position: tuple[float, float],
    time: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    layout: str = "paris",
    peak: float = 1e-3,
    seed: int = 0,
) -> Path:
    """Write plume footprints of one site (one per time, random upwind direction) as a netCDF file.

    Parameters
    ----------
    site_position : (latitude, longitude)
        Degrees.
    layout : {"paris", "acrg"}
        ``srr(time, latitude, longitude)`` with a ``site`` attribute, or ``fp(lat, lon, time)``
        with the site only in the file name (name the file ``SITE-HEIGHT_...nc``).
    peak : float
        Sensitivity at the site, s m2 mol-1 ((mol/mol) / (mol m-2 s-1)).

    Returns
    -------
    Path
        ``path``, written atomically.
    """
    spec = LAYOUTS[layout]
    rng = np.random.default_rng(seed)
    upwind = PREVAILING_UPWIND_DEG + UPWIND_SD_DEG * rng.standard_normal(np.size(time))
    lat2d, lon2d = np.meshgrid(latitude, longitude, indexing="ij")
    srr = peak * plume(site_position[0], site_position[1], upwind[:, None, None], lat2d, lon2d)
    grid = {"time": time, spec.latitude: latitude, spec.longitude: longitude}
    field = xr.DataArray(srr.astype(np.float32), dims=("time", spec.latitude, spec.longitude), coords=grid)
    ds = xr.Dataset(
        {
            spec.variable: field.transpose(*spec.dims).assign_attrs(units="(mol/mol)/(mol/m2/s)"),
            spec.release_latitude: ("time", np.full(np.size(time), site_position[0]), {"units": "degrees_north"}),
            spec.release_longitude: ("time", np.full(np.size(time), site_position[1]), {"units": "degrees_east"}),
        },
        attrs={"site": site, "model": "assim synthetic plume", "units_note": SRR_UNITS} if layout == "paris" else {},
    )
    return atomic_write(path, ds.to_netcdf)


def _synthetic_rows(
    writer: JacobianWriter,
    rows: slice,
    seed: int,
    state: StateVector,
    sites: np.ndarray,
    nnz: int,
    amplitude: float,
) -> int:
    """Generate and write the rows ``rows`` (one chunk: one dask task); returns the row count."""
    rng = np.random.default_rng([seed, rows.start])
    k = rows.stop - rows.start
    site = sites[rng.integers(sites.shape[0], size=k)]
    month = rng.integers(state.time.size, size=k)
    upwind = PREVAILING_UPWIND_DEG + UPWIND_SD_DEG * rng.standard_normal(k)
    regions = state.regions
    values = amplitude * plume(
        site[:, :1],
        site[:, 1:],
        upwind[:, None],
        regions["centroid_latitude"].values[None, :],
        regions["centroid_longitude"].values[None, :],
    )
    top = np.argpartition(-values, nnz - 1, axis=1)[:, :nnz]
    writer.write(rows.start, month[:, None] * state.region.size + top, np.take_along_axis(values, top, axis=1))
    return k


def write_synthetic_jacobian(
    path: str | Path,
    state: StateVector,
    n_obs: int,
    n_sites: int = 50,
    nnz: int = 32,
    amplitude: float = 1.0,
    seed: int = 0,
    chunk_obs: int | None = None,
) -> ChunkedJacobian:
    """Write H (n_obs, state.size) of plume footprints from random sites straight into a chunked store.

    Each observation has a random site (uniform over the regions' centroid box), month and
    upwind direction; its row is ``amplitude`` (ppm per PgC/yr) times :func:`plume` at every
    region centroid in its month, the ``nnz`` largest kept. Chunks are generated and written
    in parallel, one dask task each, on the active scheduler; the result depends only on
    ``seed`` and the chunking.
    """
    if not 0 < nnz <= state.region.size:
        raise ValueError(f"nnz must be in 1..{state.region.size} (regions per month), got {nnz}")
    rng = np.random.default_rng(seed)
    lat, lon = state.regions["centroid_latitude"].values, state.regions["centroid_longitude"].values
    sites = np.c_[rng.uniform(lat.min(), lat.max(), n_sites), rng.uniform(lon.min(), lon.max(), n_sites)]
    chunk = chunk_obs or default_chunk_obs(nnz)
    with atomic_store(path) as tmp:
        writer = JacobianWriter(tmp, (n_obs, state.size), nnz, chunk, {"source": f"synthetic plumes, seed {seed}"})
        tasks = [
            dask.delayed(_synthetic_rows)(writer, slice(lo, min(lo + chunk, n_obs)), seed, state, sites, nnz, amplitude)
            for lo in range(0, n_obs, chunk)
        ]
        dask.compute(*tasks)
    return ChunkedJacobian(path)
