"""Multi-site monthly matrices: one row per month, one column per record (the Southern Ocean file).

Layout (Long et al. 2021, ../shared/data/station_co2/southern_ocean_long2021): whitespace
separated, header ``year month <SITE>_<LAB>_<method> ...``, monthly mean CO2 in ppm, ``NA`` =
missing; a companion ``*_locations.txt`` gives ``record lat lon alt`` for each column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from observations._build import PPM, check_plausible, record_dataset
from observations._text import (
    YEARS,
    fail,
    integers,
    numbers,
    period_times,
    read_text,
    require_unique,
    require_width,
    split_rows,
    strings,
)
from observations.readers import reader
from observations.sites import site_category

#: Uncertainty given to each monthly record, which the file does not carry (ppm): the WMO/GAW
#: compatibility goal. Labs report on their own calibration scales (offsets of ~0.1 ppm), so
#: co-located records of one site are not independent: see ``attrs["comment"]``.
MATRIX_UNCERTAINTY_PPM = 0.1


def default_locations(path: Path) -> Path:
    """``SO_CO2_monthly.txt`` -> ``SO_CO2_locations.txt`` next to it."""
    return path.with_name(path.name.replace("monthly", "locations"))


def read_locations(path: Path) -> dict[str, tuple[float, float, float]]:
    """``record lat lon alt`` table -> {record: (latitude, longitude, altitude)}."""
    rows = split_rows(path, read_text(path), header=True)
    require_width(rows, 4, "record lat lon alt")
    lat, lon = numbers(rows, 1, "lat"), numbers(rows, 2, "lon")
    alt = numbers(rows, 3, "alt")
    bad = np.flatnonzero(~((np.abs(lat) <= 90) & (lon >= -180) & (lon <= 360)))
    if bad.size:
        raise fail(path, f"latitude/longitude {lat[bad[0]]}, {lon[bad[0]]} out of range", int(rows.lines[bad[0]]))
    return {r: (a, b, c) for r, a, b, c in zip(strings(rows, 0), lat, lon, alt, strict=True)}


@reader("station_matrix", lambda path, head: head.lstrip(b"\xef\xbb\xbf").startswith(b"year month "))
def read_station_matrix(
    path: Path | str,
    *,
    locations: Path | str | None = None,
    uncertainty: float = MATRIX_UNCERTAINTY_PPM,
    category: str | dict[str, str] | None = None,
) -> xr.Dataset:
    """Read a multi-site monthly CO2 matrix and its locations table.

    Parameters
    ----------
    locations : path, optional
        ``record lat lon alt`` table; default the ``*_locations.txt`` next to ``path``.
    uncertainty : float
        1-sigma (ppm) given to every record (the file has none).
    category : str or dict, optional
        Mismatch category (one word or site -> word); default from :mod:`observations.sites`.

    Returns
    -------
    Observation Dataset (obs,) in ppm, one observation per non-missing (month, record), with
    coords ``record`` (column name), ``lab`` and ``method``; ``site`` is the record's first part.
    """
    path = Path(path)
    locations = Path(locations) if locations is not None else default_locations(path)
    rows = split_rows(path, read_text(path), header=True)
    header = rows.header
    if header[:2] != ["year", "month"] or len(header) < 3:
        raise fail(path, f"header must start 'year month' and name at least one record, found {header[:4]}", 1)
    require_width(rows, len(header), "year, month and one value per record")
    records = header[2:]
    where = read_locations(locations)
    unknown = [r for r in records if r not in where]
    if unknown:
        raise fail(locations, f"no location for records {unknown} of {path.name}; add 'record lat lon alt' lines")
    year = integers(rows, 0, "year", *YEARS)
    month = integers(rows, 1, "month", 1, 12)
    require_unique(rows, year * 12 + month, "month")
    values = np.column_stack([numbers(rows, 2 + j, r, na=("NA", "NaN")) for j, r in enumerate(records)])
    check_plausible(path, values.ravel(), "co2", np.repeat(rows.lines, len(records)))
    t, r = np.nonzero(~np.isnan(values))
    parts = [record.split("_") for record in records]
    site = np.asarray([p[0] for p in parts])[r]
    lab = np.asarray(["_".join(p[1:-1]) for p in parts])[r]
    method = np.asarray([p[-1] for p in parts])[r]
    coords = np.asarray([where[record] for record in records])[r]
    times = period_times(year, month)
    return record_dataset(
        path,
        "matrix",
        value=values[t, r],
        uncertainty=np.full(t.size, float(uncertainty)),
        units=PPM,
        time=tuple(x[t] for x in times),
        where=dict(
            latitude=coords[:, 0],
            longitude=coords[:, 1],
            altitude=coords[:, 2],
            site=site,
            platform="surface",
            category=np.asarray([site_category(s, m, category) for s, m in zip(site, method, strict=True)]),
        ),
        coords={
            "record": np.asarray(records)[r],
            "lab": lab,
            "method": method,
            "scale": "as delivered by each lab (mixed)",
            "source_line": rows.lines[t],
        },
        attrs={
            "quantity": "co2_mole_fraction",
            "averaging_period": "month",
            "locations_file": locations.name,
            "n_missing": int(np.isnan(values).sum()),
            "uncertainty_source": f"assumed {uncertainty} ppm per record (the file has none)",
            "comment": "records of one site by different labs share the site's air and differ by calibration "
            "offsets; treat them as correlated or keep one per site",
        },
    )
