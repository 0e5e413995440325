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

import functools
import glob
import re
import warnings
from collections.abc import Callable
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
#: Where each record is (float64, fills as NaN; intake_height when present): often one place per file.
_PLACE = ("latitude", "longitude", "altitude", "intake_height")
#: Per-record variables read when present.
_OPTIONAL = ("value_unc", "value_std_dev", "intake_height", "obs_flag", "obspack_num")


def _is_obspack(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return any(path.glob("*.nc"))
    return head[:4] in (b"CDF\x01", b"CDF\x02", b"\x89HDF") and (
        "obspack" in path.name.lower() or bool(re.match(r"(co2|ch4)_[a-z0-9]+_[a-z]+-[a-z]+", path.name))
    )


def _variable(path: Path, nc: netCDF4.Dataset, name: str) -> netCDF4.Variable:
    """Variable ``name`` of dims ``("obs",)``; raise naming the file when it is missing or shaped otherwise."""
    if name not in nc.variables:
        raise fail(path, f"variable {name!r} is missing; an ObsPack file needs {list(_NEEDED)}")
    var = nc.variables[name]
    if var.dimensions != ("obs",):
        raise fail(path, f"variable {name!r} has dims {var.dimensions}, expected ('obs',)")
    return var


def _fills(var: netCDF4.Variable) -> tuple[np.float64, ...]:
    """The numeric ``_FillValue`` and ``missing_value`` of ``var`` (a text one such as "NA" is skipped)."""
    fills = []
    for attr in ("_FillValue", "missing_value"):
        if attr in var.ncattrs():
            try:
                fills.append(np.float64(np.asarray(var.getncattr(attr)).ravel()[0]))
            except (TypeError, ValueError):
                continue
    return tuple(fills)


def _missing(raw: np.ndarray, fills: tuple[np.float64, ...]) -> np.ndarray:
    """Mask of NaN or fill values in ``raw`` as stored (fills compared in float64: np.float64 promotes)."""
    missing = np.isnan(raw) if raw.dtype.kind == "f" else np.zeros(raw.shape, bool)
    for fill in fills:
        missing |= raw == fill
    return missing


def _floats(
    raw: np.ndarray, fills: tuple[np.float64, ...] = (), factor: float = 1.0, dtype: np.dtype | type = np.float64
) -> np.ndarray:
    """``raw`` as ``dtype`` times ``factor``, with its fill and missing values as NaN (one file's column or chunk)."""
    out = np.multiply(raw, factor, dtype=dtype) if factor != 1.0 else raw.astype(dtype)  # one pass, a new array
    for fill in fills:
        hit = raw == fill  # compared as stored
        if hit.any():
            out[hit] = np.nan
    return out


def _floats_of(var: netCDF4.Variable, factor: float = 1.0, *, as_stored: bool = False) -> functools.partial:
    """:func:`_floats` with ``var``'s fill values and ``factor`` bound; float64 or, ``as_stored``, its float type.

    ``value`` and the positions are float64; ``value_unc`` and ``intake_height`` keep the file's float32
    (half the memory of 1e6 records; the stored precision is all there is).
    """
    dtype = var.dtype if as_stored and var.dtype.kind == "f" else np.dtype(np.float64)
    return functools.partial(_floats, fills=_fills(var), factor=factor, dtype=dtype)


def _check_present(path: Path, name: str, raw: np.ndarray, fills: tuple[np.float64, ...]) -> None:
    """Raise at the first NaN or fill value of ``raw`` (boolean masks only: no float copy of the column)."""
    if raw.dtype.kind != "f" and not fills:  # integers without a fill value cannot be missing
        return
    missing = _missing(raw, fills)
    if missing.any():
        raise fail(path, f"variable {name!r} is missing at obs {int(np.flatnonzero(missing)[0])}")


def _times(raw: np.ndarray, fills: tuple[np.float64, ...], path: Path, units: str) -> np.ndarray:
    """``time`` (seconds since 1970-01-01 UTC, int or float) as datetime64[ns]; raise at a missing time."""
    _check_present(path, "time", raw, fills)
    if not re.fullmatch(r"seconds since 1970-01-01( |T)?(00:00(:00)?)?Z?( UTC)?", units.strip()):
        try:
            dates = netCDF4.num2date(raw, units, only_use_cftime_datetimes=False, only_use_python_datetimes=True)
        except (ValueError, TypeError) as err:
            raise fail(
                path, f"variable 'time' has units {units!r}, expected 'seconds since 1970-01-01 00:00:00'"
            ) from err
        return np.asarray(dates, dtype="datetime64[ns]")
    if raw.size and raw.dtype.itemsize > 4 and not (-9.2e9 < raw.min() and raw.max() < 9.2e9):  # int32 cannot
        raise fail(path, f"variable 'time' reaches {raw.max():g} s since 1970: beyond datetime64[ns] (year 2262)")
    if raw.dtype.kind == "f":
        return np.multiply(raw, 1e9, dtype=np.float64).astype(np.int64).view("datetime64[ns]")
    nanoseconds = raw.astype(np.int64)
    nanoseconds *= 1_000_000_000
    return nanoseconds.view("datetime64[ns]")


def _rejected_by_qcflag(nc: netCDF4.Dataset, n: int) -> np.ndarray:
    """NOAA 3-character ``qcflag`` (char obs x 10): first character other than "." = rejected;
    ``NA``, empty or no ``qcflag`` variable = no flag given. Compared as bytes (fast for 1e6 records)."""
    var = nc.variables.get("qcflag")
    if var is None or len(var.dimensions) != 2 or var.shape[1] == 0 or var.dtype != np.dtype("S1"):
        return np.zeros(n, bool)
    raw = np.asarray(var[:]).view(np.uint8)
    rejected = _REJECTS[raw[:, 0]]
    if raw.shape[1] > 1:  # "NA" (no flag): looked at only where the first byte rejected (few records)
        flagged = np.flatnonzero(rejected)
        rejected[flagged[(raw[flagged, 0] == ord("N")) & (raw[flagged, 1] == ord("A"))]] = False
    return rejected


#: First qcflag byte -> rejected ("." accepted; NUL = no flag given; "NA" handled in _rejected_by_qcflag).
_REJECTS = np.ones(256, bool)
_REJECTS[[0, ord(".")]] = False


def _species(path: Path, nc: netCDF4.Dataset) -> str:
    species = str(getattr(nc, "dataset_parameter", "") or path.name.split("_")[0]).lower()
    if species not in SPECIES:
        raise fail(path, f"species {species!r} (global attribute dataset_parameter) is not one of {sorted(SPECIES)}")
    return species


def _factor(path: Path, var: netCDF4.Variable, units: str | None, to: str) -> float:
    """Factor from ``units`` (default: ``var``'s own) to ``to``: pint finds it once, numpy applies it (1e6 records)."""
    units = getattr(var, "units", None) if units is None else units
    if not str(units or "").strip():
        raise fail(path, f"variable {var.name!r} has no 'units' attribute; ObsPack values are in 'mol mol-1'")
    try:
        return float(convert(1.0, units, to))
    except ValueError as err:
        raise fail(path, f"variable {var.name!r}: units {units!r} are not a mole fraction") from err


def _open(path: Path) -> netCDF4.Dataset:
    try:
        nc = netCDF4.Dataset(path)
    except OSError as err:
        raise fail(path, f"not a readable netCDF file ({err}); the file is truncated or of another format") from err
    nc.set_auto_maskandscale(False)  # fills are handled by _floats, as stored
    return nc


def _check_plausible(path: Path, raw: np.ndarray, usable: np.ndarray, floats: functools.partial, species: str) -> None:
    """:func:`check_plausible` on the usable values; their range is found as stored first (no float copy)."""
    factor, (low, high) = floats.keywords["factor"], SPECIES[species][1]  # unit factors are > 0
    smallest = np.fmin.reduce(raw, where=usable, initial=np.inf) * factor
    largest = np.fmax.reduce(raw, where=usable, initial=-np.inf) * factor
    if not low <= smallest <= largest <= high:  # also with no usable value, where check_plausible finds nothing
        check_plausible(path, floats(raw), species, "value")


def _lazy_columns(path: Path, sources: dict[str, tuple], keep: np.ndarray, chunks: int) -> dict:
    """The ``sources`` columns as dask arrays: each chunk of ``chunks`` records read, its kept records selected
    and transformed when computed (the selection happens inside the chunk: no dask fancy indexing)."""
    import dask.array as da  # only the lazy path needs it

    raw = xr.open_dataset(path, decode_cf=False, chunks={"obs": chunks})
    starts = np.cumsum((0, *raw["value"].chunks[0][:-1]))
    kept = tuple(int(k) for k in np.add.reduceat(keep.astype(np.int64), starts))
    keep = da.from_array(keep, chunks=raw["value"].chunks)
    return {
        name: da.map_blocks(_kept, raw[var].data, keep, transform=func, chunks=(kept,), dtype=_output_dtype(name, func))
        for name, (var, func) in sources.items()
    }


def _kept(raw: np.ndarray, keep: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return transform(raw[keep])


def _output_dtype(name: str, func: Callable) -> np.dtype:
    """dtype of the column ``name`` made by ``func`` (for dask's ``map_blocks``)."""
    return np.dtype("M8[ns]") if name == "time" else func.keywords["dtype"]


def _check_length(path: Path, name: str, column: np.ndarray, n: int) -> np.ndarray:
    if column.shape != (n,):
        raise fail(path, f"variable {name!r} has {column.shape[0]} values but 'value' has {n}")
    return column


#: Plausible range of the place columns (altitude and intake height unchecked).
_RANGES = {"latitude": (-90.0, 90.0), "longitude": (-180.0, 360.0)}


def _place(path: Path, name: str, raw: np.ndarray, usable: np.ndarray, pick: Callable, func: Callable) -> np.ndarray:
    """Place column ``name``: checked against :data:`_RANGES` on the usable records, then ``func(pick(raw))``,
    or ``func`` of its one value as a 0-d array when every record has it (a fixed site). min/max first: no
    masks and no copies when the column is in range and constant."""
    low, high = (raw.min(), raw.max()) if raw.size else (0, 0)
    allowed = _RANGES.get(name, (-np.inf, np.inf))
    if not allowed[0] <= low <= high <= allowed[1]:
        bad = usable & ~((raw >= allowed[0]) & (raw <= allowed[1]))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise fail(path, f"variable {name!r}: obs {i} is {raw[i]}, outside {allowed[0]:g}..{allowed[1]:g}")
    if raw.size and low == high:  # False with NaN
        return func(raw[:1]).reshape(())
    return func(pick(raw))


def _picker(keep: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``pick(column)`` = the kept records of a column, in one scratch buffer that the next pick overwrites
    (every transform makes a new array), so 1e6-record files need no fresh temporary per column."""
    if keep.all():
        return lambda column: column
    scratch = np.empty(int(keep.sum()) * 8, np.uint8)  # room for any numeric type up to 8 bytes
    return lambda column: np.compress(
        keep, column, out=scratch[: scratch.size // 8 * column.itemsize].view(column.dtype)
    )


#: Flag (0 usable, 1 provider qcflag, 3 obs_flag 0) -> ``flag_reason``.
REASONS = np.array(["", "provider qcflag", "", "obs_flag 0 (local influence)"])


def read_obspack_file(
    path: Path, *, keep_rejected: bool = False, category: str | dict | None = None, chunks: int | None = None
) -> dict:
    """Columns of one ObsPack file (see :func:`read_obspack`) as a dict of 1-D arrays plus ``attrs``.

    The record selection (missing values, ``qcflag``, ``obs_flag``) is read at once; with ``chunks``
    the per-record columns are dask arrays of ``chunks`` records read when computed.
    """
    nc = _open(path)
    with nc, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # netCDF4: char missing_value "NA" cannot be cast
        if "obs" not in nc.dimensions:
            raise fail(path, f"no 'obs' dimension (found {list(nc.dimensions)}); not an ObsPack file")
        species = _species(path, nc)
        units_out = SPECIES[species][0]
        needed = {name: _variable(path, nc, name) for name in _NEEDED}
        optional = {name: _variable(path, nc, name) for name in _OPTIONAL if name in nc.variables}
        unc_name = next((name for name in ("value_unc", "value_std_dev") if name in optional), None)
        time_units = str(getattr(needed["time"], "units", ""))
        sources = {  # column -> (file variable, numpy transform of one file's column or of a chunk of it)
            "value": ("value", _floats_of(needed["value"], _factor(path, needed["value"], None, units_out))),
            "time": ("time", functools.partial(_times, fills=_fills(needed["time"]), path=path, units=time_units)),
            **{name: (name, _floats_of(nc.variables[name])) for name in _PLACE[:3]},
        }
        if "intake_height" in optional:
            sources["intake_height"] = ("intake_height", _floats_of(optional["intake_height"], as_stored=True))
        if "obspack_num" in optional:
            sources["obspack_num"] = ("obspack_num", functools.partial(np.array, dtype=optional["obspack_num"].dtype))
        if unc_name:
            unc_units = getattr(optional[unc_name], "units", needed["value"].units)
            factor = _factor(path, optional[unc_name], unc_units, units_out)
            sources["value_unc"] = (unc_name, _floats_of(optional[unc_name], factor, as_stored=True))
        n = len(nc.dimensions["obs"])
        raw = needed["value"][:]
        missing = _missing(raw, sources["value"][1].keywords["fills"])
        rejected = _rejected_by_qcflag(nc, n)
        obs_flag = optional.get("obs_flag")
        local = np.zeros(n, bool)
        if obs_flag is not None and 0 not in _fills(obs_flag):  # 0 as the fill value would mean "missing"
            local = obs_flag[:] == 0
        for name, column in (("qcflag", rejected), ("obs_flag", local)):
            _check_length(path, name, column, n)
        usable = ~missing
        _check_plausible(path, raw, usable, sources["value"][1], species)
        keep = usable & (keep_rejected | ~(rejected | local))
        attrs = {name: nc.getncattr(name) for name in nc.ncattrs()}
        if not chunks:  # one column at a time, each file array freed before the next is read: little memory in flight
            pick = _picker(keep)
            columns = {"value": sources["value"][1](pick(raw))}
            for name, (var, func) in sources.items():
                if name != "value":
                    raw = _check_length(path, name, nc.variables[var][:], n)  # the last column read is freed first
                    if name == "time":
                        _check_present(path, name, raw, func.keywords["fills"])  # in every record, kept or not
                    place = name in _PLACE
                    columns[name] = _place(path, name, raw, usable, pick, func) if place else func(pick(raw))
    if chunks:
        columns = _lazy_columns(path, sources, keep, chunks)
    flag = np.zeros(int(keep.sum()), np.int8)
    if keep_rejected:
        flag = np.where(rejected, 1, np.where(local, 3, 0)).astype(np.int8)[keep]
    unc = columns.get("value_unc", np.float64(np.nan))
    site = str(attrs.get("site_code", path.name.split("_")[1] if path.name.count("_") else "?")).upper()
    project = str(attrs.get("dataset_project", "surface-")).split("-")[0].lower()
    return {
        "value": columns["value"],
        "uncertainty": np.fmax(unc, np.float64(UNCERTAINTY_FLOOR[species])),  # float64; NaN (none given) -> the floor
        "value_unc": unc,
        "time": columns["time"],
        "latitude": columns["latitude"],
        "longitude": columns["longitude"],
        "altitude": columns["altitude"],
        "intake_height": columns.get("intake_height", np.float64(np.nan)),
        "site": site,  # scalars broadcast in read_obspack
        "platform": PROJECT_PLATFORM.get(project, "surface"),
        "category": site_category(site, project, category),
        "flag": flag,
        "flag_reason": REASONS[flag] if flag.any() else "",  # 1e6 long strings only when something is flagged
        "obspack_num": columns.get("obspack_num", np.flatnonzero(keep) + 1),
        "scale": str(attrs.get("dataset_calibration_scale", "not stated")),
        "lab": str(attrs.get("lab_1_abbr", "not stated")),
        "dataset": str(attrs.get("dataset_name", path.stem)),
        "units": units_out,
        "size": flag.size,
        "counts": {
            "missing": int(missing.sum()),
            "rejected": int((rejected & ~missing).sum()),
            "local": int((local & ~missing & ~rejected).sum()),
        },
        "attrs": attrs,
        "species": species,
    }


@reader("obspack", _is_obspack)
def read_obspack(
    path: Path | str,
    *,
    keep_rejected: bool = False,
    category: str | dict[str, str] | None = None,
    pattern: str = "*.nc",
    chunks: int | None = None,
) -> xr.Dataset:
    """Read one ObsPack netCDF file, every ``pattern`` file of a directory, or a glob, into one Dataset.

    Parameters
    ----------
    path : file, directory or glob pattern (e.g. ``"obspack/data/nc/co2_*_tower-insitu_*.nc"``)
    keep_rejected : bool
        Keep provider-rejected records (``qcflag`` first character not ``.``: ``flag`` 1) and
        ``obs_flag`` 0 records (``flag`` 3) with the reason in ``flag_reason``. By default they are
        left out and counted in ``attrs["n_rejected"]`` / ``attrs["n_obs_flag_0"]``.
    category : str or dict, optional
        Mismatch category (one word, or site -> word); default by site and project
        (:func:`observations.sites.site_category`).
    chunks : int, optional
        Read lazily: the per-record variables are dask arrays of at most ``chunks`` records of one
        file (a multiple of the files' storage chunk, e.g. 2**18, reads fastest), read, converted and
        selected when computed, so a collection larger than memory can be opened. Which records are
        kept is decided at once (``value``, ``qcflag`` and ``obs_flag`` are read), and validation
        reduces the checked variables in one dask pass without keeping them.

    Returns
    -------
    Observation Dataset (obs,)
        ``value``/``uncertainty`` in ppm (CO2) or ppb (CH4); uncertainty = ``value_unc`` (or
        ``value_std_dev``) floored at :data:`UNCERTAINTY_FLOOR` (the floor alone where none is
        given); coords ``intake_height``, ``scale``, ``obspack_num`` and ``file_index`` into the
        per-file variables ``dataset`` and ``lab`` (dim ``file``): ``obspack_id`` =
        ``attrs["obspack_name"] ~ dataset[file_index] ~ obspack_num``; ``value_unc`` kept.
        ``value_unc``, ``intake_height`` and ``obspack_num`` keep the file's types (float32, int32
        in ObsPack); a column that is one value in every record of the read (a fixed site's
        position, the platform, the calibration scale) is a read-only broadcast view of it.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(pattern))
    elif not path.exists() and glob.has_magic(str(path)):
        files = sorted(Path(name) for name in glob.glob(str(path)))
    else:
        files = [path]
    if not files:
        raise fail(path, f"no files matching {pattern if path.is_dir() else str(path)!r}")
    parts = [
        read_obspack_file(f, keep_rejected=keep_rejected, category=category, chunks=chunks)
        | {"file_index": np.int32(i)}
        for i, f in enumerate(files)
    ]
    units = {p["units"] for p in parts}
    if len(units) > 1:
        raise fail(path, f"the collection mixes species/units {sorted(units)}; read one species at a time")
    sizes = [p["size"] for p in parts]

    def stack(name: str) -> np.ndarray:
        """Column ``name`` of every file end to end (a file's scalar broadcast to its records).

        No copy for one file's column, nor for a scalar every file shares (platform, scale, ...):
        a read-only view of the one value, not 1e6 strings."""
        values = [p[name] for p in parts]
        if len(parts) == 1 and np.ndim(values[0]):
            return values[0]
        if all(np.ndim(v) == 0 for v in values) and len({str(v) for v in values}) == 1:
            return np.broadcast_to(values[0], (sum(sizes),))
        return np.concatenate([np.broadcast_to(v, (size,)) for v, size in zip(values, sizes, strict=True)])

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
        | {"file_index": stack("file_index")},
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
