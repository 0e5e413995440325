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

import functools

import numpy as np
import pint
import xarray as xr

from observations.units import ureg

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


def _extrema(ds: xr.Dataset, names: tuple[str, ...]) -> dict[str, tuple]:
    """(min, max) of each variable in one pass over the data: NaN/NaT propagate, so a finite pair means all finite.

    Dask-backed (lazily read) variables are reduced together in one ``dask.compute``; nothing is loaded.
    """
    data = {name: ds.variables[name].data for name in names}
    data = {name: x[:1] if getattr(x, "strides", None) == (0,) else x for name, x in data.items()}  # broadcast
    pairs = {name: _min_max(x) for name, x in data.items()}
    if any(_is_dask(x) for x in data.values()):
        import dask  # only lazily read Datasets need it

        pairs = dask.compute(pairs)[0]
    return pairs


def _min_max(x: np.ndarray) -> tuple:
    if isinstance(x, np.ndarray) and x.dtype.kind == "M":  # as int64 (4x faster); NaT is the smallest int64
        as_int = x.view(np.int64)
        return as_int.min().view(x.dtype), as_int.max().view(x.dtype)
    return x.min(), x.max()


def _is_dask(x: object) -> bool:
    return type(x).__module__.partition(".")[0] == "dask"


def _bad_platforms(platform: np.ndarray) -> np.ndarray:
    """Mask of ``platform`` entries not in :data:`PLATFORMS`, comparing only where the value changes."""
    if platform.strides == (0,):  # one value broadcast to every obs (a reader's scalar)
        starts = np.zeros(1, int)
    else:
        starts = np.flatnonzero(np.r_[True, platform[1:] != platform[:-1]])
    if all(str(value) in PLATFORMS for value in set(platform[starts].tolist())):
        return np.zeros(platform.shape, bool)
    return ~np.isin(platform.astype(str), PLATFORMS)


#: What an observation may measure: mole fractions, growth rates, budget terms, flux densities.
MEASURABLE = ("[]", "1/[time]", "[mass]/[time]", "[mass]/[length]**2/[time]", "[substance]/[length]**2/[time]")


@functools.cache
def _dimension_ok(units: str) -> bool | None:
    """True if ``units`` measure one of :data:`MEASURABLE`, False if not, None if pint cannot parse them."""
    if not units.strip():
        return None
    try:
        dimensionality = ureg.Quantity(1.0, units).dimensionality
    except (pint.PintError, ValueError, TypeError, AttributeError, AssertionError, SyntaxError):
        return None
    return any(dimensionality == ureg.get_dimensionality(d) for d in MEASURABLE)


def _check_units(units: str, where: str) -> None:
    ok = _dimension_ok(str(units))
    if ok is None:
        raise ObservationError(f"{where}'value' has units {units!r}, which are not a unit; use e.g. 'ppm'")
    if not ok:
        raise ObservationError(
            f"{where}'value' has units {units!r}, not a mole fraction (ppm), growth rate (ppm yr-1), "
            "carbon flux (PgC yr-1) or flux density (gC m-2 d-1)"
        )


def validate(ds: xr.Dataset) -> xr.Dataset:
    """Check ``ds`` against the Observation Dataset layout and return it with CF attributes.

    O(n) with cheap reductions: each numeric check first looks at the (min, max) of the variable
    and builds the per-observation mask only to describe a failure. Lazily read (dask) variables
    are checked without being loaded.

    Raises
    ------
    ObservationError
        Naming the source file (``attrs["source_file"]``), the variable and the first
        offending observation.
    """
    where = _where(ds)
    if not isinstance(ds, xr.Dataset):
        raise ObservationError(f"expected an xarray.Dataset, got {type(ds).__name__}")
    var = ds.variables  # Variables, not DataArrays: no coords assembled per access
    if "obs" not in ds.dims:
        raise ObservationError(f"{where}no 'obs' dimension (found dims {sorted(ds.dims)})")
    for name in (*VARIABLES, *COORDS):
        if name not in ds.variables:
            raise ObservationError(f"{where}missing variable or coord {name!r}")
        if var[name].dims != ("obs",):
            raise ObservationError(f"{where}{name!r} has dims {var[name].dims}, expected ('obs',)")
    if ds.sizes["obs"] == 0:
        raise ObservationError(f"{where}no observations")

    if not np.issubdtype(var["time"].dtype, np.datetime64):
        raise ObservationError(f"{where}'time' must be datetime64 (UTC), got {var['time'].dtype}")
    for name in VARIABLES:
        if not np.issubdtype(var[name].dtype, np.number):
            raise ObservationError(f"{where}{name!r} must be numeric, got {var[name].dtype}")
    extrema = _extrema(ds, ("time", "value", "uncertainty", "latitude", "longitude"))
    if np.isnat(extrema["time"][0]):
        raise ObservationError(f"{where}'time' is missing at {_first_bad(ds, np.isnat(var['time'].values))}")
    if not np.isfinite(np.asarray(extrema["value"], dtype=float)).all():
        bad = ~np.isfinite(np.asarray(var["value"].values, dtype=float))
        raise ObservationError(f"{where}'value' is not finite at {_first_bad(ds, bad)}")
    low, high = np.asarray(extrema["uncertainty"], dtype=float)
    if not (low > 0 and np.isfinite(high)):
        unc = np.asarray(var["uncertainty"].values, dtype=float)
        bad = ~(np.isfinite(unc) & (unc > 0))
        raise ObservationError(
            f"{where}'uncertainty' must be finite and > 0, found {unc[bad][0]!r} at "
            f"{_first_bad(ds, bad)}; set a floor with observations.errors"
        )
    units = var["value"].attrs.get("units")
    if units is None or var["uncertainty"].attrs.get("units") != units:
        raise ObservationError(
            f"{where}'value' and 'uncertainty' need the same 'units' attribute, found "
            f"{units!r} and {var['uncertainty'].attrs.get('units')!r}"
        )
    _check_units(units, where)
    for name, (min_ok, max_ok) in (("latitude", (-90, 90)), ("longitude", (-180, 360))):
        low, high = np.asarray(extrema[name], dtype=float)
        if low >= min_ok and high <= max_ok:  # False for NaN: whole-globe records take the full check
            continue
        whole_globe = var["category"].values.astype(str) == GLOBAL_CATEGORY
        values = np.asarray(var[name].values, dtype=float)
        bad = ~(((values >= min_ok) & (values <= max_ok)) | (whole_globe & np.isnan(values)))
        if bad.any():
            raise ObservationError(f"{where}{name!r} outside {min_ok}..{max_ok} at {_first_bad(ds, bad)}")
    platform = var["platform"].values
    bad = _bad_platforms(platform)
    if bad.any():
        raise ObservationError(
            f"{where}'platform' {platform[bad][0]!r} is not one of {PLATFORMS} at {_first_bad(ds, bad)}"
        )
    optional = [name for name in OPTIONAL_COORD_ATTRS if name in ds.variables]
    for name in optional:
        if var[name].dims != ("obs",):
            raise ObservationError(f"{where}{name!r} has dims {var[name].dims}, expected ('obs',)")
    if "flag" in ds.variables and not np.issubdtype(var["flag"].dtype, np.integer):
        raise ObservationError(f"{where}'flag' must be integer (0 = usable), got {var['flag'].dtype}")
    attrs = {name: COORD_ATTRS[name] for name in COORDS} | {name: OPTIONAL_COORD_ATTRS[name] for name in optional}
    out = ds.copy(deep=False)  # new Variable objects with copied attrs: the input's attrs stay as they were
    for name, extra in attrs.items():
        out.variables[name].attrs.update(extra)
    return out


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
    n = np.shape(value)[0]

    def column(x: np.ndarray | str, dtype: type | None = None) -> np.ndarray:
        if _is_dask(x):  # a lazily read column stays lazy
            return x.astype(dtype) if dtype is float else x
        x = np.asarray(x)
        if dtype is float:
            x = x.astype(float, copy=False)
        elif dtype is str and x.dtype.kind != "U":
            x = x.astype(str)
        return np.broadcast_to(x, (n,)) if x.ndim == 0 else x  # a read-only view: no 1e6-string copies

    ds = xr.Dataset(
        {
            "value": ("obs", column(value, float), {"units": units}),
            "uncertainty": ("obs", column(uncertainty, float), {"units": units}),
        },
        coords={
            "time": ("obs", time if _is_dask(time) else np.asarray(time, "datetime64[ns]")),
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
