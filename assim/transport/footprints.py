"""Footprint Jacobians from files: read, project onto (month, region), store chunked, apply with dask.

A footprint (source-receptor relationship) gives, for one observation, the sensitivity of its
mole fraction to the surface flux density in every grid cell, in (mol/mol) / (mol m-2 s-1)
= ``s m2 mol-1``. Supported layouts (docs/transport.md):

``paris``  PARIS / CF-1.8 (FLEXPART from Empa, NAME from the Met Office / Bristol):
           ``srr(time, latitude, longitude)``, ``release_lat``/``release_lon``/``release_height``
           (time); site in the global attribute ``site``.
``acrg``   ACRG legacy NAME files: ``fp(lat, lon, time)``, ``release_lat``/``release_lon`` (time);
           no global attributes, so the site comes from the file name (``TAC-100magl_...``).

Each footprint time is one observation (its release). For a state of regional monthly fluxes
(PgC/yr, spread uniformly over each region's area A_r), the Jacobian entry is

    H[obs, t(obs) * R + r] = k / A_r * sum_cells srr[obs, cell] * f[cell, r],

with f[cell, r] the share of a footprint cell inside region r (from any integer region mask,
by sub-sampling each cell; :func:`region_fractions`), t(obs) the month of the release and
k = 1 PgC/yr of carbon in mol/s times 1e6 ppm per mol/mol (:func:`flux_conversion`). All the
sensitivity is put on the release month (a footprint integrates ~30 days back; the month
before is ignored), and flux outside the footprint domain has no effect. Rows are written to
a chunked zarr store (:mod:`assim.transport.chunked`), one task per file on the active dask
scheduler, and applied as a :class:`~assim.transport.chunked.ChunkedJacobian`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import dask
import numpy as np
import pandas as pd
import scipy.sparse
import xarray as xr

from assim.state import StateVector, region_table_from_mask
from assim.transport.chunked import ChunkedJacobian, JacobianWriter, atomic_store
from assim.transport.jacobian import cache_dir
from observations.units import Quantity, convert

#: Units of a footprint (mole fraction per surface flux density).
SRR_UNITS = "s m2 mol-1"
#: Molar mass of carbon (IUPAC 2021 standard atomic weight, conventional value).
CARBON_MOLAR_MASS = Quantity(12.011, "g/mol")
EARTH_RADIUS_M = 6.371e6
_STORE_VERSION = "footprints v1"
#: netCDF-C is not thread-safe and xarray locks only the array reads, not opening a file or
#: reading its attributes: the tasks of the threaded scheduler read footprint files one at a
#: time (the projection runs outside the lock, in parallel).
_NETCDF_LOCK = threading.Lock()


class Layout(NamedTuple):
    """Names of one footprint file layout."""

    variable: str
    dims: tuple[str, str, str]
    latitude: str
    longitude: str
    release_latitude: str
    release_longitude: str
    release_height: str | None


LAYOUTS = {
    "paris": Layout(
        "srr",
        ("time", "latitude", "longitude"),
        "latitude",
        "longitude",
        "release_lat",
        "release_lon",
        "release_height",
    ),
    "acrg": Layout("fp", ("lat", "lon", "time"), "lat", "lon", "release_lat", "release_lon", None),
}


def flux_conversion() -> float:
    """k: ppm per (s m2 mol-1 footprint x 1 PgC/yr spread over 1 m2); see the module docstring."""
    flux = Quantity(1.0, "PgC/yr") / CARBON_MOLAR_MASS / Quantity(1.0, "m2")
    return float((flux * Quantity(1.0, SRR_UNITS)).to("ppm").magnitude)


def detect_layout(ds: xr.Dataset, path: Path) -> str:
    """The key of :data:`LAYOUTS` whose sensitivity variable and dims ``ds`` holds; raise naming both."""
    for name, layout in LAYOUTS.items():
        if layout.variable in ds and set(ds[layout.variable].dims) == set(layout.dims):
            return name
    found = {name: ds[name].dims for name in ds.data_vars if ds[name].ndim == 3}
    raise ValueError(
        f"{path}: not a supported footprint layout; expected "
        + " or ".join(f"{lay.variable}{lay.dims} ({key})" for key, lay in LAYOUTS.items())
        + f", found 3-D variables {found}"
    )


def _site_from_name(path: Path) -> tuple[str, str]:
    """``SITE-HEIGHT_...`` file names (openghg convention): ("TAC", "100magl")."""
    match = re.match(r"([A-Za-z0-9]+)-([^_]+)_", path.name)
    if match is None:
        raise ValueError(
            f"{path}: cannot tell the site; the file has no 'site' attribute and its name is not "
            "'SITE-HEIGHT_...' (e.g. 'TAC-100magl_UKV_co2_201407.nc'); rename it or add the attribute"
        )
    return match.group(1).upper(), match.group(2)


def open_footprint(path: str | Path) -> xr.Dataset:
    """Open one footprint file lazily in the common layout.

    Returns
    -------
    Dataset
        ``sensitivity`` (obs, latitude, longitude), s m2 mol-1 (lazy, float32 as stored);
        coords ``time`` (obs, UTC release time), ``site``, ``release_latitude``,
        ``release_longitude`` (degrees), ``release_height`` (m above ground, NaN if unknown),
        ``latitude``/``longitude`` (cell centres, ascending). Attrs ``layout``,
        ``source_file``, ``model`` and ``inlet``.

    Raises
    ------
    ValueError
        Unknown layout, missing or non-convertible units, or no site (naming the file).
    """
    path = Path(path)
    try:
        ds = xr.open_dataset(path, chunks={})
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable netCDF file ({err})") from err
    try:
        out = _common_layout(ds, path)
    except BaseException:
        ds.close()
        raise
    # closing the result closes the file: left to the garbage collector, netCDF-C would close it
    # in whatever thread collects, at the same time as another thread opens a file (a segfault)
    out.set_close(ds.close)
    return out


def _common_layout(ds: xr.Dataset, path: Path) -> xr.Dataset:
    """The Dataset of :func:`open_footprint` from an opened file ``ds`` of any supported layout."""
    name = detect_layout(ds, path)
    layout = LAYOUTS[name]
    srr = ds[layout.variable]
    units = srr.attrs.get("units")
    if units is None:
        raise ValueError(f"{path}: variable {layout.variable!r} has no 'units'; expected {SRR_UNITS} or equivalent")
    try:
        scale = float(convert(1.0, units, SRR_UNITS))
    except ValueError as err:
        raise ValueError(
            f"{path}: {layout.variable!r} has units {units!r}, expected (mol/mol)/(mol/m2/s) = {SRR_UNITS}; "
            "convert native LPDM output (e.g. s m3 kg-1) to a mole-fraction sensitivity first"
        ) from err
    site, inlet = (
        (str(ds.attrs["site"]).upper(), str(ds.attrs.get("inlet_height", "")))
        if "site" in ds.attrs
        else _site_from_name(path)
    )
    sens = (srr * scale if scale != 1.0 else srr).transpose("time", layout.latitude, layout.longitude)
    sens = sens.rename({layout.latitude: "latitude", layout.longitude: "longitude", "time": "obs"})
    sens = sens.sortby("latitude").sortby("longitude")
    n = ds.sizes["time"]

    def release(var: str | None) -> np.ndarray:
        return ds[var].values.astype(float) if var is not None and var in ds else np.full(n, np.nan)

    coords = {
        "time": ("obs", ds["time"].values.astype("datetime64[ns]")),
        "site": ("obs", np.full(n, site)),
        "release_latitude": ("obs", release(layout.release_latitude)),
        "release_longitude": ("obs", release(layout.release_longitude)),
        "release_height": ("obs", release(layout.release_height)),
    }
    out = xr.Dataset(
        {"sensitivity": sens.drop_vars([c for c in sens.coords if c not in ("latitude", "longitude")])},
        coords=coords,
        attrs={"layout": name, "source_file": path.name, "model": str(ds.attrs.get("model", "")), "inlet": inlet},
    )
    out["sensitivity"].attrs = {"units": SRR_UNITS, "long_name": "source-receptor relationship"}
    return out


def cell_bounds(centres: np.ndarray) -> np.ndarray:
    """Cell edges (k + 1,) from ascending centres (k,): midpoints, ends extended by half a cell."""
    centres = np.asarray(centres, dtype=float)
    if centres.size == 1:
        raise ValueError("a grid axis needs at least 2 cells to infer its cell edges")
    mid = 0.5 * (centres[1:] + centres[:-1])
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def grid_cell_area(latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """Areas (latitude, longitude) in m2 of cells with these centres on a sphere of radius 6371 km."""
    lat_edges = np.clip(cell_bounds(latitude), -90.0, 90.0)
    lon_edges = cell_bounds(longitude)
    band = np.diff(np.sin(np.deg2rad(lat_edges)))
    return EARTH_RADIUS_M**2 * np.outer(band, np.deg2rad(np.diff(lon_edges)))


def region_fractions(
    latitude: np.ndarray, longitude: np.ndarray, mask: xr.DataArray, region_ids: np.ndarray, subsample: int = 5
) -> scipy.sparse.csr_matrix:
    """Share of each footprint cell inside each region of an integer mask.

    Parameters
    ----------
    latitude, longitude : ndarray
        Ascending cell centres of the footprint grid (degrees).
    mask : DataArray (lat*, lon*)
        Integer region code per cell of its own grid (cell centres; any resolution; longitudes
        -180..180 or 0..360); codes not in ``region_ids`` count as no region.
    region_ids : ndarray (R,)
        Codes of the state's regions, in state order.
    subsample : int
        Each footprint cell is sampled at ``subsample`` x ``subsample`` points; a point takes
        the code of the mask cell it falls in (outside the mask: no region).

    Returns
    -------
    csr_matrix (cells, R)
        Rows in footprint-cell order (latitude-major); each row sums to <= 1.
    """
    offsets = (np.arange(subsample) + 0.5) / subsample
    f_lat, f_lon = cell_bounds(latitude), cell_bounds(longitude)
    p_lat = (f_lat[:-1, None] + np.diff(f_lat)[:, None] * offsets).ravel()
    p_lon = (f_lon[:-1, None] + np.diff(f_lon)[:, None] * offsets).ravel()
    column = region_index(mask_codes(mask, p_lat[:, None], p_lon[None, :]), region_ids)
    n_lon = longitude.size
    cell = (np.arange(p_lat.size)[:, None] // subsample) * n_lon + np.arange(p_lon.size)[None, :] // subsample
    keep = column >= 0
    weights = np.full(int(keep.sum()), 1.0 / subsample**2)
    return scipy.sparse.csr_matrix(
        (weights, (cell[keep], column[keep])), shape=(latitude.size * n_lon, len(region_ids))
    )


def mask_codes(mask: xr.DataArray, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """Code of the mask cell holding each point (latitude and longitude broadcast; 0 outside the mask).

    The mask's coordinates are cell centres (edges halfway between them); point longitudes are
    wrapped into the mask's longitude range (-180..180 or 0..360).
    """
    lat_name = next((d for d in mask.dims if str(d).startswith("lat")), None)
    lon_name = next((d for d in mask.dims if str(d).startswith("lon")), None)
    if lat_name is None or lon_name is None:
        raise ValueError(f"region mask {mask.name!r} needs latitude and longitude dims, found {mask.dims}")
    mask = mask.sortby(lat_name).sortby(lon_name).transpose(lat_name, lon_name)
    codes = np.rint(np.nan_to_num(mask.values.astype(float))).astype(np.int64)
    lat_edges, lon_edges = cell_bounds(mask[lat_name].values), cell_bounds(mask[lon_name].values)
    i = np.searchsorted(lat_edges, latitude, side="right") - 1
    j = np.searchsorted(lon_edges, (np.asarray(longitude) - lon_edges[0]) % 360.0 + lon_edges[0], side="right") - 1
    inside = (i >= 0) & (i < codes.shape[0]) & (j >= 0) & (j < codes.shape[1])
    return np.where(inside, codes[np.clip(i, 0, codes.shape[0] - 1), np.clip(j, 0, codes.shape[1] - 1)], 0)


def region_index(codes: np.ndarray, region_ids: np.ndarray) -> np.ndarray:
    """Position in ``region_ids`` of each code (same shape as ``codes``), -1 for codes not in it."""
    region_ids = np.asarray(region_ids, dtype=np.int64)
    order = np.argsort(region_ids)
    pos = np.clip(np.searchsorted(region_ids[order], codes), 0, region_ids.size - 1)
    return np.where(region_ids[order][pos] == codes, order[pos], -1)


def month_index(state: StateVector, time: np.ndarray, where: str) -> np.ndarray:
    """Index of the state month holding each time; raise naming the first time outside the state."""
    time = np.asarray(time, dtype="datetime64[ns]")
    end = (pd.Timestamp(state.time[-1]) + pd.offsets.MonthBegin(1)).to_datetime64()
    index = np.searchsorted(state.time, time, side="right") - 1
    outside = (index < 0) | (time >= end)
    if outside.any():
        first = np.datetime_as_string(time[outside][0], unit="s")
        raise ValueError(
            f"{where}: {int(outside.sum())} footprint time(s) (first {first}) are outside the state's months "
            f"{np.datetime_as_string(state.time[0], unit='M')}..{np.datetime_as_string(state.time[-1], unit='M')}; "
            "extend the state's time axis or leave those footprints out"
        )
    return index


def project_rows(sensitivity: np.ndarray, fractions: scipy.sparse.csr_matrix, region_area: np.ndarray) -> np.ndarray:
    """(obs, R) ppm per PgC/yr of a region's flux from (obs, cells) footprints in s m2 mol-1."""
    flat = np.asarray(sensitivity, dtype=float).reshape(sensitivity.shape[0], -1)
    return flux_conversion() * np.asarray(fractions.T @ flat.T).T / region_area


def _file_rows(
    path: Path, state: StateVector, mask: xr.DataArray, selection: np.ndarray, subsample: int
) -> tuple[np.ndarray, np.ndarray]:
    """(columns, values) (k, R) of the releases ``selection`` of one file (one dask task)."""
    with _NETCDF_LOCK, open_footprint(path) as fp:
        latitude, longitude = fp["latitude"].values, fp["longitude"].values
        sens = fp["sensitivity"].isel(obs=selection).values
        times = fp["time"].values[selection]
    fractions = region_fractions(latitude, longitude, mask, state.regions["region_id"].values, subsample)
    months = month_index(state, times, str(path))
    n_region = state.region.size
    values = project_rows(sens, fractions, state.regions["area"].values)
    return months[:, None] * n_region + np.arange(n_region), values


def footprint_files(directory: str | Path, pattern: str = "*.nc") -> list[Path]:
    """Footprint files in ``directory`` matching ``pattern``, sorted by name; raise when there are none."""
    files = sorted(Path(directory).glob(pattern))
    if not files:
        raise ValueError(
            f"footprints: no files matching {pattern!r} in {directory}; set options 'directory' and 'pattern'"
        )
    return files


def releases(files: list[Path]) -> xr.Dataset:
    """One row per footprint time of every file: ``time``, ``site``, release position, ``source_file``, ``index``."""
    parts = []
    for path in files:
        with open_footprint(path) as fp:
            parts.append(
                fp.drop_vars("sensitivity")
                .drop_dims(["latitude", "longitude"])
                .assign_coords(
                    source_file=("obs", np.full(fp.sizes["obs"], path.name)), index=("obs", np.arange(fp.sizes["obs"]))
                )
            )
    return xr.concat(parts, dim="obs", combine_attrs="drop")


def match_releases(obs: xr.Dataset, table: xr.Dataset, period: np.timedelta64) -> np.ndarray:
    """Row of ``table`` (from :func:`releases`) per obs: same site (any case), release <= time < release + period."""
    keys = pd.DataFrame({"site": np.char.upper(table["site"].values.astype(str)), "time": table["time"].values})
    keys = keys.reset_index()
    wanted = pd.DataFrame(
        {"site": np.char.upper(obs["site"].values.astype(str)), "time": obs["time"].values.astype("datetime64[ns]")}
    )
    wanted["order"] = np.arange(len(wanted))
    merged = pd.merge_asof(
        wanted.sort_values("time"),
        keys.sort_values("time"),
        on="time",
        by="site",
        direction="backward",
        tolerance=pd.Timedelta(period) - pd.Timedelta(1, "ns"),
    ).sort_values("order")
    missing = merged["index"].isna().to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise ValueError(
            f"footprints: no footprint for obs {i} ({wanted['site'].iloc[i]}, {wanted['time'].iloc[i]}) "
            f"({int(missing.sum())} of {missing.size} observations); a footprint covers [release, release + {period}) "
            "at its site: add the files or drop those observations"
        )
    return merged["index"].to_numpy(int)


def build_store(
    path: str | Path,
    files: list[Path],
    state: StateVector,
    mask: xr.DataArray,
    rows: list[tuple[int, int]],
    subsample: int = 5,
    chunk_obs: int | None = None,
    attrs: dict | None = None,
) -> ChunkedJacobian:
    """Project footprints onto the state and write H atomically as a chunked store.

    Parameters
    ----------
    rows : list of (file number, time index)
        The footprint of each observation, in observation order.
    attrs : dict, optional
        Extra metadata for the store (the state's months and regions are always written).

    Each file's rows are projected in one dask task (on the active scheduler, see
    :mod:`assim.distributed`); the driver writes them into place, so only one file's footprints
    and rows are in memory per task.
    """
    wanted = pd.DataFrame(rows, columns=["file", "time"])
    wanted["obs"] = np.arange(len(wanted))
    groups = list(wanted.groupby("file"))
    tasks = [dask.delayed(_file_rows)(files[f], state, mask, g["time"].to_numpy(), subsample) for f, g in groups]
    n_region = state.region.size
    attrs = {
        **(attrs or {}),
        "state_time": [str(t) for t in state.time.astype("datetime64[M]")],
        "state_region": [str(r) for r in state.region],
        "source_files": [f.name for f in files],
    }
    with atomic_store(path) as tmp:
        writer = JacobianWriter(tmp, (len(wanted), state.size), n_region, chunk_obs, attrs)
        for (_, group), (columns, values) in zip(groups, dask.compute(*tasks), strict=True):
            for obs, col, val in zip(group["obs"].to_numpy(), columns, values, strict=True):
                writer.write(int(obs), col[None], val[None])
    return ChunkedJacobian(path)


class FootprintTransport:
    """Transport from a folder of footprint files (``make_transport("footprints", directory=..., region_mask=...)``).

    Parameters
    ----------
    config : FootprintTransport.Config
        ``directory`` and ``pattern``: the footprint files; ``region_mask``: a netCDF file with
        an integer (lat, lon) mask whose codes are the state's ``region_id`` (``mask_variable``:
        its name; default the only 2-D variable); ``period_hours``: a footprint covers
        observations in [release, release + period); ``subsample``: points per cell side for
        the region overlay; ``chunk_obs``: rows per zarr chunk (0 = automatic); ``store``: where
        to write H (default: the cache directory, keyed by files, mask, state and observations).
    """

    @dataclass(frozen=True)
    class Config:
        """Options of :class:`FootprintTransport` (see the class docstring)."""

        directory: str = ""
        region_mask: str = ""
        mask_variable: str = ""
        pattern: str = "*.nc"
        period_hours: float = 1.0
        subsample: int = 5
        chunk_obs: int = 0
        store: str = ""

    def __init__(self, config: FootprintTransport.Config) -> None:
        if not config.directory or not config.region_mask:
            raise ValueError(
                "footprints transport needs options 'directory' (footprint files) and 'region_mask' (netCDF)"
            )
        if config.period_hours <= 0 or config.subsample < 1 or config.chunk_obs < 0:
            raise ValueError(f"footprints: period_hours > 0, subsample >= 1 and chunk_obs >= 0 needed, got {config}")
        self.config = config

    def describe(self) -> str:
        where = Path(self.config.directory) / self.config.pattern
        return f"footprint Jacobians from {where}, regions from {self.config.region_mask}"

    def files(self) -> list[Path]:
        return footprint_files(self.config.directory, self.config.pattern)

    def mask(self) -> xr.DataArray:
        """The region mask named by the config."""
        with xr.open_dataset(self.config.region_mask) as ds:
            names = (
                [self.config.mask_variable]
                if self.config.mask_variable
                else [v for v in ds.data_vars if ds[v].ndim == 2]
            )
            if len(names) != 1 or names[0] not in ds:
                raise ValueError(
                    f"{self.config.region_mask}: set option 'mask_variable' to one of {sorted(ds.data_vars)} "
                    f"(found {names})"
                )
            return ds[names[0]].load()

    def regions(self, region_ids: list[int] | None = None) -> xr.Dataset:
        """The region table (area, centroid, band fractions) of the mask's codes ``region_ids`` (default: all > 0).

        Names come from the mask's CF ``flag_values``/``flag_meanings`` attributes when it has
        them, else ``"region <code>"``.
        """
        mask = self.mask()
        lat_name = next((d for d in mask.dims if str(d).startswith("lat")), None)
        lon_name = next((d for d in mask.dims if str(d).startswith("lon")), None)
        if lat_name is None or lon_name is None:
            raise ValueError(f"{self.config.region_mask}: the mask needs latitude/longitude dims, found {mask.dims}")
        mask = mask.sortby(lat_name).sortby(lon_name).transpose(lat_name, lon_name)
        area = grid_cell_area(mask[lat_name].values, mask[lon_name].values)
        meanings = str(mask.attrs.get("flag_meanings", "")).split()
        values = np.atleast_1d(mask.attrs.get("flag_values", []))
        names = {int(v): m.replace("_", " ") for v, m in zip(values, meanings, strict=False)}
        try:
            return region_table_from_mask(mask, xr.DataArray(area, dims=mask.dims), names, region_ids)
        except ValueError as err:
            raise ValueError(f"{self.config.region_mask}: {err}") from err

    def releases(self) -> xr.Dataset:
        """Every footprint time of the folder (see :func:`releases`)."""
        return releases(self.files())

    def jacobian(self, state: StateVector, obs: xr.Dataset) -> ChunkedJacobian:
        """H (obs, state) as a chunked store, built on first use and reused while its inputs are unchanged."""
        files = self.files()
        table = releases(files)
        match = match_releases(obs, table, np.timedelta64(int(self.config.period_hours * 3600), "s"))
        file_no = {name: k for k, name in enumerate(f.name for f in files)}
        rows = [
            (file_no[f], int(t))
            for f, t in zip(table["source_file"].values[match], table["index"].values[match], strict=True)
        ]
        mask = self.mask()
        key = self._key(files, mask, state, rows)
        path = Path(self.config.store) if self.config.store else cache_dir() / f"footprints_{key}.zarr"
        if path.exists():
            try:
                stored = ChunkedJacobian(path)
            except ValueError:
                stored = None
            if stored is not None and stored.attrs.get("key") == key:
                return stored
        path.parent.mkdir(parents=True, exist_ok=True)
        chunk = self.config.chunk_obs or None
        return build_store(path, files, state, mask, rows, self.config.subsample, chunk, {"key": key})

    def _key(self, files: list[Path], mask: xr.DataArray, state: StateVector, rows: list[tuple[int, int]]) -> str:
        digest = hashlib.sha256(f"{_STORE_VERSION} {json.dumps(asdict(self.config), sort_keys=True)}".encode())
        for f in files:
            stat = f.stat()
            digest.update(f"{f.resolve()} {stat.st_size} {stat.st_mtime_ns}".encode())
        digest.update(np.ascontiguousarray(mask.values).tobytes())
        digest.update(np.ascontiguousarray(state.time.view(np.int64)).tobytes())
        digest.update(np.ascontiguousarray(state.regions["region_id"].values.astype(np.int64)).tobytes())
        digest.update(np.ascontiguousarray(state.regions["area"].values.astype(float)).tobytes())
        digest.update(np.asarray(rows, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def simulate(self, state: StateVector, flux: xr.DataArray, initial_ppm: float) -> xr.DataArray:
        """Mole fraction (ppm) at every footprint release: ``initial_ppm`` + H x for a (time, region) flux in PgC/yr."""
        table = self.releases()
        H = self.jacobian(state, table)
        values = initial_ppm + H.matvec(state.pad(state.to_vector(flux)))
        return xr.DataArray(values, dims="obs", coords=table.coords, name="co2", attrs={"units": "ppm"})
