"""ObsPack netCDF (GLOBALVIEWplus and NOAA CCGG per-site layouts), one file or a directory of them.

Layout (ObsPack documentation, gml.noaa.gov/ccgg/obspack/documentation.html; the real files in
../shared/data/obspack_format): dimension ``obs``; ``time`` (int seconds since 1970-01-01 UTC, the
*start* of an averaging interval), ``value`` (dry-air mole fraction with a ``units`` attribute:
``mol mol-1`` in GLOBALVIEWplus, ``nanomol mol-1``/``micromol mol-1`` in per-site files),
``value_unc`` or ``value_std_dev`` (same units) where present, ``latitude``, ``longitude``,
``altitude`` (m asl = elevation + intake height), ``intake_height`` (m above ground), ``qcflag``
(char, NOAA 3-character flag: a first character other than ``.`` = rejected), ``obs_flag``
(1 = large-scale representative, 0 = local influence, use with care), ``obspack_num`` and
``obspack_id`` (``obspack_name~dataset_name~obspack_num``); global attributes ``site_code``,
``site_name``, ``dataset_project`` (``surface-flask``, ``tower-insitu``, ``aircraft-pfp``, ...),
``dataset_parameter`` (species), ``dataset_calibration_scale``, ``lab_1_abbr``.

Values are converted with :func:`observations.units.convert` to ppm (CO2) or ppb (CH4); a value
outside the plausible range after conversion (the classic mol/mol slip) raises.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from observations._build import SPECIES, VERSION, check_plausible
from observations._text import fail
from observations.readers import reader
from observations.schema import observation_dataset
from observations.sites import site_category
from observations.units import convert

#: Measurement uncertainty used where a file gives none, and floor on ``value_unc`` (species units):
#: the WMO/GAW network compatibility goals (GAW Report No. 255, 2020): CO2 0.1 ppm, CH4 2 ppb.
UNCERTAINTY_FLOOR = {"co2": 0.1, "ch4": 2.0}

#: ObsPack project word -> our platform.
PROJECT_PLATFORM = {"surface": "surface", "tower": "tower", "aircraft": "aircraft", "shipboard": "surface"}

_NEEDED = ("time", "value", "latitude", "longitude", "altitude")


def _is_obspack(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return any(path.glob("*.nc"))
    return head[:4] in (b"CDF\x01", b"CDF\x02", b"\x89HDF") and (
        "obspack" in path.name.lower() or bool(re.match(r"(co2|ch4)_[a-z0-9]+_[a-z]+-[a-z]+", path.name))
    )


def _numbers(path: Path, nc: netCDF4.Dataset, name: str) -> np.ndarray:
    """Variable ``name`` as float64 with its fill and missing values as NaN."""
    if name not in nc.variables:
        raise fail(path, f"variable {name!r} is missing; an ObsPack file needs {list(_NEEDED)}")
    var = nc.variables[name]
    if var.dimensions != ("obs",):
        raise fail(path, f"variable {name!r} has dims {var.dimensions}, expected ('obs',)")
    var.set_auto_maskandscale(False)
    data = np.asarray(var[:], dtype=float)
    for attr in ("_FillValue", "missing_value"):
        if attr in var.ncattrs():
            try:
                fill = float(np.asarray(var.getncattr(attr)).ravel()[0])
            except (TypeError, ValueError):
                continue
            data[data == fill] = np.nan
    return data


def _rejected_by_qcflag(nc: netCDF4.Dataset, n: int) -> np.ndarray:
    """NOAA 3-character ``qcflag`` (char obs x 10): first character other than "." = rejected;
    ``NA``, empty or no ``qcflag`` variable = no flag given. Compared as bytes (fast for 1e6 records)."""
    var = nc.variables.get("qcflag")
    if var is None or len(var.dimensions) != 2 or var.shape[1] == 0 or var.dtype != np.dtype("S1"):
        return np.zeros(n, bool)
    var.set_auto_maskandscale(False)
    raw = np.asarray(var[:])
    first = raw[:, 0]
    second = raw[:, 1] if raw.shape[1] > 1 else np.zeros(raw.shape[0], "S1")
    unset = (first == b"") | ((first == b"N") & (second == b"A"))
    return ~unset & (first != b".")


def _times(path: Path, nc: netCDF4.Dataset) -> np.ndarray:
    """``time`` as datetime64[ns] UTC."""
    seconds = _numbers(path, nc, "time")
    units = getattr(nc.variables["time"], "units", "")
    if np.isnan(seconds).any():
        raise fail(path, f"variable 'time' is missing at obs {int(np.flatnonzero(np.isnan(seconds))[0])}")
    if re.fullmatch(r"seconds since 1970-01-01( |T)?(00:00(:00)?)?Z?( UTC)?", units.strip()):
        return (seconds * 1e9).astype("int64").astype("datetime64[ns]")
    try:
        dates = netCDF4.num2date(seconds, units, only_use_cftime_datetimes=False, only_use_python_datetimes=True)
    except (ValueError, TypeError) as err:
        raise fail(path, f"variable 'time' has units {units!r}, expected 'seconds since 1970-01-01 00:00:00'") from err
    return np.asarray(dates, dtype="datetime64[ns]")


def _species(path: Path, nc: netCDF4.Dataset) -> str:
    species = str(getattr(nc, "dataset_parameter", "") or path.name.split("_")[0]).lower()
    if species not in SPECIES:
        raise fail(path, f"species {species!r} (global attribute dataset_parameter) is not one of {sorted(SPECIES)}")
    return species


def read_obspack_file(path: Path, *, keep_rejected: bool = False, category: str | dict | None = None) -> dict:
    """Columns of one ObsPack file (see :func:`read_obspack`) as a dict of 1-D arrays plus ``attrs``."""
    try:
        nc = netCDF4.Dataset(path)
    except OSError as err:
        raise fail(path, f"not a readable netCDF file ({err}); the file is truncated or of another format") from err
    with nc, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # netCDF4: char missing_value "NA" cannot be cast
        if "obs" not in nc.dimensions:
            raise fail(path, f"no 'obs' dimension (found {list(nc.dimensions)}); not an ObsPack file")
        species = _species(path, nc)
        units_out, _ = SPECIES[species]
        value_var = nc.variables.get("value")
        units = getattr(value_var, "units", None) if value_var is not None else None
        if value_var is not None and not str(units or "").strip():
            raise fail(path, "variable 'value' has no 'units' attribute; ObsPack values are in 'mol mol-1'")
        value = _numbers(path, nc, "value")
        try:
            value = np.asarray(_convert(value, units, units_out))
        except ValueError as err:
            raise fail(path, f"variable 'value': units {units!r} are not a mole fraction") from err
        unc_name = next((n for n in ("value_unc", "value_std_dev") if n in nc.variables), None)
        unc = _numbers(path, nc, unc_name) if unc_name else np.full(value.shape, np.nan)
        if unc_name:
            unc = np.asarray(_convert(unc, getattr(nc.variables[unc_name], "units", units), units_out))
        time = _times(path, nc)
        lat, lon, alt = (_numbers(path, nc, n) for n in ("latitude", "longitude", "altitude"))
        intake = (
            _numbers(path, nc, "intake_height") if "intake_height" in nc.variables else np.full(value.shape, np.nan)
        )
        rejected = _rejected_by_qcflag(nc, value.size)
        obs_flag = _numbers(path, nc, "obs_flag") if "obs_flag" in nc.variables else np.ones(value.shape)
        number = _numbers(path, nc, "obspack_num") if "obspack_num" in nc.variables else np.arange(value.size) + 1.0
        attrs = {name: nc.getncattr(name) for name in nc.ncattrs()}
    n = value.size
    for name, column in (("time", time), ("latitude", lat), ("obs_flag", obs_flag), ("obspack_num", number)):
        if column.shape != (n,):
            raise fail(path, f"variable {name!r} has {column.shape[0]} values but 'value' has {n}")
    missing = np.isnan(value)
    check_plausible(path, value, species, "value")
    if rejected.shape != (n,):
        raise fail(path, f"variable 'qcflag' has {rejected.shape[0]} rows but 'value' has {n}")
    local = obs_flag == 0
    bad_place = ~missing & ~((np.abs(lat) <= 90) & (lon >= -180) & (lon <= 360))
    if bad_place.any():
        i = int(np.flatnonzero(bad_place)[0])
        raise fail(path, f"variables latitude/longitude: obs {i} at ({lat[i]}, {lon[i]}) is outside -90..90/-180..360")
    keep = ~missing & (keep_rejected | ~(rejected | local))
    if keep.all():  # nothing to leave out: no copies
        keep = slice(None)
    floor = UNCERTAINTY_FLOOR[species]
    site = str(attrs.get("site_code", path.name.split("_")[1] if path.name.count("_") else "?")).upper()
    project = str(attrs.get("dataset_project", "surface-")).split("-")[0].lower()
    platform = PROJECT_PLATFORM.get(project, "surface")
    flag = np.where(rejected, 1, np.where(local, 3, 0)).astype(np.int8)[keep]
    reason = np.full(flag.size, "")  # built only when something kept is flagged: 1e6 long strings are slow
    if flag.any():
        reason = np.where(flag == 1, "provider qcflag", np.where(flag == 3, "obs_flag 0 (local influence)", ""))
    return {
        "value": value[keep],
        "uncertainty": np.fmax(np.where(np.isnan(unc), floor, unc), floor)[keep],
        "value_unc": unc[keep],
        "time": time[keep],
        "latitude": lat[keep],
        "longitude": lon[keep],
        "altitude": alt[keep],
        "intake_height": intake[keep],
        "site": site,  # scalars broadcast in observation_dataset
        "platform": platform,
        "category": site_category(site, project, category),
        "flag": flag,
        "flag_reason": reason,
        "obspack_num": number[keep].astype(np.int64),
        "scale": str(attrs.get("dataset_calibration_scale", "not stated")),
        "lab": str(attrs.get("lab_1_abbr", "not stated")),
        "dataset": str(attrs.get("dataset_name", path.stem)),
        "units": units_out,
        "counts": {
            "missing": int(missing.sum()),
            "rejected": int((rejected & ~missing).sum()),
            "local": int((local & ~missing & ~rejected).sum()),
        },
        "attrs": attrs,
        "species": species,
    }


def _convert(values: np.ndarray, units: str, to: str) -> np.ndarray:
    """``values`` from ``units`` to ``to``: pint finds the factor once, numpy applies it (1e6 records)."""
    return values * float(convert(1.0, units, to))


@reader("obspack", _is_obspack)
def read_obspack(
    path: Path | str,
    *,
    keep_rejected: bool = False,
    category: str | dict[str, str] | None = None,
    pattern: str = "*.nc",
) -> xr.Dataset:
    """Read one ObsPack netCDF file, or every ``pattern`` file of a directory, into one Dataset.

    Parameters
    ----------
    keep_rejected : bool
        Keep provider-rejected records (``qcflag`` first character not ``.``: ``flag`` 1) and
        ``obs_flag`` 0 records (``flag`` 3) with the reason in ``flag_reason``. By default they are
        left out and counted in ``attrs["n_rejected"]`` / ``attrs["n_obs_flag_0"]``.
    category : str or dict, optional
        Mismatch category (one word, or site -> word); default by site and project
        (:func:`observations.sites.site_category`).

    Returns
    -------
    Observation Dataset (obs,)
        ``value``/``uncertainty`` in ppm (CO2) or ppb (CH4); uncertainty = ``value_unc`` (or
        ``value_std_dev``) floored at :data:`UNCERTAINTY_FLOOR` (the floor alone where none is
        given); coords ``intake_height``, ``scale``, ``obspack_num`` and ``file_index`` into the
        per-file variables ``dataset`` and ``lab`` (dim ``file``): ``obspack_id`` =
        ``attrs["obspack_name"] ~ dataset[file_index] ~ obspack_num``; ``value_unc`` kept.
    """
    path = Path(path)
    files = sorted(path.glob(pattern)) if path.is_dir() else [path]
    if not files:
        raise fail(path, f"no files matching {pattern!r} in the directory")
    parts = [read_obspack_file(f, keep_rejected=keep_rejected, category=category) for f in files]
    units = {p["units"] for p in parts}
    if len(units) > 1:
        raise fail(path, f"the collection mixes species/units {sorted(units)}; read one species at a time")
    sizes = [p["value"].size for p in parts]

    def stack(name: str) -> np.ndarray:
        if len(parts) == 1:  # one file: no copy; scalars broadcast in observation_dataset
            return parts[0][name]
        return np.concatenate(
            [np.broadcast_to(np.asarray(p[name]), (size,)) for p, size in zip(parts, sizes, strict=True)]
        )

    if sum(sizes) == 0:
        raise fail(path, "no usable observations (all values missing or rejected)")
    first = parts[0]["attrs"]
    ds = observation_dataset(
        stack("value"),
        stack("uncertainty"),
        check=False,  # validated once by the reader wrapper
        units=parts[0]["units"],
        time=stack("time"),
        latitude=stack("latitude"),
        longitude=stack("longitude"),
        altitude=stack("altitude"),
        site=stack("site"),
        platform=stack("platform"),
        category=stack("category"),
        coords={name: stack(name) for name in ("intake_height", "flag", "flag_reason", "obspack_num", "scale")}
        | {"file_index": np.repeat(np.arange(len(files), dtype=np.int32), sizes)},
        data_vars={
            "dataset": ("file", [p["dataset"] for p in parts], {"long_name": "ObsPack dataset_name of each file"}),
            "lab": ("file", [p["lab"] for p in parts], {"long_name": "lab_1_abbr of each file"}),
            "value_unc": (
                "obs",
                stack("value_unc"),
                {"units": parts[0]["units"], "long_name": "value_unc or value_std_dev from the file"},
            ),
        },
        attrs={
            "source_file": path.name,
            "history": f"read by observations.obspack (assim {VERSION})",
            "quantity": f"{parts[0]['species']}_mole_fraction",
            "obspack_name": str(first.get("obspack_name", "not stated")),
            "n_files": len(files),
            "n_missing": sum(p["counts"]["missing"] for p in parts),
            "n_rejected": sum(p["counts"]["rejected"] for p in parts),
            "n_obs_flag_0": sum(p["counts"]["local"] for p in parts),
            "rejected_kept": int(keep_rejected),
            "time_convention": "ObsPack: time-averaged values are stamped at the start of the averaging interval",
            "obspack_fair_use": str(first.get("obspack_fair_use", first.get("dataset_fair_use", ""))),
            "obspack_citation": str(first.get("obspack_citation", "")),
        },
    )
    return ds
