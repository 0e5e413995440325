"""NOAA GML CO2 text and CSV files: global and Mauna Loa means, growth rates, station monthly files.

Layouts read (examples in ../shared/data/noaa_co2_global and ../shared/data/station_co2):

* **product CSVs** (``co2_mm_gl.csv``, ``co2_mm_mlo.csv``, ``co2_annmean_*.csv``, ``co2_gr_*.csv``,
  header-corrected or verbatim with ``#`` comments): monthly or annual means in ppm with their
  uncertainty, or annual growth rates in ppm/yr (:func:`read_noaa_csv`);
* **station monthly files** in the ObsPack-derived text layout ``site_code year month day hour minute
  second value value_unc nvalue latitude longitude altitude elevation intake_height instrument qcflag``
  (missing -999.99; a first ``qcflag`` character other than ``.`` means rejected by the provider)
  (:func:`read_noaa_station_monthly`);
* **flask month files** ``site year month value`` and derived ``year,month,value`` CSVs, which carry
  neither coordinates nor uncertainty (:func:`read_noaa_flask_month`).

Global products (site ``GLOBAL``) are whole-globe quantities: category ``"global"``, NaN
latitude/longitude. Growth rates are *not* mole fractions: ``value`` is in ``ppm yr-1``, platform
``"budget"`` and ``attrs["quantity"] = "co2_growth_rate"`` (1 ppm = :data:`observations.units.PGC_PER_PPM`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import xarray as xr

from observations._build import PPM, check_plausible, record_dataset, to_ppm
from observations._text import (
    YEARS,
    Rows,
    column_index,
    fail,
    integers,
    normalise,
    numbers,
    period_times,
    read_text,
    require_unique,
    require_width,
    split_rows,
    strings,
    year_month,
)
from observations.readers import name_matches, reader
from observations.schema import GLOBAL_CATEGORY
from observations.sites import SITES, site_category

#: Site code of whole-globe products.
GLOBAL = "GLOBAL"
#: Calibration scale of NOAA GML products released since 2021.
X2019 = "WMO CO2 X2019"
#: Growth-rate units: these values are rates of change, not mole fractions.
GROWTH_UNITS = "ppm yr-1"
#: Plausible global or station CO2 growth rate, ppm/yr.
GROWTH_RANGE = (-5.0, 10.0)
#: Uncertainty given to flask monthly means, which carry none (ppm): the WMO/GAW network
#: compatibility goal for CO2 in the northern hemisphere (GAW Report No. 255, 2020).
FLASK_MONTH_UNCERTAINTY_PPM = 0.1
#: Floor on in-situ ``value_unc`` (ppm), which is 0 when a month has a single value.
INSITU_FLOOR_PPM = 0.1

_VALUE = ("average_ppm", "average", "monthly_average", "mean_ppm", "mean", "value")
_GROWTH = ("annual_increase_ppm_per_yr", "annual_increase", "ann_inc", "growth_rate")
_UNCERTAINTY = ("average_unc_ppm", "unc_mon_mean_ppm", "unc_ppm", "unc_ppm_per_yr", "unc", "uncertainty")


def site_from_file_name(path: Path, site: str | None) -> str:
    """Site code from ``site`` or the NOAA file name (``co2_mm_gl`` -> GLOBAL, ``co2_kum_surface...`` -> KUM)."""
    if site:
        return site.upper()
    stem = normalise(path.stem)
    if re.search(r"(^|_)gl($|_)", stem):
        return GLOBAL
    match = re.search(r"(?:^|_)(?:mm|annmean|gr)_([a-z]{3})($|_)", stem) or re.match(r"co2_([a-z]{3})_", stem)
    if match:
        return match.group(1).upper()
    raise fail(path, "cannot tell the site from the file name; pass site='MLO' (a station code) or site='GLOBAL'")


def site_location(path: Path, site: str, platform: str, category: str | dict | None = None, **location) -> dict:
    """``where`` of :func:`record_dataset` for one site: explicit ``latitude``/``longitude``/``altitude``,
    else :data:`observations.sites.SITES`; GLOBAL has NaN coordinates and category ``"global"``."""
    if site == GLOBAL:
        nan = float("nan")
        return dict(latitude=nan, longitude=nan, altitude=nan, site=site, platform=platform, category=GLOBAL_CATEGORY)
    known = SITES.get(site)
    coords = {}
    for name in ("latitude", "longitude", "altitude"):
        given = location.get(name)
        if given is None and known is None:
            raise fail(
                path, f"site {site!r} has no coordinates in the file or in observations.sites.SITES; pass {name}=..."
            )
        coords[name] = float(given if given is not None else getattr(known, name))
    return dict(**coords, site=site, platform=platform, category=site_category(site, platform, category))


def _times(rows: Rows) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, str]:
    """Period times of a product CSV, the key used to find duplicates, and 'month' or 'year'."""
    names = [normalise(n) for n in rows.header or []]
    if ("month" in names and "-" in rows.fields[0][names.index("month")]) or "date" in names:
        index = names.index("month") if "month" in names else names.index("date")
        year, month = year_month(rows, index, rows.header[index])
    elif "year" in names and "month" in names:
        year = integers(rows, names.index("year"), "year", *YEARS)
        month = integers(rows, names.index("month"), "month", 1, 12)
    elif "year" in names:
        year = integers(rows, names.index("year"), "year", *YEARS)
        return period_times(year), year, "year"
    else:
        raise fail(rows.path, f"no time column: expected 'month' (YYYY-MM), 'year' [+ 'month'], found {rows.header}", 1)
    if ((year < YEARS[0]) | (year > YEARS[1])).any():
        i = int(np.flatnonzero((year < YEARS[0]) | (year > YEARS[1]))[0])
        raise fail(rows.path, f"year {year[i]} outside {YEARS[0]}..{YEARS[1]}", int(rows.lines[i]))
    return period_times(year, month), year * 12 + month - 1, "month"


@reader("noaa_csv", name_matches(r"co2[_-](mm|annmean|gr)[_-]"))
def read_noaa_csv(path: Path | str, *, site: str | None = None, uncertainty_fill: float | None = None) -> xr.Dataset:
    """Read a NOAA GML product CSV: monthly or annual mean CO2 (ppm) or annual growth rate (ppm yr-1).

    Parameters
    ----------
    path : path of e.g. ``co2_mm_gl.csv``, ``co2_mm_mlo.csv``, ``co2_annmean_gl.csv``, ``co2_gr_gl.csv``
        Comma-separated with a header row (``#`` comment lines skipped).
    site : str, optional
        Site code; default from the file name (``_gl`` -> ``GLOBAL``, ``_mlo`` -> ``MLO``).
    uncertainty_fill : float, optional
        Uncertainty (file units) for records whose uncertainty is not estimated (NOAA writes
        -0.99 or 0.00, e.g. Mauna Loa 1958-1975). By default those records are left out and
        counted in ``attrs["n_no_uncertainty"]`` / ``attrs["no_uncertainty_periods"]``.

    Returns
    -------
    Observation Dataset (obs,)
        ``value``/``uncertainty`` in ppm (means) or ppm yr-1 (growth rates, platform ``budget``);
        ``time`` is the middle of the period, ``time_start``/``time_end`` bound it; ``scale`` is
        WMO CO2 X2019; ``attrs["quantity"]`` is ``co2_mole_fraction`` or ``co2_growth_rate`` and
        ``attrs["averaging_period"]`` ``month`` or ``year``.
    """
    path = Path(path)
    rows = split_rows(path, read_text(path), delimiter=",", header=True)
    require_width(rows, len(rows.header), f"one per header name {rows.header}")
    names = [normalise(n) for n in rows.header]
    growth = any(n in names for n in _GROWTH)
    value_col = column_index(rows, _GROWTH if growth else _VALUE, "value")
    unc_col = column_index(rows, _UNCERTAINTY, "uncertainty")
    time, key, period = _times(rows)
    require_unique(rows, key, period)
    value = numbers(rows, value_col, rows.header[value_col], missing=(-99.99, -999.99))
    unc = numbers(rows, unc_col, rows.header[unc_col])
    if growth:
        bad = np.flatnonzero(~((value >= GROWTH_RANGE[0]) & (value <= GROWTH_RANGE[1])))
        if bad.size:
            raise fail(path, f"growth rate {value[bad[0]]!r} ppm/yr outside {GROWTH_RANGE}", int(rows.lines[bad[0]]))
    else:
        check_plausible(path, value, "co2", rows.lines)
    missing = np.isnan(value)
    no_unc = ~missing & ~(unc > 0)
    if uncertainty_fill is not None:
        unc = np.where(no_unc, uncertainty_fill, unc)
        no_unc[:] = False
    keep = ~missing & ~no_unc
    site = site_from_file_name(path, site)
    fmt = "M" if period == "month" else "Y"
    attrs = {
        "quantity": "co2_growth_rate" if growth else "co2_mole_fraction",
        "averaging_period": period,
        "n_missing": int(missing.sum()),
        "n_no_uncertainty": int(no_unc.sum()),
        "no_uncertainty_periods": " ".join(np.datetime_as_string(time[1][no_unc], unit=fmt)),
        "uncertainty_fill": "none" if uncertainty_fill is None else repr(uncertainty_fill),
        "source": "NOAA GML (gml.noaa.gov/ccgg/trends); see ../shared/data/MANIFEST.tsv",
    }
    if growth:
        attrs["comment"] = (
            "annual increase of the CO2 dry-air mole fraction, Jan 1 to Dec 31 (rate, not a mole fraction); "
            "1 ppm = 2.124 PgC (observations.units.PGC_PER_PPM)"
        )
    kept = rows.take(keep)
    return record_dataset(
        path,
        "noaa",
        value=value[keep],
        uncertainty=unc[keep],
        units=GROWTH_UNITS if growth else PPM,
        time=tuple(t[keep] for t in time),
        where=site_location(path, site, "budget" if growth else "surface"),
        coords={"scale": X2019, "source_line": kept.lines},
        attrs=attrs,
    )


#: Columns of the NOAA station monthly layout this reader needs (names as in its last header line).
_STATION_COLUMNS = ("site_code", "year", "month", "value", "value_unc", "latitude", "longitude", "altitude", "qcflag")


def _header_fields(comments: list[str]) -> dict[str, str]:
    """``# key : value`` header lines as a dict (first occurrence wins)."""
    out: dict[str, str] = {}
    for line in comments:
        key, sep, value = line.partition(" : ")
        if sep and key.strip() not in out:
            out[key.strip()] = value.strip()
    return out


@reader("noaa_station", lambda path, head: "MonthlyData" in path.name or b"site_code year month" in head)
def read_noaa_station_monthly(
    path: Path | str,
    *,
    category: str | dict[str, str] | None = None,
    keep_rejected: bool = False,
    floor: float = INSITU_FLOOR_PPM,
) -> xr.Dataset:
    """Read a NOAA station monthly text file (``*_MonthlyData.txt`` layout, see the module docstring).

    Parameters
    ----------
    category : str or dict, optional
        Model-data-mismatch category (one word, or site -> word); default from
        :mod:`observations.sites`.
    keep_rejected : bool
        Keep provider-rejected months (``qcflag`` first character not ``.``) with ``flag`` 1 and
        the qcflag in ``flag_reason``; by default they are left out and counted in
        ``attrs["n_rejected"]``.
    floor : float
        Lower bound (ppm) on the uncertainty: ``value_unc`` is the standard deviation of the
        values in the month and is 0 when there is one value.

    Returns
    -------
    Observation Dataset (obs,), ppm, with ``value_unc`` and ``nvalue`` kept, ``intake_height``
    (m above ground) and ``scale`` (from ``dataset_calibration_scale``) as coords.
    """
    path = Path(path)
    rows = split_rows(path, read_text(path), header_in_comments=True)
    names = [normalise(n) for n in rows.header]
    absent = [c for c in _STATION_COLUMNS if c not in names]
    if absent:
        raise fail(path, f"the last '#' header line lacks columns {absent}; found {rows.header}")
    require_width(rows, len(names), "one per column of the last '#' header line")
    col = {name: names.index(name) for name in names}
    header = _header_fields(rows.comments)
    year = integers(rows, col["year"], "year", *YEARS)
    month = integers(rows, col["month"], "month", 1, 12)
    site = strings(rows, col["site_code"])
    require_unique(rows, np.char.add(site, (year * 12 + month).astype(str)), "site and month")
    units = header.get("value:units", "micromol mol-1")
    value = to_ppm(path, numbers(rows, col["value"], "value", missing=(-999.99, -999.999)), units, "value")
    value_unc = to_ppm(
        path, numbers(rows, col["value_unc"], "value_unc", missing=(-99.99, -999.99, -999.999)), units, "value_unc"
    )
    check_plausible(path, value, "co2", rows.lines)
    qcflag = strings(rows, col["qcflag"])
    rejected = np.char.str_len(qcflag) > 0
    rejected &= np.asarray([q[:1] != "." for q in qcflag])
    missing = np.isnan(value)
    keep = ~missing & (keep_rejected | ~rejected)
    lat = numbers(rows, col["latitude"], "latitude", missing=(-999.999,))
    lon = numbers(rows, col["longitude"], "longitude", missing=(-999.999,))
    alt = numbers(rows, col["altitude"], "altitude", missing=(-999.999,))
    bad = np.flatnonzero(keep & ~((np.abs(lat) <= 90) & (lon >= -180) & (lon <= 360)))
    if bad.size:
        raise fail(path, f"latitude/longitude {lat[bad[0]]}, {lon[bad[0]]} out of range", int(rows.lines[bad[0]]))
    unc = np.fmax(np.where(np.isnan(value_unc), floor, value_unc), floor)
    intake = (
        numbers(rows, col["intake_height"], "intake_height", missing=(-999.999,)) if "intake_height" in col else None
    )
    nvalue = numbers(rows, col["nvalue"], "nvalue", missing=(-9,)) if "nvalue" in col else np.full(len(rows), np.nan)
    kept = rows.take(keep)
    category_of = np.asarray([site_category(s, "surface", category) for s in site[keep]])
    return record_dataset(
        path,
        "noaa",
        value=value[keep],
        uncertainty=unc[keep],
        units=PPM,
        time=tuple(t[keep] for t in period_times(year, month)),
        where=dict(
            latitude=lat[keep],
            longitude=lon[keep],
            altitude=alt[keep],
            site=site[keep],
            platform="surface",
            category=category_of,
        ),
        flag=rejected[keep].astype(np.int8),
        flag_reason=np.where(rejected[keep], np.char.add("provider qcflag ", qcflag[keep]), ""),
        coords={
            "scale": header.get("dataset_calibration_scale", "not stated"),
            "intake_height": intake[keep] if intake is not None else np.nan,
            "source_line": kept.lines,
        },
        data_vars={
            "value_unc": ("obs", value_unc[keep], {"units": PPM, "long_name": "standard deviation in the month"}),
            "nvalue": ("obs", nvalue[keep], {"long_name": "number of values in the monthly mean"}),
        },
        attrs={
            "quantity": "co2_mole_fraction",
            "averaging_period": "month",
            "n_missing": int(missing.sum()),
            "n_rejected": int((rejected & ~missing).sum()),
            "rejected_kept": int(keep_rejected),
            "uncertainty_floor_ppm": floor,
            "source": header.get("dataset_name", "NOAA GML station monthly file"),
        },
    )


@reader("noaa_flask_month", name_matches(r"flask.*month"))
def read_noaa_flask_month(
    path: Path | str,
    *,
    site: str | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    altitude: float | None = None,
    category: str | None = None,
    uncertainty: float = FLASK_MONTH_UNCERTAINTY_PPM,
    scale: str = "not stated (NOAA files created after 2021 are on WMO CO2 X2019)",
) -> xr.Dataset:
    """Read a NOAA flask monthly file (``site year month value``) or a derived ``year,month,value`` CSV.

    These files carry neither coordinates nor uncertainty: coordinates come from the arguments or
    :data:`observations.sites.SITES`, and every month gets ``uncertainty`` (ppm, default
    :data:`FLASK_MONTH_UNCERTAINTY_PPM`, recorded in ``attrs["uncertainty_source"]``); the
    model-data mismatch of :mod:`observations.errors` is added on top later.
    """
    path = Path(path)
    text = read_text(path)
    delimiter = "," if "," in text.split("\n", 1)[0] or path.suffix.lower() == ".csv" else None
    header = delimiter == "," and not text.lstrip()[:1].isdigit()
    rows = split_rows(path, text, delimiter=delimiter, header=header)
    width = len(rows.fields[0])
    if width not in (3, 4):
        raise fail(path, f"expected 'site year month value' or 'year,month,value', found {width} fields", rows.lines[0])
    require_width(rows, width, "site year month value" if width == 4 else "year,month,value")
    offset = width - 3
    if offset:
        codes = np.unique(strings(rows, 0))
        if codes.size != 1:
            raise fail(path, f"expected one site per file, found {list(codes)}", int(rows.lines[0]))
        site = site or str(codes[0])
    site = site_from_file_name(path, site)
    year = integers(rows, offset, "year", *YEARS)
    month = integers(rows, offset + 1, "month", 1, 12)
    require_unique(rows, year * 12 + month, "month")
    value = numbers(rows, offset + 2, "value", missing=(-999.99, -99.99), na=("NA", "NaN"))
    check_plausible(path, value, "co2", rows.lines)
    keep = ~np.isnan(value)
    location = {"latitude": latitude, "longitude": longitude, "altitude": altitude}
    return record_dataset(
        path,
        "noaa",
        value=value[keep],
        uncertainty=np.full(int(keep.sum()), float(uncertainty)),
        units=PPM,
        time=tuple(t[keep] for t in period_times(year, month)),
        where=site_location(path, site, "surface", category, **location),
        coords={"scale": scale, "source_line": rows.lines[keep]},
        attrs={
            "quantity": "co2_mole_fraction",
            "averaging_period": "month",
            "n_missing": int((~keep).sum()),
            "uncertainty_source": f"assumed {uncertainty} ppm (the file has none; WMO/GAW compatibility goal)",
        },
    )
