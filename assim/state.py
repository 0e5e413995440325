"""The state vector: monthly land flux per region, mapped to and from labelled DataArrays.

A state element is the mean flux of one region over one month, in PgC/yr, positive to
the atmosphere. Elements are ordered time-major (``index = t * n_region + r``) so that
covariances factor as ``B_time (x) B_region`` (see :mod:`assim.covariance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse
import xarray as xr

#: Latitude bands of the surface boxes of the 12-box model, north to south (degrees).
LATITUDE_BANDS = {
    "90N-30N": (30.0, 90.0),
    "30N-0": (0.0, 30.0),
    "0-30S": (-30.0, 0.0),
    "30S-90S": (-90.0, -30.0),
}

TRANSCOM3_LAND = {
    1: "North American Boreal",
    2: "North American Temperate",
    3: "South American Tropical",
    4: "South American Temperate",
    5: "Northern Africa",
    6: "Southern Africa",
    7: "Eurasia Boreal",
    8: "Eurasia Temperate",
    9: "Tropical Asia",
    10: "Australia",
    11: "Europe",
}

FLUX_UNITS = "PgC yr-1"
FLUX_SIGN = "positive to the atmosphere (negative = uptake)"

_TRANSCOM_TABLE = "transcom3_land_regions.csv"


def region_table_from_mask(
    mask: xr.DataArray,
    cell_area: xr.DataArray,
    names: dict[int, str] | None = None,
    region_ids: list[int] | None = None,
) -> xr.Dataset:
    """Summarise an integer region mask: area, centroid and latitude-band fractions per region.

    Parameters
    ----------
    mask : DataArray (latitude, longitude)
        Integer region code per cell; 0 (or any code not in ``region_ids``) is ignored.
    cell_area : DataArray (latitude, longitude), m2
        Cell areas on the same grid (matched by position, not by coordinate labels).
    names : dict, optional
        Region code -> name; defaults to ``"region <code>"``.
    region_ids : list of int, optional
        Codes to keep; defaults to every positive code in the mask.

    Returns
    -------
    Dataset (region)
        ``region_id``, ``area`` (m2), ``centroid_latitude``/``centroid_longitude`` (degrees,
        area-weighted on the sphere) and ``band_fraction`` (region, band): the share of each
        region's area in each of :data:`LATITUDE_BANDS`.
    """
    lat_name = next((d for d in mask.dims if str(d).startswith("lat")), None)
    lon_name = next((d for d in mask.dims if str(d).startswith("lon")), None)
    if lat_name is None or lon_name is None:
        raise ValueError(f"region mask needs latitude/longitude dims, found {mask.dims}")
    if mask.shape != cell_area.shape:
        raise ValueError(f"region mask shape {mask.shape} differs from cell_area shape {cell_area.shape}")
    codes = np.rint(mask.transpose(lat_name, lon_name).values).astype(int)
    area = np.asarray(cell_area.values, dtype=float)
    lat2d, lon2d = np.meshgrid(mask[lat_name].values, mask[lon_name].values, indexing="ij")
    if region_ids is None:
        region_ids = sorted(int(c) for c in np.unique(codes) if c > 0)
    names = names or {}
    rows = []
    for code in region_ids:
        cells = codes == code
        if not cells.any():
            raise ValueError(f"region {code} has no cells in the mask")
        w = area[cells]
        phi, lam = np.deg2rad(lat2d[cells]), np.deg2rad(lon2d[cells])
        xyz = (w[:, None] * np.c_[np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)]).sum(0)
        rows.append(
            {
                "region": names.get(code, f"region {code}"),
                "region_id": code,
                "area": w.sum(),
                "centroid_latitude": np.rad2deg(np.arctan2(xyz[2], np.hypot(xyz[0], xyz[1]))),
                "centroid_longitude": np.rad2deg(np.arctan2(xyz[1], xyz[0])),
                **{
                    band: w[(lat2d[cells] >= lo) & (lat2d[cells] < hi if hi < 90 else True)].sum() / w.sum()
                    for band, (lo, hi) in LATITUDE_BANDS.items()
                },
            }
        )
    return _table_to_dataset(pd.DataFrame(rows))


def _table_to_dataset(table: pd.DataFrame) -> xr.Dataset:
    bands = list(LATITUDE_BANDS)
    return xr.Dataset(
        {
            "region_id": ("region", table["region_id"].to_numpy(int)),
            "area": ("region", table["area"].to_numpy(float), {"units": "m2", "long_name": "land area"}),
            "centroid_latitude": ("region", table["centroid_latitude"].to_numpy(float), {"units": "degrees_north"}),
            "centroid_longitude": ("region", table["centroid_longitude"].to_numpy(float), {"units": "degrees_east"}),
            "band_fraction": (
                ("region", "band"),
                table[bands].to_numpy(float),
                {"long_name": "fraction of region area in latitude band", "units": "1"},
            ),
        },
        coords={"region": table["region"].to_numpy(str), "band": bands},
    )


def flux_sources(band_fractions: dict[str, tuple[float, ...]]) -> xr.Dataset:
    """A region table of non-land sources (fossil, ocean, one per latitude band...) given only their band split.

    Parameters
    ----------
    band_fractions : dict
        Source name -> share of its flux in each of :data:`LATITUDE_BANDS` (north to south).
    """
    names = list(band_fractions)
    n = len(names)
    return xr.Dataset(
        {
            "region_id": ("region", -np.arange(1, n + 1)),
            "area": ("region", np.full(n, np.nan), {"units": "m2"}),
            "centroid_latitude": ("region", np.full(n, np.nan)),
            "centroid_longitude": ("region", np.full(n, np.nan)),
            "band_fraction": (("region", "band"), np.array([band_fractions[k] for k in names], dtype=float)),
        },
        coords={"region": names, "band": list(LATITUDE_BANDS)},
    )


def transcom3_land_regions() -> xr.Dataset:
    """The 11 TransCom-3 land regions (Gurney et al. 2002), derived from the 1x1 degree mask.

    Shipped as a small table (see DATA_SOURCES.md) so nothing outside the package is needed.
    """
    with resources.files("assim.data").joinpath(_TRANSCOM_TABLE).open() as f:
        return _table_to_dataset(pd.read_csv(f))


def write_region_table(regions: xr.Dataset, path: Path) -> None:
    """Write a region table (as from :func:`region_table_from_mask`) to CSV."""
    table = regions[["region_id", "area", "centroid_latitude", "centroid_longitude"]].to_dataframe()
    table[list(regions["band"].values)] = regions["band_fraction"].values
    table.reset_index().to_csv(path, index=False, float_format="%.6g")


def month_starts(start: str, end: str) -> np.ndarray:
    """Month-start datetimes from ``start`` to ``end`` inclusive (e.g. ``"2015-01"``, ``"2024-12"``)."""
    return pd.date_range(start, end, freq="MS").to_numpy("datetime64[ns]")


@dataclass(frozen=True, eq=False)
class StateVector:
    """Monthly flux per region, flattened time-major, optionally followed by extra parameters.

    Parameters
    ----------
    time : ndarray of datetime64
        Month starts.
    regions : Dataset (region)
        Region table as returned by :func:`transcom3_land_regions` or :func:`region_table_from_mask`.
    extras : Dataset (extra), optional
        Scalar parameters appended after the flux block (e.g. annual fossil, ocean and land-use
        corrections in PgC/yr, an initial-condition offset in ppm): coords ``extra`` (label),
        ``component`` and ``units``. The flux block is elements ``0 .. n_flux - 1``.
    """

    time: np.ndarray
    regions: xr.Dataset
    extras: xr.Dataset | None = None

    def __post_init__(self) -> None:
        time = np.asarray(self.time, dtype="datetime64[ns]")
        if time.ndim != 1 or time.size == 0:
            raise ValueError("StateVector.time must be a non-empty 1-D array of month starts")
        if np.any(np.diff(time) <= np.timedelta64(0)):
            raise ValueError("StateVector.time must be strictly increasing")
        object.__setattr__(self, "time", time)
        if self.extras is not None:
            missing = {"extra", "component", "units"} - set(self.extras.coords)
            if missing or set(self.extras.dims) != {"extra"}:
                raise ValueError(f"StateVector.extras needs dim 'extra' and coords {sorted(missing)}")

    @property
    def region(self) -> np.ndarray:
        return self.regions["region"].values

    @property
    def shape(self) -> tuple[int, int]:
        """(months, regions) of the flux block."""
        return (self.time.size, self.region.size)

    @property
    def n_flux(self) -> int:
        return self.time.size * self.region.size

    @property
    def n_extra(self) -> int:
        return 0 if self.extras is None else self.extras.sizes["extra"]

    @property
    def size(self) -> int:
        return self.n_flux + self.n_extra

    @property
    def days_in_month(self) -> np.ndarray:
        return pd.DatetimeIndex(self.time).days_in_month.to_numpy(float)

    def coords(self) -> dict[str, np.ndarray]:
        return {"time": self.time, "region": self.region}

    def extra_index(self, component: str) -> np.ndarray:
        """Positions in the full state vector of the extras of one component."""
        if self.extras is None or component not in self.extras["component"].values:
            raise ValueError(f"state has no extra component {component!r}")
        return self.n_flux + np.flatnonzero(self.extras["component"].values == component)

    def with_site_offsets(self, sites: list[str]) -> StateVector:
        """This state with one constant offset (ppm) per site appended to the extras (component "site_offset").

        An offset absorbs what is constant at a site but not in the transport: a calibration
        scale difference, a biased background, the representativeness of a point against a box.
        """
        if not len(sites):
            return self
        offsets = xr.Dataset(
            coords={
                "extra": [f"offset {s}" for s in sites],
                "component": ("extra", ["site_offset"] * len(sites)),
                "units": ("extra", ["ppm"] * len(sites)),
                "extra_year": ("extra", [-1] * len(sites)),
            }
        )
        extras = offsets if self.extras is None else xr.concat([self.extras, offsets], dim="extra")
        return StateVector(self.time, self.regions, extras)

    def site_offset_matrix(self, obs: xr.Dataset) -> scipy.sparse.csr_matrix:
        """(obs, site offsets) 0/1 matrix: which offset of :meth:`with_site_offsets` each observation carries."""
        labels = self.extras["extra"].values[self.extra_index("site_offset") - self.n_flux]
        column = pd.Index([str(label).removeprefix("offset ") for label in labels]).get_indexer(
            obs["site"].values.astype(str)
        )
        rows = np.flatnonzero(column >= 0)
        return scipy.sparse.csr_matrix(
            (np.ones(rows.size), (rows, column[rows])), shape=(obs.sizes["obs"], labels.size)
        )

    def pad(self, flux_part: np.ndarray) -> np.ndarray:
        """Full-length vector(s) from a flux-block vector (n_flux, ...), zeros for the extras."""
        flux_part = np.asarray(flux_part)
        return np.concatenate([flux_part, np.zeros((self.n_extra, *flux_part.shape[1:]))])

    def to_vector(self, field: xr.DataArray) -> np.ndarray:
        """Flatten a (time, region, ...) DataArray into flux-block order (n_flux, ...); labels must match exactly."""
        missing = {"time", "region"} - set(field.dims)
        if missing:
            raise ValueError(f"{field.name or 'field'} lacks dims {sorted(missing)}; has {field.dims}")
        aligned = field.transpose("time", "region", ...)
        if not (
            np.array_equal(aligned["time"].values, self.time) and np.array_equal(aligned["region"].values, self.region)
        ):
            raise ValueError(
                f"{field.name or 'field'} labels differ from the state's; reindex to the state's "
                f"{self.time.size} months x {self.region.size} regions first"
            )
        return aligned.values.reshape(self.n_flux, *aligned.shape[2:])

    def to_dataarray(self, x: np.ndarray, name: str, attrs: dict | None = None) -> xr.DataArray:
        """The flux block of a state vector (length ``size`` or ``n_flux``) as a labelled (time, region) DataArray."""
        x = np.asarray(x)
        if x.shape[0] not in (self.size, self.n_flux):
            raise ValueError(f"{name}: vector length {x.shape[0]} != state size {self.size}")
        return xr.DataArray(
            x[: self.n_flux].reshape(self.shape),
            dims=("time", "region"),
            coords=self.coords(),
            name=name,
            attrs={"units": FLUX_UNITS, "sign": FLUX_SIGN, **(attrs or {})},
        )

    def extras_dataarray(self, x: np.ndarray, name: str) -> xr.DataArray:
        """The extra parameters of a state vector as a labelled (extra,) DataArray."""
        if self.extras is None:
            raise ValueError("state has no extra parameters")
        return xr.DataArray(np.asarray(x)[self.n_flux :], dims="extra", coords=self.extras.coords, name=name)
