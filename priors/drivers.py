"""Climate drivers of the land flux: readers for the files in ``../shared/data`` -> xarray with units.

Every monthly reader returns a :class:`xarray.DataArray` over ``time`` (month starts,
datetime64[ns]) with CF attributes (``units``, ``long_name``, ``source_file``). Temperature
anomalies are in K (a temperature difference), the ENSO indices in K, CO2 in ppm. Missing
values in the files (``****``, ``-9999``, ``NaN``) become NaN on a gap-free month axis, with
leading and trailing gaps trimmed; :func:`load_drivers` raises :class:`DriverError` naming the
driver and month if a gap falls inside the requested period.

:func:`load_drivers` assembles the named drivers into one Dataset on a common monthly axis, the
input of :class:`priors.emulator.LandFluxEmulator`.

Licences (see ``../shared/data/MANIFEST.tsv``): GISTEMP, ONI/RONI, NOAA CO2 are public domain,
HadCRUT5 is OGL v3, UAH is free with citation. Berkeley Earth is CC BY-NC 4.0: it may be read
at run time but must never be copied into this package or into a file it ships.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "DRIVERS",
    "DriverError",
    "default_data_dir",
    "load_drivers",
    "read_berkeley_land",
    "read_fluxnet_monthly",
    "read_gistemp_global",
    "read_gistemp_hemisphere",
    "read_gistemp_zonal_annual",
    "read_gistemp_zonal_monthly",
    "read_hadcrut5_annual",
    "read_hadcrut5_monthly",
    "read_noaa_co2",
    "read_oni",
    "read_uah_tropical_land",
]

CLIMATE = Path("climate_drivers")
ZONAL_ANNUAL_FILE = "ZonAnn.Ts+dSST.csv"

#: Centre month of each CPC three-month season ("DJF" is centred on January).
ONI_SEASON_CENTRE = {
    s: i + 1 for i, s in enumerate(["DJF", "JFM", "FMA", "MAM", "AMJ", "MJJ", "JJA", "JAS", "ASO", "SON", "OND", "NDJ"])
}


class DriverError(ValueError):
    """A driver file is missing, malformed, or does not cover the months asked for."""


def default_data_dir() -> Path:
    """``$ASSIM_SHARED_DATA`` or ``../shared/data`` next to the repository."""
    return Path(os.environ.get("ASSIM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _monthly(
    values: np.ndarray, years: np.ndarray, months: np.ndarray, path: Path, name: str, attrs: dict
) -> xr.DataArray:
    """Monthly DataArray on a gap-free month axis from parallel arrays; leading/trailing NaN trimmed."""
    time = pd.to_datetime({"year": years, "month": months, "day": 1})
    series = pd.Series(np.asarray(values, dtype=float), index=time).sort_index()
    if series.index.has_duplicates:
        raise DriverError(f"{path}: {name} has duplicate months {list(series.index[series.index.duplicated()][:3])}")
    valid = series.dropna()
    if valid.empty:
        raise DriverError(f"{path}: no valid values of {name}")
    series = series.reindex(pd.date_range(valid.index[0], valid.index[-1], freq="MS"))
    return xr.DataArray(
        series.to_numpy(),
        dims="time",
        coords={"time": series.index.to_numpy("datetime64[ns]")},
        name=name,
        attrs=attrs | {"source_file": path.name},
    )


def _check_exists(path: Path) -> Path:
    if not path.exists():
        raise DriverError(f"driver file {path} not found; pass data_dir= pointing at ../shared/data")
    return path


def _anomaly_attrs(long_name: str, base: str) -> dict:
    return {"units": "K", "long_name": f"{long_name} anomaly relative to {base}"}


def read_gistemp_global(data_dir: Path | None = None) -> xr.DataArray:
    """GISTEMP v4 global land-ocean temperature anomaly, monthly.

    Returns
    -------
    DataArray (time), K
        Anomaly relative to 1951-1980 (the file's 0.01 degC values divided by 100).
    """
    path = _check_exists(Path(data_dir or default_data_dir()) / CLIMATE / "GISTEMPv4_GLB.Ts+dSST.txt")
    rows = []
    for line in path.read_text().splitlines():
        tokens = line.split()
        if len(tokens) == 20 and tokens[0].isdigit() and tokens[0] == tokens[-1]:
            rows.append([int(tokens[0])] + [np.nan if "*" in t else float(t) / 100 for t in tokens[1:13]])
    if not rows:
        raise DriverError(f"{path}: no 'Year Jan ... Dec ... Year' data rows found")
    table = np.array(rows)
    years = np.repeat(table[:, 0].astype(int), 12)
    months = np.tile(np.arange(1, 13), len(table))
    attrs = _anomaly_attrs("GISTEMP v4 global land-ocean temperature", "1951-1980")
    return _monthly(table[:, 1:].ravel(), years, months, path, "gistemp_global", attrs)


def read_gistemp_hemisphere(hemisphere: str, data_dir: Path | None = None) -> xr.DataArray:
    """GISTEMP v4 hemispheric land-ocean temperature anomaly, monthly.

    Parameters
    ----------
    hemisphere : {"NH", "SH"}

    Returns
    -------
    DataArray (time), K
        Anomaly relative to 1951-1980.
    """
    if hemisphere not in ("NH", "SH"):
        raise DriverError(f"hemisphere must be 'NH' or 'SH', got {hemisphere!r}")
    path = _check_exists(
        Path(data_dir or default_data_dir()) / CLIMATE / "gistemp_v4_hemispheric_zonal" / f"{hemisphere}.Ts+dSST.csv"
    )
    table = pd.read_csv(path, skiprows=1, na_values=["***", "****"])
    months = list(table.columns[1:13])
    long = table.melt(id_vars="Year", value_vars=months, var_name="month", value_name="value")
    long["month"] = long["month"].map({m: i + 1 for i, m in enumerate(months)})
    attrs = _anomaly_attrs(f"GISTEMP v4 {hemisphere} land-ocean temperature", "1951-1980")
    return _monthly(
        long["value"].to_numpy(),
        long["Year"].to_numpy(),
        long["month"].to_numpy(),
        path,
        f"gistemp_{hemisphere.lower()}",
        attrs,
    )


def _zonal_annual_path(data_dir: Path | None) -> Path:
    return Path(data_dir or default_data_dir()) / CLIMATE / "gistemp_v4_hemispheric_zonal" / ZONAL_ANNUAL_FILE


def read_gistemp_zonal_annual(data_dir: Path | None = None) -> xr.DataArray:
    """GISTEMP v4 zonal annual-mean land-ocean temperature anomalies.

    Returns
    -------
    DataArray (year, zone), K
        Zones as in the file header (``Glob``, ``24S-24N``, ``EQU-24N``, ...), relative to 1951-1980.
    """
    path = _check_exists(_zonal_annual_path(data_dir))
    table = pd.read_csv(path, na_values=["***", "****"])
    if "Year" not in table:
        raise DriverError(f"{path}: no 'Year' column (found {list(table.columns)}); expected GISTEMP's ZonAnn layout")
    table = table.set_index("Year").astype(float)
    return xr.DataArray(
        table.to_numpy(),
        dims=("year", "zone"),
        coords={"year": table.index.to_numpy(), "zone": list(table.columns)},
        name="gistemp_zonal",
        attrs=_anomaly_attrs("GISTEMP v4 zonal land-ocean temperature", "1951-1980") | {"source_file": path.name},
    )


def read_gistemp_zonal_monthly(zone: str = "24S-24N", data_dir: Path | None = None) -> xr.DataArray:
    """A GISTEMP v4 zonal annual mean as a monthly driver: each month carries its calendar year's mean.

    The zonal file has annual means only. A step per calendar year is the one conversion that
    adds no invented within-year shape and averages back exactly to the file's annual values;
    it covers every month of every year in the file. The price: a month sees the months after
    it within its year (up to 11 months ahead) - acceptable for a retrospective prior, not for
    forecasting inside an unfinished year (the file only has a year once it is complete).

    Parameters
    ----------
    zone : str
        A column of ``ZonAnn.Ts+dSST.csv`` (``"24S-24N"`` = the tropical band, ``"Glob"``, ...).

    Returns
    -------
    DataArray (time), K
        Land-ocean anomaly relative to 1951-1980, month starts January of the first year to
        December of the last year in the file.
    """
    annual = read_gistemp_zonal_annual(data_dir)
    path, zones = _zonal_annual_path(data_dir), annual["zone"].values.tolist()
    if zone not in zones:
        raise DriverError(f"{path}: no zone column {zone!r}; choose one of {zones}")
    years = np.repeat(annual["year"].values, 12)
    attrs = _anomaly_attrs(f"GISTEMP v4 {zone} land-ocean temperature", "1951-1980") | {
        "monthly_from_annual": "step per calendar year: every month carries its year's annual mean, so it "
        "includes months after it within that year (up to 11 months ahead); averages back to the annual values"
    }
    values = np.repeat(annual.sel(zone=zone).values, 12)
    months = np.tile(np.arange(1, 13), annual.sizes["year"])
    return _monthly(values, years, months, path, f"gistemp_zonal_{zone}", attrs)


def read_hadcrut5_annual(data_dir: Path | None = None) -> xr.DataArray:
    """HadCRUT5.1 global annual temperature anomaly (the last year may be partial).

    Returns
    -------
    DataArray (year), K
        Anomaly relative to 1961-1990.
    """
    path = _check_exists(
        Path(data_dir or default_data_dir()) / CLIMATE / "HadCRUT.5.1.0.0.analysis.summary_series.global.annual.csv"
    )
    table = pd.read_csv(path)
    return xr.DataArray(
        table["Anomaly (deg C)"].to_numpy(float),
        dims="year",
        coords={"year": table["Time"].to_numpy(int)},
        name="hadcrut5_global",
        attrs=_anomaly_attrs("HadCRUT5.1 global temperature", "1961-1990") | {"source_file": path.name},
    )


def read_hadcrut5_monthly(region: str = "gl", data_dir: Path | None = None) -> xr.DataArray:
    """HadCRUT5.0.1 monthly temperature anomaly in the CRU text layout (ends 2020-12).

    Parameters
    ----------
    region : {"gl", "nh", "sh"}

    Returns
    -------
    DataArray (time), K
        Anomaly relative to 1961-1990.
    """
    path = _check_exists(
        Path(data_dir or default_data_dir()) / CLIMATE / "hadcrut5.0.1_monthly_cru_format" / f"HadCRUT5_{region}.txt"
    )
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    anomalies = [row for row in lines[0::2] if len(row) == 14]  # year, 12 months, annual; next line = coverage
    if len(anomalies) != len(lines) // 2:
        raise DriverError(f"{path}: expected pairs of lines 'year + 12 months + annual' / 'year + 12 coverages'")
    table = np.array(anomalies, dtype=float)
    years = np.repeat(table[:, 0].astype(int), 12)
    months = np.tile(np.arange(1, 13), len(table))
    attrs = _anomaly_attrs(f"HadCRUT5.0.1 {region.upper()} temperature", "1961-1990")
    return _monthly(table[:, 1:13].ravel(), years, months, path, f"hadcrut5_{region}", attrs)


def read_oni(relative: bool = False, data_dir: Path | None = None) -> xr.DataArray:
    """CPC Oceanic Nino Index (or relative ONI), dated at the centre month of each 3-month season.

    Parameters
    ----------
    relative : bool
        ``True`` reads RONI (Nino3.4 minus the tropical mean), CPC's ENSO index since 2026.

    Returns
    -------
    DataArray (time), K
        3-month running Nino3.4 SST anomaly; "DJF 1950" is dated 1950-01.
    """
    name = "cpc_roni_ersstv6.ascii.txt" if relative else "cpc_oni_ersstv6.ascii.txt"
    path = _check_exists(Path(data_dir or default_data_dir()) / CLIMATE / name)
    table = pd.read_csv(path, sep=r"\s+")
    if list(table.columns) != ["SEAS", "YR", "ANOM"]:
        raise DriverError(f"{path}: expected columns SEAS YR ANOM, found {list(table.columns)}")
    unknown = set(table["SEAS"]) - set(ONI_SEASON_CENTRE)
    if unknown:
        raise DriverError(f"{path}: unknown season codes {sorted(unknown)}")
    index = "RONI" if relative else "ONI"
    attrs = {"units": "K", "long_name": f"CPC {index}: 3-month running Nino3.4 SST anomaly (ERSSTv6)"}
    months = table["SEAS"].map(ONI_SEASON_CENTRE).to_numpy()
    return _monthly(table["ANOM"].to_numpy(float), table["YR"].to_numpy(int), months, path, index.lower(), attrs)


def read_uah_tropical_land(data_dir: Path | None = None) -> xr.DataArray:
    """UAH v6.0 lower-troposphere temperature anomaly over tropical land (20S-20N), monthly.

    Returns
    -------
    DataArray (time), K
        Satellite TLT anomaly relative to 1991-2020 (not 2 m air temperature).
    """
    path = _check_exists(
        Path(data_dir or default_data_dir()) / CLIMATE / "uah_tlt_v6.0" / "uahncdc_lt_6.0_trailer-removed_to2024-09.txt"
    )
    table = pd.read_csv(path, sep=r"\s+", header=None, skiprows=1)
    if table.shape[1] != 29:
        raise DriverError(
            f"{path}: expected 29 whitespace columns (Year Mo Globe Land Ocean ...), found {table.shape[1]}"
        )
    attrs = _anomaly_attrs("UAH v6.0 TLT tropical land (20S-20N)", "1991-2020")
    return _monthly(
        table[13].to_numpy(float), table[0].to_numpy(int), table[1].to_numpy(int), path, "uah_tropical_land", attrs
    )


def read_berkeley_land(data_dir: Path | None = None) -> xr.DataArray:
    """Berkeley Earth global land-only air temperature anomaly, monthly (CC BY-NC 4.0: read, never ship).

    Returns
    -------
    DataArray (time), K
        Anomaly relative to 1951-1980.
    """
    path = _check_exists(
        Path(data_dir or default_data_dir()) / CLIMATE / "berkeley_earth_land" / "Complete_TAVG_complete.txt"
    )
    table = pd.read_csv(path, sep=r"\s+", comment="%", header=None, usecols=[0, 1, 2])
    attrs = _anomaly_attrs("Berkeley Earth global land air temperature", "1951-1980") | {"license": "CC BY-NC 4.0"}
    return _monthly(
        table[2].to_numpy(float), table[0].to_numpy(int), table[1].to_numpy(int), path, "berkeley_land", attrs
    )


def read_noaa_co2(data_dir: Path | None = None) -> xr.DataArray:
    """NOAA GML Mauna Loa monthly CO2, deseasonalised: the CO2-fertilisation driver.

    Returns
    -------
    DataArray (time), ppm
        Dry-air mole fraction, seasonal cycle removed (NOAA's ``deseasonalized`` column).
    """
    path = _check_exists(Path(data_dir or default_data_dir()) / "noaa_co2_global" / "co2_mm_mlo.csv")
    table = pd.read_csv(path)
    if "deseasonalized_ppm" not in table:
        raise DriverError(f"{path}: column 'deseasonalized_ppm' not found (have {list(table.columns)})")
    month = pd.to_datetime(table["month"], format="%Y-%m")
    values = table["deseasonalized_ppm"].where(table["deseasonalized_ppm"] > 0).to_numpy(float)
    attrs = {"units": "ppm", "long_name": "Mauna Loa CO2 dry-air mole fraction, deseasonalised"}
    return _monthly(values, month.dt.year.to_numpy(), month.dt.month.to_numpy(), path, "co2", attrs)


#: FLUXNET2015 SUBSET monthly columns read as site meteorology -> (name, units, long_name).
FLUXNET_MET = {
    "TA_F": ("ta", "degC", "air temperature"),
    "VPD_F": ("vpd", "hPa", "vapour pressure deficit"),
    "P_F": ("precip", "mm d-1", "precipitation"),
    "SW_IN_F": ("sw_in", "W m-2", "incoming shortwave radiation"),
    "SWC_F_MDS_1": ("swc", "%", "soil water content, shallowest layer"),
}


def read_fluxnet_monthly(
    path: str | os.PathLike[str], columns: dict[str, tuple[str, str, str]] | None = None
) -> xr.Dataset:
    """One FLUXNET2015 SUBSET monthly (``*_MM_*.csv``) site file -> Dataset over ``time``.

    Parameters
    ----------
    path : path-like
        ``FLX_<SITE>_FLUXNET2015_SUBSET_MM_<first>-<last>_<v>.csv``.
    columns : dict, optional
        File column -> (variable name, units, long_name); default :data:`FLUXNET_MET`. Columns
        the file lacks are returned as all-NaN (not every site measures soil water).

    Returns
    -------
    Dataset (time)
        Requested variables, ``-9999`` -> NaN; attrs ``site`` and ``source_file``.
    """
    path = _check_exists(Path(path))
    table = pd.read_csv(path, na_values=[-9999, "-9999"])
    if "TIMESTAMP" not in table:
        raise DriverError(f"{path}: no TIMESTAMP column; is this a FLUXNET2015 MM file?")
    time = pd.to_datetime(table["TIMESTAMP"].astype(str), format="%Y%m").to_numpy("datetime64[ns]")
    data = {
        name: (
            "time",
            table[col].to_numpy(float) if col in table else np.full(len(table), np.nan),
            {"units": units, "long_name": long_name, "fluxnet_column": col},
        )
        for col, (name, units, long_name) in (columns or FLUXNET_MET).items()
    }
    site = path.name.split("_")[1]
    return xr.Dataset(data, coords={"time": time}, attrs={"site": site, "source_file": path.name})


#: Named monthly drivers for :func:`load_drivers` -> reader(data_dir).
DRIVERS: dict[str, Callable[[Path | None], xr.DataArray]] = {
    "gistemp_global": read_gistemp_global,
    "gistemp_nh": lambda d: read_gistemp_hemisphere("NH", d),
    "gistemp_sh": lambda d: read_gistemp_hemisphere("SH", d),
    "gistemp_tropics": lambda d: read_gistemp_zonal_monthly("24S-24N", d),
    "hadcrut5_gl": lambda d: read_hadcrut5_monthly("gl", d),
    "oni": lambda d: read_oni(False, d),
    "roni": lambda d: read_oni(True, d),
    "uah_tropical_land": read_uah_tropical_land,
    "berkeley_land": read_berkeley_land,
    "co2": read_noaa_co2,
}


def load_drivers(
    names: Iterable[str],
    start: str | None = None,
    end: str | None = None,
    data_dir: Path | None = None,
) -> xr.Dataset:
    """Read named monthly drivers onto one monthly time axis.

    Parameters
    ----------
    names : iterable of str
        Keys of :data:`DRIVERS`.
    start, end : str, optional
        First and last month (``"1960-01"``); default the span every driver covers.
    data_dir : Path, optional
        ``../shared/data`` by default (:func:`default_data_dir`).

    Returns
    -------
    Dataset (time)
        One variable per driver, each with its units.

    Raises
    ------
    DriverError
        If a name is unknown or a driver does not cover ``start``..``end`` (naming the driver,
        its first and last month).
    """
    names = list(names)
    unknown = sorted(set(names) - set(DRIVERS))
    if unknown:
        raise DriverError(f"unknown driver(s) {unknown}; choose from {sorted(DRIVERS)}")
    series = {name: DRIVERS[name](data_dir) for name in names}
    first = max(s.time.values[0] for s in series.values())
    last = min(s.time.values[-1] for s in series.values())
    start_t = np.datetime64(pd.Timestamp(start or first), "ns")
    end_t = np.datetime64(pd.Timestamp(end or last), "ns")
    for name, s in series.items():
        if s.time.values[0] > start_t or s.time.values[-1] < end_t:
            raise DriverError(
                f"driver {name!r} ({s.attrs['source_file']}) covers {str(s.time.values[0])[:7]}.."
                f"{str(s.time.values[-1])[:7]}, not the requested {str(start_t)[:7]}..{str(end_t)[:7]}; "
                "shorten the period or choose other drivers"
            )
    time = pd.date_range(start_t, end_t, freq="MS").to_numpy("datetime64[ns]")
    drivers = xr.Dataset({name: s.sel(time=time) for name, s in series.items()}, attrs={"drivers": " ".join(names)})
    for name, values in drivers.items():
        gaps = time[~np.isfinite(values.values)]
        if gaps.size:
            raise DriverError(
                f"driver {name!r} ({values.attrs['source_file']}) has missing months {[str(t)[:7] for t in gaps[:5]]} "
                "inside the requested period; choose another period or driver"
            )
    return drivers
