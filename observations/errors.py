"""Observation error model: model-data mismatch by site category, k-sigma outlier flags, a summary table.

Total 1-sigma uncertainty = sqrt(measurement**2 + mismatch**2), with the mismatch (ppm) looked up by
the ``category`` coord. Defaults are the CarbonTracker/CTDAS site categories (Peters et al. 2007,
PNAS 104, 18925; CTDAS ``sites_weights`` tables): marine boundary layer 0.75, mixed 1.5, aircraft
2.0, continental (``land``) 2.5, tower 3.0 ppm. Whole-globe means (category ``global``) get 0 by
default: their error is the measurement/network uncertainty the file states.

Outliers are compared with a prior simulation: ``|value - simulated| > k * uncertainty`` sets
``flag`` = 2 and a ``flag_reason`` with the numbers. Nothing is dropped here; :func:`usable` is the
one explicit step that leaves flagged observations out, and :func:`summary` counts what was kept
and flagged per site and reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from observations.schema import FLAG_MEANINGS, ObservationError, validate

#: Model-data mismatch (ppm, 1 sigma) by category, as in CarbonTracker/CTDAS.
MISMATCH_PPM: dict[str, float] = {
    "mbl": 0.75,
    "mixed": 1.5,
    "aircraft": 2.0,
    "land": 2.5,
    "tower": 3.0,
    "global": 0.0,
}

#: Flag value set by :func:`flag_outliers`.
OUTLIER = 2


@dataclass(frozen=True)
class ErrorModel:
    """Mismatch table (ppm by category) and the outlier threshold ``k_sigma``.

    ``ErrorModel(mismatch={"mbl": 1.0})`` overrides one category and keeps the other defaults.
    """

    mismatch: Mapping[str, float] = field(default_factory=dict)
    k_sigma: float = 3.0

    def table(self) -> dict[str, float]:
        """The full mismatch table: defaults updated with ``mismatch``."""
        return {**MISMATCH_PPM, **self.mismatch}


def add_mismatch(ds: xr.Dataset, model: ErrorModel | None = None) -> xr.Dataset:
    """Add the model-data mismatch of each observation's category to its uncertainty.

    Parameters
    ----------
    ds : Observation Dataset (obs,), ``value`` in ppm
    model : ErrorModel, optional
        Default :class:`ErrorModel` ().

    Returns
    -------
    Dataset with ``uncertainty`` = sqrt(measurement**2 + mismatch**2) (ppm), and the parts kept as
    ``measurement_uncertainty`` and ``mismatch``.

    Raises
    ------
    ObservationError
        When ``value`` is not in ppm, the mismatch was already added, or a category has no entry.
    """
    ds = validate(ds)
    where = ds.attrs.get("source_file", "observations")
    if ds["value"].attrs["units"] != "ppm":
        raise ObservationError(
            f"{where}: the mismatch table is in ppm but 'value' is in {ds['value'].attrs['units']!r}; "
            "add mismatch only to CO2 mole fractions"
        )
    if "mismatch" in ds:
        raise ObservationError(f"{where}: mismatch already added (variable 'mismatch' exists); add it once")
    table = (model or ErrorModel()).table()
    categories = ds["category"].values.astype(str)
    unknown = sorted(set(categories.tolist()) - set(table))
    if unknown:
        raise ObservationError(
            f"{where}: no model-data mismatch for categories {unknown}; known {sorted(table)}; "
            "pass ErrorModel(mismatch={...})"
        )
    mismatch = np.array([table[c] for c in categories])
    measurement = ds["uncertainty"].values
    return ds.assign(
        uncertainty=("obs", np.hypot(measurement, mismatch), {"units": "ppm", "long_name": "total 1-sigma"}),
        measurement_uncertainty=("obs", measurement, {"units": "ppm", "long_name": "measurement 1-sigma"}),
        mismatch=("obs", mismatch, {"units": "ppm", "long_name": "model-data mismatch 1-sigma by category"}),
    ).assign_attrs(mismatch_table=repr(table))


def flag_outliers(ds: xr.Dataset, simulated: np.ndarray | xr.DataArray, k_sigma: float = 3.0) -> xr.Dataset:
    """Flag (never drop) observations further than ``k_sigma`` total sigmas from a prior simulation.

    Parameters
    ----------
    ds : Observation Dataset (obs,)
    simulated : array (obs,), same units as ``value``
        The prior model at each observation.
    k_sigma : float
        Threshold in units of ``uncertainty`` (3 in CTDAS).

    Returns
    -------
    Dataset with ``flag`` = 2 and ``flag_reason`` stating the residual and threshold where
    ``|value - simulated| > k_sigma * uncertainty`` (earlier flags are kept), and ``prior_residual``.
    """
    ds = validate(ds)
    simulated = np.asarray(simulated, dtype=float)
    if simulated.shape != (ds.sizes["obs"],) or not np.isfinite(simulated).all():
        raise ObservationError(
            f"simulated values must be finite with shape ({ds.sizes['obs']},), got {simulated.shape}"
            f"{' with non-finite values' if simulated.shape == (ds.sizes['obs'],) else ''}"
        )
    residual = ds["value"].values - simulated
    limit = k_sigma * ds["uncertainty"].values
    outlier = np.abs(residual) > limit
    flag = ds["flag"].values.copy() if "flag" in ds.coords else np.zeros(ds.sizes["obs"], np.int8)
    reason = ds["flag_reason"].values.astype(object) if "flag_reason" in ds.coords else np.full(flag.size, "", object)
    new = outlier & (flag == 0)
    units = ds["value"].attrs["units"]
    reason[new] = [
        f"outlier: |obs - prior| = {abs(r):.2f} {units} > {k_sigma:g} sigma = {m:.2f}"
        for r, m in zip(residual[new], limit[new], strict=True)
    ]
    flag[new] = OUTLIER
    out = ds.assign_coords(flag=("obs", flag.astype(np.int8)), flag_reason=("obs", reason.astype(str)))
    out = out.assign(prior_residual=("obs", residual, {"units": units, "long_name": "value minus prior simulation"}))
    return validate(out.assign_attrs(outlier_k_sigma=k_sigma))


def usable(ds: xr.Dataset) -> xr.Dataset:
    """The observations with ``flag`` 0 (all of them when there is no ``flag``): the one explicit drop."""
    if "flag" not in ds.coords:
        return ds
    keep = ds["flag"].values == 0
    if not keep.any():
        raise ObservationError(f"{ds.attrs.get('source_file', 'observations')}: every observation is flagged")
    return ds.isel(obs=np.flatnonzero(keep)).assign_attrs(n_flagged_left_out=int((~keep).sum()))


def summary(ds: xr.Dataset) -> pd.DataFrame:
    """Counts per site and reason: columns ``site``, ``reason`` (``usable`` or the flag meaning), ``count``."""
    flag = ds["flag"].values if "flag" in ds.coords else np.zeros(ds.sizes["obs"], int)
    reason = np.array([FLAG_MEANINGS.get(int(f), f"flag_{int(f)}") for f in flag])
    table = pd.DataFrame({"site": ds["site"].values.astype(str), "reason": reason})
    return table.groupby(["site", "reason"]).size().rename("count").reset_index()
