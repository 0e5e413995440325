"""Save, reload and present one inversion run: CF netCDF, a CSV summary and an HTML report.

The run is one :class:`xarray.Dataset` laid out as in ``docs/outputs.md`` (built by
:mod:`assim.pipeline`). This module never changes numbers; it writes them, reads them back
and draws them.

Sign conventions (see ``docs/outputs.md``):

* ``flux_*`` : PgC yr-1, **positive to the atmosphere** (a source; negative = uptake).
* ``land_sink_*`` : PgC yr-1, **positive = uptake** (``land_sink = -flux``), as in the
  Global Carbon Budget.

Every file is written atomically (:func:`atomic_write`): a temporary file in the same
directory, flushed to disk, then renamed over the target, so an interrupted run never leaves
a half-written file and never destroys the previous one.
"""

from __future__ import annotations

import contextlib
import html
import importlib.metadata
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import DateFormatter, MonthLocator
from matplotlib.figure import Figure

__all__ = [
    "FIGURES",
    "OPTIONAL_VARIABLES",
    "REQUIRED_VARIABLES",
    "atomic_path",
    "atomic_write",
    "make_outputs",
    "read_run",
    "report_from_file",
    "software_version",
    "summary_table",
    "total_aggregate",
    "validate_run",
    "write_report",
    "write_run",
    "write_summary_csv",
]

#: Variables every run file has, with their dims (docs/outputs.md).
REQUIRED_VARIABLES: dict[str, tuple[str, ...]] = {
    "flux_prior": ("time", "region"),
    "flux_prior_sd": ("time", "region"),
    "flux_posterior": ("time", "region"),
    "flux_posterior_sd": ("time", "region"),
    "land_sink_prior": ("year", "aggregate"),
    "land_sink_prior_sd": ("year", "aggregate"),
    "land_sink_posterior": ("year", "aggregate"),
    "land_sink_posterior_sd": ("year", "aggregate"),
    "land_sink_anomaly_posterior": ("year", "aggregate"),
    "land_sink_anomaly_posterior_sd": ("year", "aggregate"),
    "uncertainty_reduction": ("year", "aggregate"),
    "land_sink_posterior_covariance": ("year", "aggregate", "year_b", "aggregate_b"),
    "obs_value": ("obs",),
    "obs_uncertainty": ("obs",),
    "obs_prior_simulated": ("obs",),
    "obs_posterior_simulated": ("obs",),
    "dofs": (),
    "chi2_reduced": (),
}

#: Variables a run may have: the truth (OSSE only) and monthly aggregate totals.
OPTIONAL_VARIABLES: dict[str, tuple[str, ...]] = {
    "flux_truth": ("time", "region"),
    "land_sink_truth": ("year", "aggregate"),
    "flux_aggregate_prior": ("time", "aggregate"),
    "flux_aggregate_prior_sd": ("time", "aggregate"),
    "flux_aggregate_posterior": ("time", "aggregate"),
    "flux_aggregate_posterior_sd": ("time", "aggregate"),
}

_REQUIRED_COORDS = ("time", "region", "year", "aggregate", "obs_time", "obs_site", "obs_latitude")

#: Figure files written by :func:`write_report` (when their data exist), in report order.
FIGURES: dict[str, str] = {
    "land_sink_global": "land_sink_global.png",
    "land_sink_latitude_bands": "land_sink_latitude_bands.png",
    "flux_monthly_global": "flux_monthly_global.png",
    "uncertainty_reduction": "uncertainty_reduction.png",
    "anomaly_by_region": "anomaly_by_region.png",
    "obs_fit_sites": "obs_fit_sites.png",
    "residual_histograms": "residual_histograms.png",
    "gcb_comparison": "gcb_comparison.png",
    "growth_rate_check": "growth_rate_check.png",
}

_GCB = "gcb_atmosphere_implied_land_sink"

_GLOBAL = "Global land"
_FLUX_UNITS = "PgC yr-1"
_COV_UNITS = "PgC2 yr-2"
_SINK_SIGN = "positive = uptake by the land (land_sink = -flux)"
_FLUX_SIGN = "positive to the atmosphere (a source); negative = uptake"

# Default CF attributes, added only where the run does not set them.
_DEFAULT_ATTRS: dict[str, dict[str, str]] = {
    "flux_prior": {"units": _FLUX_UNITS, "long_name": "prior land-atmosphere CO2 flux", "comment": _FLUX_SIGN},
    "flux_prior_sd": {"units": _FLUX_UNITS, "long_name": "prior land flux 1-sigma"},
    "flux_posterior": {"units": _FLUX_UNITS, "long_name": "posterior land-atmosphere CO2 flux", "comment": _FLUX_SIGN},
    "flux_posterior_sd": {"units": _FLUX_UNITS, "long_name": "posterior land flux 1-sigma (marginal)"},
    "flux_truth": {"units": _FLUX_UNITS, "long_name": "OSSE truth land-atmosphere CO2 flux", "comment": _FLUX_SIGN},
    "land_sink_prior": {"units": _FLUX_UNITS, "long_name": "prior annual land sink", "comment": _SINK_SIGN},
    "land_sink_prior_sd": {"units": _FLUX_UNITS, "long_name": "prior annual land sink 1-sigma"},
    "land_sink_posterior": {"units": _FLUX_UNITS, "long_name": "posterior annual land sink", "comment": _SINK_SIGN},
    "land_sink_posterior_sd": {"units": _FLUX_UNITS, "long_name": "posterior annual land sink 1-sigma"},
    "land_sink_truth": {"units": _FLUX_UNITS, "long_name": "OSSE truth annual land sink", "comment": _SINK_SIGN},
    "land_sink_posterior_covariance": {"units": _COV_UNITS, "long_name": "posterior covariance of annual land sinks"},
    "land_sink_anomaly_posterior": {
        "units": _FLUX_UNITS,
        "long_name": "posterior land sink minus reference-period mean",
        "comment": _SINK_SIGN,
    },
    "land_sink_anomaly_posterior_sd": {"units": _FLUX_UNITS, "long_name": "posterior land sink anomaly 1-sigma"},
    "uncertainty_reduction": {"units": "1", "long_name": "1 - sd_posterior / sd_prior"},
    "obs_value": {"units": "ppm", "long_name": "observed CO2 minus background"},
    "obs_uncertainty": {"units": "ppm", "long_name": "observation error 1-sigma"},
    "obs_prior_simulated": {"units": "ppm", "long_name": "H x_prior"},
    "obs_posterior_simulated": {"units": "ppm", "long_name": "H x_posterior"},
    "dofs": {"units": "1", "long_name": "degrees of freedom for signal"},
    "chi2_reduced": {"units": "1", "long_name": "reduced chi-square 2 J(x_posterior) / m"},
    "time": {"standard_name": "time", "long_name": "month start (UTC)"},
    "year": {"long_name": "calendar year"},
    "year_b": {"long_name": "calendar year (second index of covariance)"},
    "obs_time": {"standard_name": "time", "long_name": "observation time (UTC)"},
    "obs_latitude": {"standard_name": "latitude", "units": "degrees_north"},
    "obs_site": {"long_name": "observation site code"},
}

_ATTR_TYPES = (str, int, float, np.number, np.ndarray, list, tuple, bytes)


# --------------------------------------------------------------------------------------
# atomic writes


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk (best effort; not all file systems allow it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` atomically.

    The temporary file lives in the same directory (so the final :func:`os.replace` is an
    atomic rename), keeps the target's suffix (so writers that infer the format from it work)
    and is fsynced before the rename. If the ``with`` body raises, the temporary file is
    removed and an existing file at ``path`` is left byte-for-byte untouched.

    Parameters
    ----------
    path : path-like
        Final location. Its directory must exist.

    Yields
    ------
    Path
        Where the body should write the complete file.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise ValueError(f"cannot write {target}: directory {target.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise ValueError(f"writer for {target} did not create its temporary file {tmp.name}")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write a file atomically: ``write(tmp)`` then fsync and rename ``tmp`` over ``path``.

    Parameters
    ----------
    path : path-like
        Final location; its directory must exist.
    write : callable(Path) -> None
        Writes the complete file to the path it is given (a temporary file in the same
        directory with the same suffix as ``path``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    Exception
        Whatever ``write`` raised; the temporary file is then removed and an existing file at
        ``path`` is unchanged.
    """
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


# --------------------------------------------------------------------------------------
# netCDF run file


def software_version() -> str:
    """Version of the installed ``assim`` distribution (``"unknown"`` when not installed)."""
    try:
        return importlib.metadata.version("assim")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def validate_run(run: xr.Dataset, source: str = "run") -> xr.Dataset:
    """Check that ``run`` has the variables, dims and coords of docs/outputs.md.

    Parameters
    ----------
    run : Dataset
        A run as built by :mod:`assim.pipeline`.
    source : str
        What to call the run in error messages (usually its file name).

    Returns
    -------
    Dataset
        ``run`` itself, unchanged.

    Raises
    ------
    ValueError
        Naming ``source``, every missing variable/coord and every variable with wrong dims.
    """
    problems = []
    missing = [name for name in REQUIRED_VARIABLES if name not in run.variables]
    if missing:
        problems.append(f"missing variables {missing}")
    missing_coords = [name for name in _REQUIRED_COORDS if name not in run.variables]
    if missing_coords:
        problems.append(f"missing coordinates {missing_coords}")
    for name, dims in {**REQUIRED_VARIABLES, **OPTIONAL_VARIABLES}.items():
        if name in run.variables and set(run[name].dims) != set(dims):
            problems.append(f"{name} has dims {run[name].dims}, expected {dims}")
    if problems:
        raise ValueError(
            f"{source} is not a complete assim run ({'; '.join(problems)}); "
            "see docs/outputs.md for the layout and re-make the run"
        )
    return run


def _check_attrs(run: xr.Dataset) -> None:
    for owner, attrs in [("global", run.attrs)] + [(str(k), v.attrs) for k, v in run.variables.items()]:
        for key, value in attrs.items():
            if not isinstance(value, _ATTR_TYPES) or isinstance(value, bool):
                raise ValueError(
                    f"attribute {key!r} of {owner} is a {type(value).__name__}; netCDF attributes "
                    "must be str or numbers (store a config as its TOML text)"
                )


def _prepare_for_netcdf(run: xr.Dataset, what: str) -> tuple[xr.Dataset, dict[str, dict]]:
    """Copy ``run`` with CF attrs and a new history line; return it and its encoding."""
    out = run.copy(deep=False)
    for name, var in out.variables.items():
        var.encoding = {}  # stale encodings from a file we read would fight the new layout
        for key, value in _DEFAULT_ATTRS.get(str(name), {}).items():
            var.attrs.setdefault(key, value)
    version = software_version()
    attrs = dict(run.attrs)
    attrs["Conventions"] = "CF-1.8"
    attrs.setdefault("title", "assim land carbon sink inversion")
    attrs.setdefault("software_version", version)
    attrs.setdefault("created", _utc_now())
    line = f"{_utc_now()} assim {version}: {what}"
    previous = str(attrs.get("history", "")).rstrip("\n")
    attrs["history"] = f"{previous}\n{line}" if previous else line
    out.attrs = attrs
    _check_attrs(out)
    encoding: dict[str, dict] = {}
    for name, var in out.variables.items():
        if var.dtype.kind in "fiub" and var.ndim > 0:
            encoding[str(name)] = {"zlib": True, "complevel": 4, "shuffle": True}
        elif var.dtype.kind == "M":
            encoding[str(name)] = {
                "zlib": True,
                "complevel": 4,
                "dtype": "float64",
                "units": "days since 1970-01-01 00:00:00",
                "calendar": "proleptic_gregorian",
            }
        elif var.dtype.kind in "OUS":
            encoding[str(name)] = {"dtype": str}  # variable-length NC_STRING: round-trips exactly
    return out, encoding


def write_run(run: xr.Dataset, path: str | os.PathLike[str], *, what: str | None = None) -> Path:
    """Write a run to one CF-1.8 netCDF-4 file, atomically.

    Adds ``Conventions``, default ``units``/``long_name`` where missing, and a ``history``
    line ``"<UTC ISO time> assim <version>: <what>"`` after any existing ones. The ``config``
    (TOML text) and ``software_version`` attributes of ``run`` are kept as they are, so the
    run can be re-made from the file alone. Numeric variables are zlib-compressed; string
    coordinates (``region``, ``aggregate``, ``obs_site``) are stored as netCDF strings.
    ``run`` itself is not modified.

    Parameters
    ----------
    run : Dataset
        The run (docs/outputs.md): ``flux_*`` (time, region) PgC yr-1 positive to the
        atmosphere, ``land_sink_*`` (year, aggregate) PgC yr-1 positive = uptake, obs
        variables (obs) ppm, scalars ``dofs`` and ``chi2_reduced``.
    path : path-like
        Output file, normally ``<outdir>/run.nc``; its directory must exist.
    what : str, optional
        What this write is, for the history line (default ``"wrote <file name>"``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If the run lacks required variables or has attributes netCDF cannot store.
    """
    path = Path(path)
    validate_run(run, source=f"run to be written to {path}")
    out, encoding = _prepare_for_netcdf(run, what or f"wrote {path.name}")
    out = out.load()
    atomic_write(
        path,
        lambda tmp: out.to_netcdf(tmp, mode="w", format="NETCDF4", engine="netcdf4", encoding=encoding),
    )
    return path


def _strings_to_unicode(run: xr.Dataset) -> xr.Dataset:
    """netCDF strings come back as object arrays; make them fixed-width unicode again."""
    fixed = {}
    for name, var in run.variables.items():
        if var.dtype.kind in "OS" and var.size and all(isinstance(v, str | bytes) for v in var.values.ravel()):
            values = np.array([v.decode() if isinstance(v, bytes) else v for v in var.values.ravel()])
            fixed[name] = var.copy(data=values.reshape(var.shape))
    coords = {k: v for k, v in fixed.items() if k in run.coords}
    data = {k: v for k, v in fixed.items() if k not in run.coords}
    return run.assign_coords(coords).assign(data)


def read_run(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read a run file fully into memory and close it.

    Parameters
    ----------
    path : path-like
        A file written by :func:`write_run`.

    Returns
    -------
    Dataset
        The run, with string coordinates as unicode arrays and all data loaded (the file is
        closed, so it may be overwritten afterwards).

    Raises
    ------
    ValueError
        If the file does not exist, is not readable netCDF, or lacks required variables;
        the message names the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"run file {path} does not exist; write it with assim.report.write_run")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            run = ds.load()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ValueError(
            f"run file {path} is not a readable netCDF file ({type(exc).__name__}: {exc}); "
            "it may be truncated or corrupt: re-make it with `assim run` or `assim demo`"
        ) from exc
    run = _strings_to_unicode(run)
    validate_run(run, source=f"run file {path}")
    return run


# --------------------------------------------------------------------------------------
# CSV summary

_CSV_COLUMNS = {
    "land_sink_prior": "land_sink_prior_PgC_per_yr",
    "land_sink_prior_sd": "land_sink_prior_sd_PgC_per_yr",
    "land_sink_posterior": "land_sink_posterior_PgC_per_yr",
    "land_sink_posterior_sd": "land_sink_posterior_sd_PgC_per_yr",
    "uncertainty_reduction": "uncertainty_reduction_fraction",
    "land_sink_anomaly_posterior": "land_sink_anomaly_posterior_PgC_per_yr",
    "land_sink_anomaly_posterior_sd": "land_sink_anomaly_posterior_sd_PgC_per_yr",
    "land_sink_truth": "land_sink_truth_PgC_per_yr",
}


def summary_table(run: xr.Dataset) -> pd.DataFrame:
    """Annual land sink by aggregate as a table, one row per (year, aggregate).

    Parameters
    ----------
    run : Dataset
        A run (docs/outputs.md).

    Returns
    -------
    DataFrame
        Columns ``year``, ``aggregate`` then, in PgC yr-1 with uptake positive,
        ``land_sink_prior_PgC_per_yr``, ``land_sink_prior_sd_PgC_per_yr``,
        ``land_sink_posterior_PgC_per_yr``, ``land_sink_posterior_sd_PgC_per_yr``,
        ``uncertainty_reduction_fraction`` (1 - sd_post/sd_prior),
        ``land_sink_anomaly_posterior_PgC_per_yr``, ``land_sink_anomaly_posterior_sd_PgC_per_yr``
        and, in an OSSE, ``land_sink_truth_PgC_per_yr``. Rows are year-major, aggregates in
        the run's order.
    """
    validate_run(run)
    names = [n for n in _CSV_COLUMNS if n in run.variables]
    frame = run[names].transpose("year", "aggregate").to_dataframe()[names].reset_index().rename(columns=_CSV_COLUMNS)
    return frame[["year", "aggregate", *(_CSV_COLUMNS[n] for n in names)]]


def write_summary_csv(run: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write :func:`summary_table` to CSV (normally ``land_sink.csv``), atomically.

    Parameters
    ----------
    run : Dataset
        A run (docs/outputs.md).
    path : path-like
        Output CSV file.

    Returns
    -------
    Path
        ``path``.
    """
    table = summary_table(run)
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))


# --------------------------------------------------------------------------------------
# figures

_PRIOR, _POSTERIOR, _TRUTH = "tab:orange", "tab:blue", "black"


def total_aggregate(run: xr.Dataset) -> str:
    """The headline total of a run: "Global land", else its first aggregate that is not a region."""
    total = _aggregate_groups(run)[1]
    if total is None:
        raise ValueError("the run has no total aggregate (every aggregate is a region)")
    return total


def _aggregate_groups(run: xr.Dataset) -> tuple[list[str], str | None, list[str]]:
    """Split aggregates into (regions, the global total, latitude bands / other totals)."""
    regions = set(run["region"].values.tolist())
    aggregates = [str(a) for a in run["aggregate"].values]
    per_region = [a for a in aggregates if a in regions]
    totals = [a for a in aggregates if a not in regions]
    glob = _GLOBAL if _GLOBAL in totals else (totals[0] if totals else None)
    return per_region, glob, [a for a in totals if a != glob]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _sink_panel(ax, run: xr.Dataset, aggregate: str, legend: bool) -> None:
    years = run["year"].values
    for shift, (name, colour, label) in zip(
        (-0.1, 0.1), [("prior", _PRIOR, "prior"), ("posterior", _POSTERIOR, "posterior")], strict=True
    ):
        mean = run[f"land_sink_{name}"].sel(aggregate=aggregate).values
        sd = run[f"land_sink_{name}_sd"].sel(aggregate=aggregate).values
        if years.size > 1:
            ax.fill_between(years, mean - 2 * sd, mean + 2 * sd, color=colour, alpha=0.12, lw=0, label=f"{label} ±2σ")
            ax.fill_between(years, mean - sd, mean + sd, color=colour, alpha=0.3, lw=0, label=f"{label} ±1σ")
            ax.plot(years, mean, color=colour, marker="o", ms=3.5, lw=1.6, label=f"{label} mean")
        else:  # one (possibly partial) year: bars, not bands
            x = years + shift
            ax.errorbar(x, mean, yerr=2 * sd, color=colour, alpha=0.35, capsize=6, lw=1.2, label=f"{label} ±2σ")
            ax.errorbar(x, mean, yerr=sd, color=colour, marker="o", ms=5, capsize=4, lw=2, label=f"{label} ±1σ")
            ax.set_xlim(years[0] - 1, years[0] + 1)
    if "land_sink_truth" in run:
        ax.plot(
            years,
            run["land_sink_truth"].sel(aggregate=aggregate).values,
            color=_TRUTH,
            ls="--",
            lw=1.4,
            marker="s",
            ms=3,
            label="truth (OSSE)",
        )
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_title(aggregate, fontsize=10)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if legend:
        ax.legend(fontsize=8, ncol=1, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def _figure_land_sink_global(run: xr.Dataset, glob: str, path: Path) -> Path:
    fig = Figure(figsize=(10.5, 4.2), layout="constrained")
    ax = fig.subplots()
    _sink_panel(ax, run, glob, legend=True)
    ax.set_title(f"{glob}: annual land sink (uptake positive)", fontsize=11)
    ax.set_xlabel("year")
    ax.set_ylabel("land sink (PgC yr$^{-1}$)")
    return _save(fig, path)


def _figure_land_sink_bands(run: xr.Dataset, bands: list[str], path: Path) -> Path:
    fig = Figure(figsize=(10.5, 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(bands)))
    for i, (ax, band) in enumerate(zip(axes, bands, strict=True)):
        _sink_panel(ax, run, band, legend=False)
        ax.set_xlabel("year")
        if i == 0:
            ax.set_ylabel("land sink (PgC yr$^{-1}$)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("Annual land sink by latitude band (uptake positive)", fontsize=11)
    return _save(fig, path)


def _figure_flux_monthly(run: xr.Dataset, path: Path) -> Path:
    time = run["time"].values
    smooth = time.size >= 24  # a running-mean panel only for multi-year runs
    fig = Figure(figsize=(10.5, 6.2 if smooth else 4.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2]) if smooth else (fig.subplots(), None)
    total_name = total_aggregate(run)
    series = [("flux_prior", _PRIOR, "prior", "-"), ("flux_posterior", _POSTERIOR, "posterior", "-")]
    if "flux_truth" in run:
        series.append(("flux_truth", _TRUTH, "truth (OSSE)", "--"))
    window = min(12, time.size)
    for name, colour, label, ls in series:
        total = run[name].sum("region")
        top.plot(time, total.values, color=colour, ls=ls, lw=1.2, marker=None if smooth else "o", label=label)
        sd_name = name.replace("flux_", "flux_aggregate_") + "_sd"
        if sd_name in run:
            sd = run[sd_name].sel(aggregate=total_name).values
            top.fill_between(time, total - 2 * sd, total + 2 * sd, color=colour, alpha=0.12, lw=0)
            top.fill_between(time, total - sd, total + sd, color=colour, alpha=0.25, lw=0)
        if smooth:
            running = total.rolling(time=window, center=True).mean()
            bottom.plot(time, running.values, color=colour, ls=ls, lw=1.6, label=label)
    for ax in (top, bottom) if smooth else (top,):
        ax.axhline(0, color="0.5", lw=0.6)
        ax.grid(alpha=0.3)
        ax.set_ylabel("flux (PgC yr$^{-1}$)")
    top.set_title(
        f"Monthly land-atmosphere CO$_2$ flux, {total_name}, sum of regions (positive = source to the atmosphere)",
        fontsize=11,
    )
    if smooth:
        bottom.set_title(f"{window}-month running mean", fontsize=10, loc="left")
    (bottom if smooth else top).set_xlabel("month")
    if not smooth:
        top.xaxis.set_major_locator(MonthLocator())
        top.xaxis.set_major_formatter(DateFormatter("%Y-%m"))
    top.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path)


def _separate_totals(ax, n_regions: int, n_total: int) -> None:
    """Dotted line between the per-region rows and the totals of a horizontal chart."""
    if 0 < n_regions < n_total:
        ax.axhline(n_regions - 0.5, color="0.4", lw=0.8, ls=":")


def _figure_uncertainty_reduction(run: xr.Dataset, order: list[str], n_regions: int, path: Path) -> Path:
    last = int(run["year"].values[-1])
    ur = run["uncertainty_reduction"].sel(aggregate=order)
    last_values = ur.sel(year=last).values
    mean_values = ur.mean("year").values
    y = np.arange(len(order))
    fig = Figure(figsize=(10.5, 0.32 * len(order) + 1.6), layout="constrained")
    ax = fig.subplots()
    ax.barh(y - 0.2, last_values, height=0.4, color=_POSTERIOR, label=f"{last}")
    ax.barh(y + 0.2, mean_values, height=0.4, color="0.65", label=f"mean {int(run['year'].values[0])}–{last}")
    ax.set_yticks(y, order, fontsize=9)
    ax.invert_yaxis()
    lowest = float(np.nanmin([last_values.min(), mean_values.min()]))
    ax.set_xlim(lowest - 0.05 if lowest < 0 else 0.0, 1.0)
    ax.axvline(0, color="0.3", lw=0.6)
    _separate_totals(ax, n_regions, len(order))
    ax.set_xlabel("uncertainty reduction  1 − σ$_{posterior}$ / σ$_{prior}$")
    ax.set_title("Uncertainty reduction of the annual land sink", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _reference_years(run: xr.Dataset) -> np.ndarray:
    years = run["year"].values
    ref = str(run["land_sink_anomaly_posterior"].attrs.get("reference_period", ""))
    found = re.findall(r"\d{4}", ref)
    if len(found) >= 2:
        sel = years[(years >= int(found[0])) & (years <= int(found[-1]))]
        if sel.size:
            return sel
    return years


def _most_anomalous_year(run: xr.Dataset, glob: str) -> int:
    anomaly = run["land_sink_anomaly_posterior"].sel(aggregate=glob).values
    return int(run["year"].values[int(np.nanargmax(np.abs(anomaly)))])


def _figure_anomaly(run: xr.Dataset, order: list[str], n_regions: int, year: int, path: Path) -> Path:
    anomaly = run["land_sink_anomaly_posterior"].sel(year=year, aggregate=order).values
    sd = run["land_sink_anomaly_posterior_sd"].sel(year=year, aggregate=order).values
    y = np.arange(len(order))
    fig = Figure(figsize=(10.5, 0.32 * len(order) + 1.8), layout="constrained")
    ax = fig.subplots()
    ax.errorbar(
        anomaly,
        y,
        xerr=2 * sd,
        fmt="none",
        ecolor=_POSTERIOR,
        elinewidth=0.8,
        capsize=0,
        alpha=0.6,
        label="posterior ±2σ",
    )
    ax.errorbar(anomaly, y, xerr=sd, fmt="o", color=_POSTERIOR, elinewidth=2.2, capsize=3, ms=5, label="posterior ±1σ")
    if "land_sink_truth" in run:
        truth = run["land_sink_truth"].sel(aggregate=order)
        truth_anomaly = truth - truth.sel(year=_reference_years(run)).mean("year")
        ax.plot(truth_anomaly.sel(year=year).values, y, "x", color=_TRUTH, ms=7, mew=1.6, label="truth (OSSE)")
    ax.axvline(0, color="0.3", lw=0.8)
    _separate_totals(ax, n_regions, len(order))
    ax.set_yticks(y, order, fontsize=9)
    ax.invert_yaxis()
    ref = _reference_years(run)
    ax.set_xlabel(
        f"land sink anomaly (PgC yr$^{{-1}}$) relative to {ref[0]}–{ref[-1]} mean; negative = weaker uptake than usual"
    )
    ax.set_title(f"Posterior land-sink anomaly in {year} (the most anomalous year globally)", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncol=3, frameon=False)
    return _save(fig, path)


def _pick_sites(run: xr.Dataset, n: int = 4) -> list[str]:
    sites = (
        pd.DataFrame({"site": run["obs_site"].values.astype(str), "lat": run["obs_latitude"].values})
        .groupby("site")["lat"]
        .mean()
    )
    sites = sites.sort_values(ascending=False)
    if len(sites) <= n:
        return list(sites.index)
    pick = np.unique(np.round(np.linspace(0, len(sites) - 1, n)).astype(int))
    return [str(sites.index[i]) for i in pick]


def _figure_obs_fit(run: xr.Dataset, path: Path) -> Path:
    sites = _pick_sites(run)
    fig = Figure(figsize=(10.5, 2.2 * len(sites) + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(sites), 1, sharex=True))
    site_of = run["obs_site"].values.astype(str)
    for ax, site in zip(axes, sites, strict=True):
        sel = np.flatnonzero(site_of == site)
        order = sel[np.argsort(run["obs_time"].values[sel])]
        t = run["obs_time"].values[order]
        ax.errorbar(
            t,
            run["obs_value"].values[order],
            yerr=run["obs_uncertainty"].values[order],
            fmt=".",
            color="0.35",
            ms=3,
            elinewidth=0.5,
            alpha=0.7,
            label="observed ±1σ",
        )
        ax.plot(t, run["obs_prior_simulated"].values[order], color=_PRIOR, lw=1.2, label="prior simulated")
        ax.plot(t, run["obs_posterior_simulated"].values[order], color=_POSTERIOR, lw=1.2, label="posterior simulated")
        lat = float(np.mean(run["obs_latitude"].values[sel]))
        ax.set_title(f"{site} ({abs(lat):.1f}°{'N' if lat >= 0 else 'S'})", fontsize=10, loc="left")
        ax.set_ylabel("CO$_2$ − background\n(ppm)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=3, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes[-1].set_xlabel("time (UTC)")
    fig.suptitle("Fit to observations at selected sites", fontsize=11)
    return _save(fig, path)


def _normalized_residuals(run: xr.Dataset, which: str) -> np.ndarray:
    r = (run["obs_value"].values - run[f"obs_{which}_simulated"].values) / run["obs_uncertainty"].values
    return r[np.isfinite(r)]


def _figure_residuals(run: xr.Dataset, path: Path) -> Path:
    fig = Figure(figsize=(10.5, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    edges = np.linspace(-5, 5, 41)
    grid = np.linspace(-5, 5, 301)
    normal = np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi)
    for ax, which, colour in [(axes[0], "prior", _PRIOR), (axes[1], "posterior", _POSTERIOR)]:
        r = _normalized_residuals(run, which)
        outside = int(np.sum(np.abs(r) > 5))
        ax.hist(np.clip(r, -5, 5), bins=edges, density=True, color=colour, alpha=0.6, label=f"{which} (n = {r.size})")
        ax.plot(grid, normal, color="black", lw=1.3, label="N(0, 1)")
        ax.set_title(
            f"{which}: mean {r.mean():+.2f}, sd {r.std():.2f}"
            + (f", {outside} beyond ±5 (in end bins)" if outside else ""),
            fontsize=10,
        )
        ax.set_xlabel("(obs − simulated) / uncertainty")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("density")
    fig.suptitle("Normalized observation residuals", fontsize=11)
    return _save(fig, path)


def _draw_figures(run: xr.Dataset, figdir: Path) -> dict[str, Path]:
    per_region, glob, bands = _aggregate_groups(run)
    order = per_region + ([glob] if glob else []) + bands
    n_regions = len(per_region)
    written: dict[str, Path] = {}

    def target(key: str) -> Path:
        return figdir / FIGURES[key]

    if glob is not None:
        written["land_sink_global"] = _figure_land_sink_global(run, glob, target("land_sink_global"))
    if bands:
        written["land_sink_latitude_bands"] = _figure_land_sink_bands(run, bands, target("land_sink_latitude_bands"))
    written["flux_monthly_global"] = _figure_flux_monthly(run, target("flux_monthly_global"))
    written["uncertainty_reduction"] = _figure_uncertainty_reduction(
        run, order, n_regions, target("uncertainty_reduction")
    )
    if glob is not None:
        year = _most_anomalous_year(run, glob)
        written["anomaly_by_region"] = _figure_anomaly(run, order, n_regions, year, target("anomaly_by_region"))
    if run.sizes.get("obs", 0) > 0:
        written["obs_fit_sites"] = _figure_obs_fit(run, target("obs_fit_sites"))
        written["residual_histograms"] = _figure_residuals(run, target("residual_histograms"))
    if _GCB in run and glob is not None:
        written["gcb_comparison"] = _figure_gcb_comparison(run, target("gcb_comparison"))
    if "growth_rate_observed" in run:
        written["growth_rate_check"] = _figure_growth_rate(run, target("growth_rate_check"))
    return written


def _figure_gcb_comparison(run: xr.Dataset, path: Path) -> Path:
    fig = Figure(figsize=(10.5, 4.8), layout="constrained")
    ax = fig.subplots()
    years = run["year"].values
    post = run["land_sink_posterior"].sel(aggregate=_GLOBAL).values
    sd = run["land_sink_posterior_sd"].sel(aggregate=_GLOBAL).values
    ax.fill_between(years, post - 2 * sd, post + 2 * sd, color=_POSTERIOR, alpha=0.12, lw=0, label="posterior ±2σ")
    ax.fill_between(years, post - sd, post + sd, color=_POSTERIOR, alpha=0.3, lw=0, label="posterior ±1σ")
    ax.plot(years, post, color=_POSTERIOR, lw=1.8, marker="o", ms=3, label="posterior (this run)")
    ax.errorbar(
        years,
        run[_GCB].values,
        yerr=run[f"{_GCB}_sd"].values,
        color="black",
        fmt="s",
        ms=3,
        lw=0.8,
        capsize=2,
        label="GCB 2025 S$_{LAND}$ + B$_{IM}$ (atmosphere-implied) ±1σ",
    )
    ax.plot(years, run["gcb_land_sink"].values, color="tab:green", lw=1.4, label="GCB 2025 S$_{LAND}$")
    dgvm, spread = run["gcb_dgvm_mean"].values, run["gcb_dgvm_sd"].values
    ax.fill_between(
        years, dgvm - spread, dgvm + spread, color="tab:green", alpha=0.12, lw=0, label="DGVM mean ± spread"
    )
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_ylabel("land sink (PgC yr$^{-1}$, uptake positive)")
    ax.set_xlabel("year")
    ax.set_title("Global land sink: this inversion vs the Global Carbon Budget 2025", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path)


def _figure_growth_rate(run: xr.Dataset, path: Path) -> Path:
    fig = Figure(figsize=(10.5, 4.0), layout="constrained")
    ax = fig.subplots()
    years = run["growth_year"].values
    ax.errorbar(
        years,
        run["growth_rate_observed"].values,
        yerr=run["growth_rate_observed_sd"].values,
        fmt="s",
        ms=3,
        color="black",
        capsize=2,
        lw=0.8,
        label="NOAA observed (withheld) ±1σ",
    )
    ax.plot(years, run["growth_rate_prior"].values, color=_PRIOR, lw=1.2, label="prior simulated")
    post, sd = run["growth_rate_posterior"].values, run["growth_rate_posterior_sd"].values
    ax.fill_between(years, post - sd, post + sd, color=_POSTERIOR, alpha=0.3, lw=0, label="posterior ±1σ")
    ax.plot(years, post, color=_POSTERIOR, lw=1.6, label="posterior simulated")
    ax.set_ylabel("CO$_2$ growth rate (ppm yr$^{-1}$)")
    ax.set_xlabel("year")
    ax.set_title("Independent check: NOAA global annual growth rate (not assimilated)", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path)


# --------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.8em;
     border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
table.bands th { text-align: center; white-space: normal; } table.bands td { text-align: center; }
.sub { font-size: 0.85em; color: #666; } tr.total td { border-top: 2px solid #999; }
table.meta td, table.meta th { text-align: left; white-space: normal; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.88em; color: #555; }
.note { background: #f7f9fc; border-left: 4px solid #4a7bd0; padding: 0.5em 1em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""

_CAPTIONS = {
    "land_sink_global": "Annual land sink of the headline total (global land; the domain total of a regional run, "
    "a mean over the months the run covers), uptake positive, with ±1σ and ±2σ of the prior and the posterior.",
    "land_sink_latitude_bands": "The same for each latitude band (each region split by its area fraction in the band).",
    "flux_monthly_global": "Monthly land flux of the headline total, sum of the regions, positive to the "
    "atmosphere (opposite sign to the land sink), with ±1σ and ±2σ of the monthly total "
    "(cross-region covariance propagated) where the run file carries them.",
    "uncertainty_reduction": "Uncertainty reduction 1 − σ_posterior/σ_prior of the annual sink for "
    "the last year and averaged over all years.",
    "anomaly_by_region": "Posterior land-sink anomaly of each region and total in the year with the "
    "largest global anomaly, with ±1σ (thick) and ±2σ (thin) error bars.",
    "obs_fit_sites": "Observations (minus background) and their simulation with the prior and "
    "posterior fluxes at up to four sites spread in latitude.",
    "gcb_comparison": "Posterior global land sink with ±1σ/±2σ against the Global Carbon Budget 2025: the "
    "atmosphere-implied sink S_LAND + B_IM (black, with the 1σ of its terms), the DGVM-based S_LAND (green line) "
    "and the DGVM mean ± spread. Nothing in the inversion is tuned to these values; the inversion shares the "
    "GCB's fossil, ocean and land-use priors, so the two are not independent.",
    "growth_rate_check": "NOAA's global annual growth rate (Dec/Jan definition), withheld from the inversion, against "
    "the growth rate simulated with the prior and posterior fluxes.",
    "residual_histograms": "Normalized residuals (obs − simulated)/uncertainty for all "
    "observations; with consistent error statistics the posterior "
    "histogram follows N(0, 1).",
}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.2f} ± {sd:.2f}"


def _scalar(run: xr.Dataset, name: str) -> float:
    return float(run[name].values)


def _band_table(run: xr.Dataset, columns: list[str]) -> str:
    """Years x aggregates; each cell: posterior ± sd in bold, prior (and truth) below."""
    has_truth = "land_sink_truth" in run
    head = '<tr><th class="l">year</th>' + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>"
    rows = []
    for year in run["year"].values:
        cells = [f'<td class="l">{int(year)}</td>']
        for agg in columns:
            p = run.sel(year=year, aggregate=agg)
            post = _pm(float(p["land_sink_posterior"]), float(p["land_sink_posterior_sd"]))
            below = f"prior {_pm(float(p['land_sink_prior']), float(p['land_sink_prior_sd']))}"
            if has_truth:
                below += f" · truth {float(p['land_sink_truth']):.2f}"
            cells.append(f'<td><b>{post}</b><br><span class="sub">{below}</span></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return '<table class="bands">' + head + "".join(rows) + "</table>"


def _region_table(run: xr.Dataset, order: list[str], n_regions: int, year: int) -> str:
    has_truth = "land_sink_truth" in run
    heads = (
        ["aggregate", "posterior ± 1σ", "prior ± 1σ"]
        + (["truth"] if has_truth else [])
        + ["anomaly ± 1σ", "uncertainty reduction"]
    )
    rows = ["<tr>" + "".join(f"<th{' class=l' if i == 0 else ''}>{_e(h)}</th>" for i, h in enumerate(heads)) + "</tr>"]
    for i, agg in enumerate(order):
        p = run.sel(year=year, aggregate=agg)
        first_total = i == n_regions and 0 < n_regions < len(order)
        cells = [
            f'<td class="l">{_e(agg)}</td>',
            f"<td>{_pm(float(p['land_sink_posterior']), float(p['land_sink_posterior_sd']))}</td>",
            f"<td>{_pm(float(p['land_sink_prior']), float(p['land_sink_prior_sd']))}</td>",
        ]
        if has_truth:
            cells.append(f"<td>{float(p['land_sink_truth']):.2f}</td>")
        anomaly = _pm(float(p["land_sink_anomaly_posterior"]), float(p["land_sink_anomaly_posterior_sd"]))
        cells.append(f"<td>{anomaly}</td>")
        cells.append(f"<td>{100 * float(p['uncertainty_reduction']):.0f}%</td>")
        rows.append(('<tr class="total">' if first_total else "<tr>") + "".join(cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _html(run: xr.Dataset, figures: dict[str, Path], outdir: Path) -> str:
    per_region, glob, bands = _aggregate_groups(run)
    order = per_region + ([glob] if glob else []) + bands
    last = int(run["year"].values[-1])
    title = str(run.attrs.get("title", "Land carbon sink inversion"))
    meta_keys = ["method", "prior_source", "created", "software_version", "osse_seed"]
    meta = [(k, run.attrs[k]) for k in meta_keys if k in run.attrs]
    time = pd.DatetimeIndex(run["time"].values)
    n_obs = run.sizes.get("obs", 0)
    n_sites = len(np.unique(run["obs_site"].values.astype(str))) if n_obs else 0
    meta += [
        ("period", f"{time[0]:%Y-%m} to {time[-1]:%Y-%m} ({time.size} months)"),
        ("regions", str(run.sizes["region"])),
        ("observations", f"{n_obs} from {n_sites} sites"),
    ]
    ref = _reference_years(run)
    meta.append(("anomaly reference period", f"{ref[0]}–{ref[-1]}"))
    meta.append(("report made", f"{_utc_now()} with assim {software_version()}"))

    diag = [
        ("DOFS (degrees of freedom for signal)", f"{_scalar(run, 'dofs'):.2f}"),
        ("reduced χ² (≈ 1 when error statistics are consistent)", f"{_scalar(run, 'chi2_reduced'):.2f}"),
    ]
    if n_obs:
        for which in ("prior", "posterior"):
            r = _normalized_residuals(run, which)
            diag.append((f"RMS normalized residual, {which}", f"{np.sqrt(np.mean(r**2)):.2f}"))

    def kv_table(pairs: Sequence[tuple[str, object]]) -> str:
        return (
            '<table class="meta">'
            + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs)
            + "</table>"
        )

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        kv_table(meta),
        '<p class="note"><b>Sign convention.</b> The <i>land sink</i> is in PgC yr<sup>-1</sup>, '
        "<b>positive = uptake</b> of CO<sub>2</sub> by the land, as in the Global Carbon Budget. "
        "The monthly <i>flux</i> (the state of the inversion, variables <code>flux_*</code>) has "
        "the opposite sign: positive to the atmosphere, so land_sink = −flux. A negative anomaly "
        "means the land took up less carbon than in the reference period. Uncertainties are 1σ "
        "unless labelled; annual and regional totals propagate the full posterior covariance.</p>",
        "<h2>Diagnostics</h2>",
        kv_table(diag),
    ]
    if glob is not None:
        table = _band_table(run, [glob, *bands])
        if run.sizes["year"] > 15:
            table = f"<details><summary>table of {run.sizes['year']} years</summary>{table}</details>"
        parts += [
            f"<h2>Annual land sink, {_e(glob)} and latitude bands (PgC yr<sup>-1</sup>, uptake positive)</h2>",
            table,
        ]
    if "probability_below_reference" in run and glob is not None:
        parts += _recent_years_section(run, glob)
    if _GCB in run and glob is not None:
        parts += _gcb_section(run, glob)
    parts += [
        f"<h2>Land sink in {last} by region (PgC yr<sup>-1</sup>, uptake positive)</h2>",
        _region_table(run, order, len(per_region), last),
        "<h2>Figures</h2>",
    ]
    for key, path in figures.items():
        rel = path.relative_to(outdir).as_posix()
        parts.append(
            f'<figure><img src="{_e(rel)}" alt="{_e(key)}">'
            f"<figcaption>{_e(_CAPTIONS.get(key, key))}</figcaption></figure>"
        )
    if not n_obs:
        parts.append("<p>No observations in this run: no fit-to-observation figures.</p>")
    if "config" in run.attrs:
        parts.append(
            f"<h2>Configuration</h2><details><summary>config (TOML) used for this run"
            f"</summary><pre>{_e(run.attrs['config'])}</pre></details>"
        )
    if "history" in run.attrs:
        parts.append(f"<details><summary>history</summary><pre>{_e(run.attrs['history'])}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _recent_years_section(run: xr.Dataset, glob: str) -> list[str]:
    """The last two years: anomaly against the reference period, P(below), tropical share, error budget."""
    years = run["year"].values[-2:]
    ref = _reference_years(run)
    tropics = "Tropics (30S-30N)"
    header = (
        "<tr><th>year</th><th>global sink</th><th>anomaly</th><th>P(sink below reference mean)</th>"
        "<th>tropical anomaly</th><th>tropical share of anomaly (median, 16–84 %)</th>"
        "<th>GCB S<sub>LAND</sub>+B<sub>IM</sub></th></tr>"
    )
    rows = []
    for year in years:

        def get(name: str, agg: str = glob, year: int = year) -> float:
            return float(run[name].sel(year=year, aggregate=agg))

        share = [float(run[f"tropical_share_of_anomaly{k}"].sel(year=year)) for k in ("", "_p16", "_p84")]
        gcb = f"{float(run[_GCB].sel(year=year)):.2f}" if _GCB in run else "–"
        rows.append(
            f"<tr><td>{year}</td><td>{_pm(get('land_sink_posterior'), get('land_sink_posterior_sd'))}</td>"
            f"<td>{_pm(get('land_sink_anomaly_posterior'), get('land_sink_anomaly_posterior_sd'))}</td>"
            f"<td>{get('probability_below_reference'):.0%}</td>"
            f"<td>{_pm(get('land_sink_anomaly_posterior', tropics), get('land_sink_anomaly_posterior_sd', tropics))}"
            "</td>"
            f"<td>{share[0]:.2f} ({share[1]:.2f} to {share[2]:.2f})</td><td>{gcb}</td></tr>"
        )
    parts = [
        f"<h2>The most recent years against {ref[0]}–{ref[-1]} (PgC yr<sup>-1</sup>, uptake positive)</h2>",
        f'<table class="bands">{header}{"".join(rows)}</table>',
        '<p class="sub">The tropical share is a ratio of two uncertain anomalies (Monte Carlo from the joint '
        "posterior); it is ill-defined when the global anomaly is near zero.</p>",
    ]
    if "uncertainty_budget" in run:
        budget = run["uncertainty_budget"].sel(year=years)
        share = budget / budget.sum("error_source")
        head = "".join(f"<th>{_e(src)}</th>" for src in budget["error_source"].values)
        body = "".join(
            f"<tr><td>{year}</td>" + "".join(f"<td>{v:.0%}</td>" for v in share.sel(year=year).values) + "</tr>"
            for year in years
        )
        parts += [
            "<h3>Uncertainty budget of the global land sink (share of posterior variance left by each source)</h3>",
            f"<table><tr><th>year</th>{head}</tr>{body}</table>",
        ]
    return parts


def _gcb_section(run: xr.Dataset, glob: str) -> list[str]:
    """Side-by-side with the Global Carbon Budget 2025, with the combined-uncertainty test."""
    post = run["land_sink_posterior"].sel(aggregate=glob)
    sd = run["land_sink_posterior_sd"].sel(aggregate=glob)
    implied, implied_sd = run[_GCB], run[f"{_GCB}_sd"]
    combined = np.sqrt(sd**2 + implied_sd**2)
    within = np.abs(post - implied) <= 2 * combined
    r_implied = float(np.corrcoef(post, implied)[0, 1])
    r_sland = float(np.corrcoef(post, run["gcb_land_sink"])[0, 1])
    within_own = float((np.abs(post - implied) <= 2 * sd).mean())
    rows = "".join(
        f"<tr><td>{int(y)}</td><td>{_pm(float(post.sel(year=y)), float(sd.sel(year=y)))}</td>"
        f"<td>{_pm(float(implied.sel(year=y)), float(implied_sd.sel(year=y)))}</td>"
        f"<td>{float(post.sel(year=y) - implied.sel(year=y)):+.2f}</td>"
        f"<td>{'yes' if bool(within.sel(year=y)) else '<b>no</b>'}</td>"
        f"<td>{float(run['gcb_land_sink'].sel(year=y)):.2f}</td>"
        f"<td>{_pm(float(run['gcb_dgvm_mean'].sel(year=y)), float(run['gcb_dgvm_sd'].sel(year=y)))}</td></tr>"
        for y in run["year"].values
    )
    return [
        "<h2>Comparison with the Global Carbon Budget 2025 (PgC yr<sup>-1</sup>, uptake positive)</h2>",
        f"<p>Correlation with the atmosphere-implied GCB sink S<sub>LAND</sub> + B<sub>IM</sub>: "
        f"<b>r = {r_implied:.2f}</b>; with the DGVM-based S<sub>LAND</sub>: r = {r_sland:.2f}. "
        f"Years within 2σ of S<sub>LAND</sub> + B<sub>IM</sub> using our posterior σ alone: {within_own:.0%}; "
        f"using the combined σ: {float(within.mean()):.0%}. The inversion takes its fossil, ocean and land-use "
        "priors from the same budget, so the combined σ overstates the independent uncertainty.</p>",
        "<details><summary>table by year</summary><table><tr><th>year</th><th>posterior</th>"
        "<th>GCB S<sub>LAND</sub>+B<sub>IM</sub></th><th>difference</th><th>within combined 2σ</th>"
        f"<th>GCB S<sub>LAND</sub></th><th>DGVM mean ± spread</th></tr>{rows}</table></details>",
    ]


def write_report(run: xr.Dataset, outdir: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` and ``figures/*.png`` for a run into ``outdir``, atomically.

    Figures (PNG, see :data:`FIGURES`): the annual global land sink and the three latitude
    bands with ±1σ/±2σ bands for prior and posterior (truth in an OSSE); monthly global land
    flux; uncertainty reduction by aggregate; the posterior anomaly of each region in the most
    anomalous year; observation fit at a few sites and normalized-residual histograms. The
    page is self-contained apart from the figures, which it references by relative path.

    Parameters
    ----------
    run : Dataset
        A run (docs/outputs.md); land sinks in PgC yr-1, uptake positive.
    outdir : path-like
        Output directory (created if missing); figures go to ``outdir/figures``.

    Returns
    -------
    Path
        ``outdir/report.html``.
    """
    validate_run(run)
    outdir = Path(outdir)
    figdir = outdir / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    figures = _draw_figures(run, figdir)
    page = _html(run, figures, outdir)
    return atomic_write(outdir / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))


def make_outputs(run: xr.Dataset, outdir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write every output of a run: ``run.nc``, ``land_sink.csv`` and the report.

    Parameters
    ----------
    run : Dataset
        A run (docs/outputs.md).
    outdir : path-like
        Output directory, created if missing.

    Returns
    -------
    dict of str to Path
        ``{"run": run.nc, "land_sink": land_sink.csv, "report": report.html}``. The CSV and
        the report are made from ``run.nc`` as read back, so they match what
        ``assim report run.nc`` would make.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    validate_run(run, source=f"run for {outdir}")
    run_path = write_run(run, outdir / "run.nc")
    saved = read_run(run_path)  # so CSV and report show exactly the file (incl. its history)
    return {
        "run": run_path,
        "land_sink": write_summary_csv(saved, outdir / "land_sink.csv"),
        "report": write_report(saved, outdir),
    }


def report_from_file(path: str | os.PathLike[str], outdir: str | os.PathLike[str] | None = None) -> Path:
    """Re-make the report of a saved run (``assim report RUN.nc``).

    Parameters
    ----------
    path : path-like
        A run file written by :func:`write_run`.
    outdir : path-like, optional
        Where to write ``report.html`` and ``figures/``; default: the run file's directory.

    Returns
    -------
    Path
        The written ``report.html``.
    """
    path = Path(path)
    return write_report(read_run(path), path.parent if outdir is None else outdir)
