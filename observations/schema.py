"""The Observation Dataset: the one layout every reader returns and every operator consumes.

Layout (dim ``obs``):

=============  =====================================================================
``value``      measured quantity: CO2 dry-air mole fraction in ppm (flux units for towers)
``uncertainty`` 1-sigma uncertainty of ``value`` in the same units, finite and > 0
``time``       UTC datetime64 of the observation (coord)
``latitude``   degrees north, -90..90 (coord)
``longitude``  degrees east, -180..360 (coord)
``altitude``   metres above sea level (coord; NaN allowed for columns and budgets)
``site``       site code, e.g. ``"MLO"`` (coord)
``platform``   one of :data:`PLATFORMS` (coord)
``category``   model-data-mismatch category, e.g. ``"mbl"`` (coord)
=============  =====================================================================

Whole-globe quantities (global means, growth rates, budget terms) have category ``"global"``
and NaN ``latitude``/``longitude``: a point operator must refuse them rather than place them
somewhere on the map.

Optional coords (validated when present, see :data:`OPTIONAL_COORD_ATTRS`): ``flag`` (integer,
0 = usable; rejected data are kept and flagged, never dropped silently), ``flag_reason``,
``scale`` (calibration scale, e.g. ``"WMO CO2 X2019"``), ``intake_height`` (m above ground),
``time_start``/``time_end`` (the averaging period of a mean).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

PLATFORMS = ("surface", "tower", "aircraft", "satellite", "flux_tower", "budget")
VARIABLES = ("value", "uncertainty")
COORDS = ("time", "latitude", "longitude", "altitude", "site", "platform", "category")

COORD_ATTRS = {
    "time": {"standard_name": "time", "long_name": "observation time (UTC)"},
    "latitude": {"standard_name": "latitude", "units": "degrees_north"},
    "longitude": {"standard_name": "longitude", "units": "degrees_east"},
    "altitude": {"standard_name": "altitude", "units": "m", "positive": "up"},
    "site": {"long_name": "site code"},
    "platform": {"long_name": "observing platform", "flag_values": " ".join(PLATFORMS)},
    "category": {"long_name": "model-data mismatch category"},
}


#: Category of whole-globe quantities; their latitude and longitude are NaN.
GLOBAL_CATEGORY = "global"

#: Flag values of the optional ``flag`` coord (0 = usable).
FLAG_MEANINGS = {0: "usable", 1: "rejected_by_provider", 2: "outlier", 3: "not_selected"}

OPTIONAL_COORD_ATTRS = {
    "flag": {
        "long_name": "quality flag (0 = usable)",
        "flag_values": " ".join(str(k) for k in FLAG_MEANINGS),
        "flag_meanings": " ".join(FLAG_MEANINGS.values()),
    },
    "flag_reason": {"long_name": "why the observation is flagged (empty when usable)"},
    "scale": {"long_name": "calibration scale of value"},
    "intake_height": {"long_name": "sample intake height above ground", "units": "m"},
    "time_start": {"long_name": "start of the averaging period (UTC)"},
    "time_end": {"long_name": "end of the averaging period (UTC, exclusive)"},
}


class ObservationError(ValueError):
    """An observation file or Dataset is not usable; the message names where and why."""


def _where(ds: xr.Dataset) -> str:
    source = ds.attrs.get("source_file")
    return f"{source}: " if source else ""


def _first_bad(ds: xr.Dataset, bad: np.ndarray) -> str:
    """Describe the first offending observation: index, site and time."""
    i = int(np.flatnonzero(bad)[0])
    site = ds["site"].values[i] if "site" in ds.coords else "?"
    time = np.datetime_as_string(ds["time"].values[i], unit="D") if "time" in ds.coords else "?"
    return f"obs {i} ({site}, {time}); {int(bad.sum())} of {bad.size} affected"


def validate(ds: xr.Dataset) -> xr.Dataset:
    """Check ``ds`` against the Observation Dataset layout and return it with CF attributes.

    Raises
    ------
    ObservationError
        Naming the source file (``attrs["source_file"]``), the variable and the first
        offending observation.
    """
    where = _where(ds)
    if not isinstance(ds, xr.Dataset):
        raise ObservationError(f"expected an xarray.Dataset, got {type(ds).__name__}")
    if "obs" not in ds.dims:
        raise ObservationError(f"{where}no 'obs' dimension (found dims {sorted(ds.dims)})")
    for name in (*VARIABLES, *COORDS):
        if name not in ds.variables:
            raise ObservationError(f"{where}missing variable or coord {name!r}")
        if ds[name].dims != ("obs",):
            raise ObservationError(f"{where}{name!r} has dims {ds[name].dims}, expected ('obs',)")
    if ds.sizes["obs"] == 0:
        raise ObservationError(f"{where}no observations")

    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise ObservationError(f"{where}'time' must be datetime64 (UTC), got {ds['time'].dtype}")
    if np.isnat(ds["time"].values).any():
        raise ObservationError(f"{where}'time' is missing at {_first_bad(ds, np.isnat(ds['time'].values))}")
    for name in VARIABLES:
        if not np.issubdtype(ds[name].dtype, np.number):
            raise ObservationError(f"{where}{name!r} must be numeric, got {ds[name].dtype}")
    value = np.asarray(ds["value"].values, dtype=float)
    if not np.isfinite(value).all():
        raise ObservationError(f"{where}'value' is not finite at {_first_bad(ds, ~np.isfinite(value))}")
    unc = np.asarray(ds["uncertainty"].values, dtype=float)
    bad = ~(np.isfinite(unc) & (unc > 0))
    if bad.any():
        raise ObservationError(
            f"{where}'uncertainty' must be finite and > 0, found {unc[bad][0]!r} at "
            f"{_first_bad(ds, bad)}; set a floor with observations.errors"
        )
    units = ds["value"].attrs.get("units")
    if units is None or ds["uncertainty"].attrs.get("units") != units:
        raise ObservationError(
            f"{where}'value' and 'uncertainty' need the same 'units' attribute, found "
            f"{units!r} and {ds['uncertainty'].attrs.get('units')!r}"
        )
    whole_globe = ds["category"].values.astype(str) == GLOBAL_CATEGORY
    lat = np.asarray(ds["latitude"].values, dtype=float)
    bad = ~((np.abs(lat) <= 90) | (whole_globe & np.isnan(lat)))
    if bad.any():
        raise ObservationError(f"{where}'latitude' outside -90..90 at {_first_bad(ds, bad)}")
    lon = np.asarray(ds["longitude"].values, dtype=float)
    bad = ~(((lon >= -180) & (lon <= 360)) | (whole_globe & np.isnan(lon)))
    if bad.any():
        raise ObservationError(f"{where}'longitude' outside -180..360 at {_first_bad(ds, bad)}")
    platform = ds["platform"].values.astype(str)
    bad = np.ones(platform.shape, bool)
    for name in PLATFORMS:  # a few vector comparisons: much faster than np.isin on 1e6 strings
        bad &= platform != name
    if bad.any():
        raise ObservationError(
            f"{where}'platform' {platform[bad][0]!r} is not one of {PLATFORMS} at {_first_bad(ds, bad)}"
        )
    optional = [name for name in OPTIONAL_COORD_ATTRS if name in ds.variables]
    for name in optional:
        if ds[name].dims != ("obs",):
            raise ObservationError(f"{where}{name!r} has dims {ds[name].dims}, expected ('obs',)")
    if "flag" in ds.variables and not np.issubdtype(ds["flag"].dtype, np.integer):
        raise ObservationError(f"{where}'flag' must be integer (0 = usable), got {ds['flag'].dtype}")
    attrs = {name: COORD_ATTRS[name] for name in COORDS} | {name: OPTIONAL_COORD_ATTRS[name] for name in optional}
    return ds.assign_coords({name: ds[name].assign_attrs(extra) for name, extra in attrs.items()})


def observation_dataset(
    value: np.ndarray,
    uncertainty: np.ndarray,
    *,
    units: str,
    time: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    altitude: np.ndarray,
    site: np.ndarray,
    platform: np.ndarray | str,
    category: np.ndarray | str,
    attrs: dict | None = None,
    coords: dict[str, np.ndarray] | None = None,
    data_vars: dict[str, tuple] | None = None,
    check: bool = True,
) -> xr.Dataset:
    """Assemble and validate an Observation Dataset from 1-D arrays (scalars broadcast).

    ``coords`` adds optional obs-dim coords (e.g. ``flag``, ``scale``, ``intake_height``; scalars
    broadcast); ``data_vars`` adds further variables as xarray ``(dims, values, attrs)`` tuples.
    ``check=False`` skips :func:`validate`, for callers that validate the result themselves
    (the registered readers of :mod:`observations.readers` always do).
    """
    n = np.asarray(value).shape[0]

    def column(x: np.ndarray | str, dtype: type | None = None) -> np.ndarray:
        x = np.asarray(x)
        if dtype is float:
            x = x.astype(float, copy=False)
        elif dtype is str and x.dtype.kind != "U":
            x = x.astype(str)
        return np.broadcast_to(x, (n,)) if x.ndim == 0 else x  # a read-only view: no 1e6-string copies

    ds = xr.Dataset(
        {
            "value": ("obs", np.asarray(value, float), {"units": units}),
            "uncertainty": ("obs", np.asarray(uncertainty, float), {"units": units}),
        },
        coords={
            "time": ("obs", np.asarray(time, "datetime64[ns]")),
            "latitude": ("obs", column(latitude, float)),
            "longitude": ("obs", column(longitude, float)),
            "altitude": ("obs", column(altitude, float)),
            "site": ("obs", column(site, str)),
            "platform": ("obs", column(platform, str)),
            "category": ("obs", column(category, str)),
            **{name: ("obs", column(x)) for name, x in (coords or {}).items()},
        },
        attrs=dict(attrs or {}),
    )
    ds = ds.assign(data_vars or {})
    return validate(ds) if check else ds
