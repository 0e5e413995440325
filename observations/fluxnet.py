"""FLUXNET2015 monthly/daily CSV (``FLX_<SITE>_FLUXNET2015_*_MM_*.csv`` / ``_DD_``) with the site list.

Columns used (FLUXNET2015 data product documentation, fluxnet.org/data/fluxnet2015-dataset):
``TIMESTAMP`` (YYYYMM monthly, YYYYMMDD daily), ``NEE_VUT_REF`` (gC m-2 d-1, positive = to the
atmosphere, the inversion's sign), ``NEE_VUT_REF_QC`` (fraction of measured or good-quality
gap-filled data), ``NEE_VUT_REF_RANDUNC`` (random uncertainty) and ``NEE_VUT_25``/``NEE_VUT_75``
(the u*-threshold ensemble); ``-9999`` = missing. Site coordinates and IGBP class come from the site
list (``FluxNET_sites.csv``: ``SITE_ID, ..., LOCATION_LAT, LOCATION_LONG, LOCATION_ELEV, IGBP``).

Uncertainty = sqrt(RANDUNC**2 + ((NEE_VUT_75 - NEE_VUT_25) / 1.349)**2), the random error and the
u*-threshold spread (an interquartile range over 1.349 is a Gaussian sigma), each taken as 0 when
missing, floored at ``floor``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import xarray as xr

from observations._build import record_dataset
from observations._text import (
    YEARS,
    column_index,
    fail,
    numbers,
    period_times,
    read_text,
    require_unique,
    require_width,
    split_rows,
    strings,
)
from observations.readers import name_matches, reader

UNITS = "gC m-2 d-1"
#: Largest plausible monthly or daily site flux, gC m-2 d-1 (peak crop uptake is ~-20).
PLAUSIBLE_FLUX = 50.0
#: Interquartile range of a Gaussian in sigmas.
IQR_PER_SIGMA = 1.349


def read_site_list(path: Path) -> dict[str, tuple[float, float, float, str]]:
    """FLUXNET site list -> {SITE_ID: (latitude, longitude, elevation m (NaN if blank), IGBP)}."""
    rows = split_rows(path, read_text(path), delimiter=",", header=True)
    require_width(rows, len(rows.header), f"one per header name ({len(rows.header)})")
    col = {name: column_index(rows, (name,), name) for name in ("site_id", "location_lat", "location_long", "igbp")}
    lat = numbers(rows, col["location_lat"], "LOCATION_LAT", na=("",))
    lon = numbers(rows, col["location_long"], "LOCATION_LONG", na=("",))
    elev_col = column_index(rows, ("location_elev",), "LOCATION_ELEV")
    elev = numbers(rows, elev_col, "LOCATION_ELEV", na=("",))
    sites, igbp = strings(rows, col["site_id"]), strings(rows, col["igbp"])
    return {s: (a, b, c, g) for s, a, b, c, g in zip(sites, lat, lon, elev, igbp, strict=True)}


def _site_list_path(path: Path) -> Path:
    for folder in (path.parent, path.parent.parent):
        candidate = folder / "FluxNET_sites.csv"
        if candidate.exists():
            return candidate
    raise fail(path, "no FluxNET_sites.csv next to the file or one folder up; pass site_list=PATH")


@reader("fluxnet", name_matches(r"^FLX_.*FLUXNET2015.*_(MM|DD)_"))
def read_fluxnet(
    path: Path | str,
    *,
    site_list: Path | str | None = None,
    variable: str = "NEE_VUT_REF",
    min_qc: float = 0.5,
    keep_rejected: bool = False,
    floor: float = 0.05,
) -> xr.Dataset:
    """Read a FLUXNET2015 monthly or daily file as flux-tower observations.

    Parameters
    ----------
    site_list : path, optional
        ``FluxNET_sites.csv``; default next to the file or one folder up.
    variable : str
        Flux column (default ``NEE_VUT_REF``); its ``_QC`` and ``_RANDUNC`` columns are used.
    min_qc : float
        Values with ``<variable>_QC`` below this fraction of good data are rejected (left out and
        counted, or kept with ``flag`` 1 when ``keep_rejected``).
    floor : float
        Lower bound of the uncertainty, gC m-2 d-1.

    Returns
    -------
    Observation Dataset (obs,) in gC m-2 d-1 (positive = to the atmosphere), platform
    ``flux_tower``, category ``flux_tower``, coord ``igbp``; ``time`` mid-period.
    """
    path = Path(path)
    match = re.match(r"FLX_([A-Za-z]{2}-[A-Za-z0-9]{3})_", path.name)
    if not match:
        raise fail(path, "file name must start FLX_<CC-SSS>_ (the FLUXNET site id)")
    site = match.group(1)
    sites = read_site_list(Path(site_list) if site_list else _site_list_path(path))
    if site not in sites:
        raise fail(path, f"site {site} is not in the site list; add it or pass site_list=")
    lat, lon, elev, igbp = sites[site]
    if not (abs(lat) <= 90 and -180 <= lon <= 360):
        raise fail(path, f"site list gives {site} at ({lat}, {lon}): outside -90..90/-180..360")
    rows = split_rows(path, read_text(path), delimiter=",", header=True)
    require_width(rows, len(rows.header), f"one per header name ({len(rows.header)})")
    stamp = strings(rows, column_index(rows, ("timestamp",), "TIMESTAMP"))
    monthly = len(stamp[0]) == 6
    good = np.char.isdigit(stamp) & (np.char.str_len(stamp) == (6 if monthly else 8))
    if not good.all():
        i = int(np.flatnonzero(~good)[0])
        raise fail(path, f"TIMESTAMP {stamp[i]!r}: expected YYYYMM or YYYYMMDD like the first row", int(rows.lines[i]))
    year, month = stamp.astype(str).astype("U4").astype(int), np.array([int(s[4:6]) for s in stamp])
    bad = np.flatnonzero((month < 1) | (month > 12) | (year < YEARS[0]) | (year > YEARS[1]))
    if bad.size:
        raise fail(path, f"TIMESTAMP {stamp[bad[0]]!r} is not a valid month", int(rows.lines[bad[0]]))
    require_unique(rows, stamp, "TIMESTAMP")
    missing_codes = (-9999.0,)
    value = numbers(rows, column_index(rows, (variable.lower(),), variable), variable, missing=missing_codes)
    bad = np.flatnonzero(np.abs(value) > PLAUSIBLE_FLUX)
    if bad.size:
        raise fail(
            path,
            f"{variable} {value[bad[0]]:g} {UNITS} is not a plausible site flux (|value| <= {PLAUSIBLE_FLUX:g}); "
            "check the column and its units",
            int(rows.lines[bad[0]]),
        )
    qc = numbers(
        rows, column_index(rows, (f"{variable}_qc".lower(),), f"{variable}_QC"), f"{variable}_QC", missing=missing_codes
    )
    names = [n.lower() for n in rows.header]

    def optional(name: str) -> np.ndarray:
        return (
            numbers(rows, names.index(name.lower()), name, missing=missing_codes)
            if name.lower() in names
            else np.full(len(rows), np.nan)
        )

    random = optional(f"{variable}_RANDUNC")
    spread = (
        (optional("NEE_VUT_75") - optional("NEE_VUT_25")) / IQR_PER_SIGMA if variable.startswith("NEE_VUT") else np.nan
    )
    sigma = np.fmax(np.sqrt(np.nan_to_num(random) ** 2 + np.nan_to_num(np.abs(spread)) ** 2), floor)
    if monthly:
        time = period_times(year, month)
    else:
        day = np.array([int(s[6:8]) for s in stamp])
        start = np.array(
            [f"{y:04d}-{m:02d}-{d:02d}" for y, m, d in zip(year, month, day, strict=True)], "datetime64[D]"
        )
        start = start.astype("datetime64[ns]")
        time = (start + np.timedelta64(12, "h"), start, start + np.timedelta64(1, "D"))
    missing = np.isnan(value)
    rejected = ~missing & ~(qc >= min_qc)
    keep = ~missing & (keep_rejected | ~rejected)
    return record_dataset(
        path,
        "fluxnet",
        value=value[keep],
        uncertainty=sigma[keep],
        units=UNITS,
        time=tuple(t[keep] for t in time),
        where=dict(latitude=lat, longitude=lon, altitude=elev, site=site, platform="flux_tower", category="flux_tower"),
        flag=rejected[keep].astype(np.int8),
        flag_reason=np.where(rejected[keep], f"{variable}_QC < {min_qc:g}", ""),
        coords={"igbp": igbp, "source_line": rows.lines[keep]},
        data_vars={f"{variable}_QC": ("obs", qc[keep], {"long_name": "fraction of good-quality data"})},
        attrs={
            "quantity": variable,
            "averaging_period": "month" if monthly else "day",
            "sign_convention": "NEE positive = flux to the atmosphere (net release); negative = uptake",
            "n_missing": int(missing.sum()),
            "n_rejected": int(rejected.sum()),
            "min_qc": min_qc,
            "uncertainty_source": "sqrt(RANDUNC^2 + ((NEE_VUT_75 - NEE_VUT_25)/1.349)^2), floored",
            "source": "FLUXNET2015 (Pastorello et al. 2020, Sci. Data 7, 225), CC-BY-4.0",
        },
    )
