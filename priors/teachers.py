"""Teachers of the emulator: process-model (DGVM) land fluxes and flux-tower NEE -> xarray.

Sign and units. Every flux returned here is **positive to the atmosphere** (a source;
negative = uptake), the project's internal convention: monthly DGVM fluxes in PgC yr-1 (mean
rate over the month), tower NEE in gC m-2 d-1. The Global Carbon Budget table of annual DGVM
sinks is the one exception and says so in its name: ``land_sink`` is positive uptake, as
published.

Sources (see ``../shared/data/MANIFEST.tsv``): TRENDY-v9 DGVMs of the Global Carbon Budget
2020 (Friedlingstein et al. 2020, ESSD 12, 3269), aggregated monthly by Z. Chen / S. Matson
(GtC per month, NEGATIVE = uptake; simulation most likely S3, i.e. with land-use change); the
Global Carbon Budget 2025 (Friedlingstein et al. 2025, ESSD) annual land sink S_LAND of 22
DGVMs (S2, no land-use change); FLUXNET2015 SUBSET monthly files (Pastorello et al. 2020,
Sci. Data 7, 225; CC-BY-4.0).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from observations.units import convert
from priors.drivers import DriverError, default_data_dir, read_fluxnet_monthly

__all__ = [
    "FLUX_SIGN",
    "FLUX_UNITS",
    "TRANSCOM3_LAND_REGIONS",
    "TRENDY_BANDS",
    "TeacherError",
    "fluxnet_sites",
    "read_fluxnet_nee",
    "read_gcb2025_dgvm_sinks",
    "read_trendy_monthly",
    "trendy_models",
]

#: The 11 TransCom-3 land regions, in the column order of the ``*reg_monthly.csv`` files (codes 1..11).
#: Must equal ``assim.state.TRANSCOM3_LAND`` (``priors`` never imports ``assim``; a test compares them).
TRANSCOM3_LAND_REGIONS = (
    "North American Boreal",
    "North American Temperate",
    "South American Tropical",
    "South American Temperate",
    "Northern Africa",
    "Southern Africa",
    "Eurasia Boreal",
    "Eurasia Temperate",
    "Tropical Asia",
    "Australia",
    "Europe",
)

#: Columns of the ``DGVM_<model>_monthly.csv`` files after ``yyyymm``.
TRENDY_BANDS = ("Global", "90N-30N", "30N-30S", "30S-90S")

FLUX_UNITS = "PgC yr-1"
FLUX_SIGN = "positive to the atmosphere (negative = uptake)"

TRENDY_DIR = Path("global_carbon_budget") / "gcb2020_trendy_dgvm_monthly"
GCB2025_DGVMS = Path("global_carbon_budget") / "gcb2025_terrestrial_sink_DGVMs_GtC.csv"
FLUXNET_DIR = Path("flux_towers")


class TeacherError(ValueError):
    """A teacher file is missing or does not have the layout described in MANIFEST.tsv."""


def trendy_models(data_dir: Path | None = None) -> list[str]:
    """Names of the TRENDY-v9 DGVMs with monthly files (e.g. ``"CLM5.0"``), sorted."""
    folder = Path(data_dir or default_data_dir()) / TRENDY_DIR
    models = sorted(p.name[len("DGVM_") : -len("reg_monthly.csv")] for p in folder.glob("DGVM_*reg_monthly.csv"))
    if not models:
        raise TeacherError(
            f"no DGVM_<model>reg_monthly.csv files in {folder}; pass data_dir= pointing at ../shared/data"
        )
    return models


def _gtc_per_month_to_rate(values: np.ndarray, time: pd.DatetimeIndex) -> np.ndarray:
    """GtC integrated over each calendar month -> mean rate in PgC/yr (real days per month)."""
    days = time.days_in_month.to_numpy(float).reshape((-1,) + (1,) * (np.ndim(values) - 1))
    return convert(np.asarray(values) / days, "GtC/day", "PgC/yr")


def _read_trendy_file(path: Path, n_columns: int) -> tuple[pd.DatetimeIndex, np.ndarray]:
    if not path.exists():
        raise TeacherError(f"TRENDY file {path} not found")
    table = np.loadtxt(path, ndmin=2)
    if table.shape[1] != n_columns + 1:
        raise TeacherError(f"{path}: expected yyyymm + {n_columns} columns, found {table.shape[1]} columns")
    stamp = table[:, 0].astype(int)
    time = pd.to_datetime({"year": stamp // 100, "month": stamp % 100, "day": 1})
    return pd.DatetimeIndex(time), _gtc_per_month_to_rate(table[:, 1:], pd.DatetimeIndex(time))


def read_trendy_monthly(
    data_dir: Path | None = None,
    models: list[str] | None = None,
    domain: str = "regions",
    start: str = "1901-01",
    end: str = "2019-12",
) -> xr.DataArray:
    """TRENDY-v9 monthly land flux (NBP, sign flipped) of each DGVM.

    Parameters
    ----------
    data_dir : Path, optional
        ``../shared/data`` by default.
    models : list of str, optional
        DGVM names (default :func:`trendy_models`).
    domain : {"regions", "bands"}
        ``"regions"``: the 11 TransCom-3 land regions (``*reg_monthly.csv``, the files' land total
        dropped); ``"bands"``: global, 90N-30N, 30N-30S, 30S-90S (``*_monthly.csv``).
    start, end : str
        Months kept (inclusive). Months before a model's first month are NaN (SDGVM starts in
        1900, VISIT in 1860, the others in 1700; all end 2019-12).

    Returns
    -------
    DataArray (model, time, region), PgC yr-1, positive to the atmosphere
        Mean flux rate over each month: the file's GtC per month divided by the month's real
        length in days, times days per (Julian) year.
    """
    if domain not in ("regions", "bands"):
        raise TeacherError(f"domain must be 'regions' or 'bands', got {domain!r}")
    folder = Path(data_dir or default_data_dir()) / TRENDY_DIR
    models = list(models or trendy_models(data_dir))
    labels = TRANSCOM3_LAND_REGIONS if domain == "regions" else TRENDY_BANDS
    time = pd.date_range(start, end, freq="MS")
    flux = np.full((len(models), time.size, len(labels)), np.nan)
    for i, model in enumerate(models):
        suffix = "reg_monthly.csv" if domain == "regions" else "_monthly.csv"
        file_time, values = _read_trendy_file(folder / f"DGVM_{model}{suffix}", len(labels) + (domain == "regions"))
        flux[i] = pd.DataFrame(values[:, : len(labels)], index=file_time).reindex(time).to_numpy()
    return xr.DataArray(
        flux,
        dims=("model", "time", "region"),
        coords={"model": models, "time": time.to_numpy("datetime64[ns]"), "region": list(labels)},
        name="flux",
        attrs={
            "units": FLUX_UNITS,
            "sign": FLUX_SIGN,
            "long_name": "net land-atmosphere CO2 flux of TRENDY-v9 DGVMs (-NBP)",
            "source": "TRENDY-v9 for GCB2020 (Friedlingstein et al. 2020), monthly aggregates by Z. Chen / S. Matson",
        },
    )


def read_gcb2025_dgvm_sinks(data_dir: Path | None = None) -> xr.Dataset:
    """Global Carbon Budget 2025 annual land sink of its DGVMs, 1959-2024.

    Returns
    -------
    Dataset (year[, model])
        ``land_sink`` (model, year): S_LAND of each DGVM; ``dgvm_mean``, ``dgvm_sd`` (year): the
        published multi-model mean and spread; ``gcb_land_sink`` (year): the budget's adjusted
        land sink. All PgC yr-1, **positive = uptake** (as published).
    """
    path = Path(data_dir or default_data_dir()) / GCB2025_DGVMS
    if not path.exists():
        raise TeacherError(f"GCB2025 DGVM table {path} not found")
    table = pd.read_csv(path, index_col="year")
    summary = {"GCB": "gcb_land_sink", "Multi-model_mean": "dgvm_mean", "Model_Spread_(sd)": "dgvm_sd"}
    missing = sorted(set(summary) - set(table.columns))
    if missing:
        raise TeacherError(f"{path}: columns {missing} not found (have {list(table.columns)})")
    models = [c for c in table.columns if c not in summary and c != "GCB_unadjusted"]
    attrs = {"units": FLUX_UNITS, "sign": "positive = uptake (land sink)", "source_file": path.name}
    year = table.index.to_numpy(int)
    data = {"land_sink": (("model", "year"), table[models].to_numpy(float).T, attrs)}
    data |= {name: ("year", table[col].to_numpy(float), attrs) for col, name in summary.items()}
    return xr.Dataset(
        data, coords={"year": year, "model": models}, attrs={"source": "Friedlingstein et al. 2025, ESSD"}
    )


def fluxnet_sites(data_dir: Path | None = None) -> pd.DataFrame:
    """Inventory of the FLUXNET2015 SUBSET monthly site files.

    Returns
    -------
    DataFrame indexed by site
        ``igbp`` (vegetation class), ``lat``, ``lon``, ``path`` (the site's MM file).
    """
    folder = Path(data_dir or default_data_dir()) / FLUXNET_DIR
    inventory = folder / "site_inventory_derived.csv"
    if not inventory.exists():
        raise TeacherError(f"FLUXNET inventory {inventory} not found")
    table = pd.read_csv(inventory, index_col="site")
    files = {p.name.split("_")[1]: p for p in (folder / "fluxnet2015_subset_MM").glob("FLX_*_MM_*.csv")}
    table = table.loc[table.index.isin(list(files))].copy()
    table["path"] = [files[s] for s in table.index]
    return table[["igbp", "lat", "lon", "path"]]


def read_fluxnet_nee(path: str | os.PathLike[str]) -> xr.DataArray:
    """Monthly net ecosystem exchange at one FLUXNET2015 site (``NEE_VUT_REF``).

    Returns
    -------
    DataArray (time), gC m-2 d-1, positive to the atmosphere
        Monthly mean of daily NEE; NaN where missing (-9999).
    """
    try:
        ds = read_fluxnet_monthly(path, {"NEE_VUT_REF": ("nee", "gC m-2 d-1", "net ecosystem exchange")})
    except DriverError as err:
        raise TeacherError(str(err)) from err
    return ds["nee"].assign_attrs(
        sign=FLUX_SIGN.replace("negative = uptake", "negative = uptake by the ecosystem"),
        site=ds.attrs["site"],
        source_file=ds.attrs["source_file"],
    )
