"""Global Carbon Budget 2025 tables (Friedlingstein et al. 2025, ESSD) as budget terms with uncertainty.

Tables read (../shared/data/global_carbon_budget, extracted from the GCB2025 v1.0 workbook):

* ``gcb2025_global_budget_GtC.csv`` / ``gcb2025_historical_budget_1750-2024_GtC.csv``: one column
  per budget term (:data:`TERMS`);
* ``gcb2025_terrestrial_sink_DGVMs_GtC.csv``, ``gcb2025_ocean_sink_models_products_GtC.csv``,
  ``gcb2025_atmospheric_growth_and_inversions_GtC.csv``: one term, one column per estimate
  (the GCB value, individual models/products/inversions, their mean and spread).

**Sign (the GCB's, kept):** emissions and the atmospheric growth are positive as given; sinks
(``ocean_sink``, ``land_sink``, ``cement_carbonation_sink``) are positive = *uptake* from the
atmosphere; ``budget_imbalance`` = E_FOS + E_LUC - (G_ATM + S_OCEAN + S_LAND). This is the opposite
of the inversion's internal flux sign (positive to the atmosphere): negate a sink before using it
as a flux.

**Uncertainty (1 sigma):** the workbook gives no per-year uncertainty; its Summary sheet states
(``All uncertainties represent ± 1 sigma``): fossil ±5 %, land-use change ±0.7 GtC/yr, atmospheric
growth ~0.2 GtC/yr (from 1980), ocean sink ±0.4 GtC/yr, land sink ±0.5 GtC/yr
(:data:`TERM_UNCERTAINTY`). The cement carbonation sink has no stated value: the fossil 5 % is
applied (the GCB nets it from fossil emissions). The imbalance gets the root-sum-square of the five
terms (independent errors). Individual models, products and inversions get the spread of their
group that year (the table's own ``*spread*``/``sd`` column, or the sample standard deviation across
the group's columns; the table's median spread in a year with one member).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from observations._build import record_dataset
from observations._text import (
    YEARS,
    fail,
    integers,
    normalise,
    numbers,
    period_times,
    read_text,
    require_unique,
    require_width,
    split_rows,
)
from observations.noaa import GLOBAL, site_location
from observations.readers import name_matches, reader
from observations.units import convert

#: Units of every budget value returned.
UNITS = "PgC yr-1"

#: Largest plausible global budget term, GtC/yr (fossil emissions are ~10).
PLAUSIBLE_GTC_PER_YEAR = 100.0

#: Budget terms of the global table.
TERMS = (
    "fossil_emissions_excl_carbonation",
    "land_use_change_emissions",
    "atmospheric_growth",
    "ocean_sink",
    "land_sink",
    "cement_carbonation_sink",
    "budget_imbalance",
)

#: 1-sigma uncertainty per term: ("absolute", GtC/yr) or ("relative", fraction); see the module docstring.
TERM_UNCERTAINTY = {
    "fossil_emissions_excl_carbonation": ("relative", 0.05),
    "cement_carbonation_sink": ("relative", 0.05),
    "land_use_change_emissions": ("absolute", 0.7),
    "atmospheric_growth": ("absolute", 0.2),
    "ocean_sink": ("absolute", 0.4),
    "land_sink": ("absolute", 0.5),
}

#: Term of each single-term table, recognised by a word of the file name.
_TABLE_TERMS = {"terrestrial": "land_sink", "ocean": "ocean_sink", "atmospheric_growth": "atmospheric_growth"}

SIGN_CONVENTION = (
    "GCB sign: emissions and atmospheric growth positive; sinks (ocean_sink, land_sink, cement_carbonation_sink) "
    "positive = uptake from the atmosphere; budget_imbalance = E_FOS + E_LUC - (G_ATM + S_OCEAN + S_LAND)"
)
UNCERTAINTY_SOURCE = (
    "1 sigma from the GCB2025 v1.0 workbook Summary sheet (Friedlingstein et al. 2025, ESSD): fossil 5 %, "
    "LUC 0.7, growth 0.2 (from 1980; before 1980 NOAA's growth-rate uncertainty is ~0.6 PgC/yr, see "
    "co2_gr_gl.csv), ocean 0.4, land 0.5 GtC/yr; carbonation 5 % (assumed, as fossil); imbalance = "
    "root-sum-square of the five terms; individual estimates = their group's spread that year (the median "
    "spread when a year has one member)"
)


def stated_uncertainty(term: str, value: np.ndarray) -> np.ndarray:
    """1-sigma (GtC/yr) of a GCB term's central estimate; see :data:`TERM_UNCERTAINTY`."""
    kind, size = TERM_UNCERTAINTY[term]
    return np.abs(value) * size if kind == "relative" else np.full(value.shape, size)


def _is_spread(name: str) -> bool:
    n = normalise(name)
    return "spread" in n or n == "sd" or n.startswith("sd_") or n.endswith("_sd")


def _is_official(name: str) -> bool:
    """The GCB's own estimate (``GCB``, ``GCB_unadjusted``) or GRESO: they get the stated uncertainty."""
    return normalise(name).startswith("gcb") or normalise(name) == "greso"


def _is_mean(name: str) -> bool:
    return "mean" in normalise(name) or "average" in normalise(name)


def _groups(names: list[str]) -> list[tuple[list[str], str | None]]:
    """Split estimate columns into groups closed by a spread column (models | spread, products | sd)."""
    groups, current = [], []
    for name in names:
        if _is_spread(name):
            groups.append((current, name))
            current = []
        else:
            current.append(name)
    if current:
        groups.append((current, None))
    return groups


@reader("gcb", name_matches(r"gcb|global_carbon_budget"))
def read_gcb(path: Path | str, *, term: str | None = None) -> xr.Dataset:
    """Read a Global Carbon Budget table as budget observations (one per year and column).

    Parameters
    ----------
    path : a GCB2025 CSV (see the module docstring); GtC/yr, blank = not estimated.
    term : str, optional
        Term of a single-term table (``land_sink``, ``ocean_sink``, ``atmospheric_growth``);
        default from the file name.

    Returns
    -------
    Observation Dataset (obs,)
        ``value``/``uncertainty`` in PgC yr-1 (GCB sign, see ``attrs["sign_convention"]``),
        platform ``budget``, category ``global`` (NaN latitude/longitude), ``site`` and coord
        ``estimate`` = the column name, coord ``term`` = the budget term; ``time`` mid-year.
    """
    path = Path(path)
    rows = split_rows(path, read_text(path), delimiter=",", header=True)
    header = rows.header
    if normalise(header[0]) != "year" or len(header) < 2:
        raise fail(path, f"expected a 'year' column then budget columns, found {header[:3]}", 1)
    require_width(rows, len(header), f"one per header name ({len(header)})")
    year = integers(rows, 0, "year", *YEARS)
    require_unique(rows, year, "year")
    table = {name: numbers(rows, j + 1, name, na=("", "NA", "NaN")) for j, name in enumerate(header[1:])}
    for name, column in table.items():
        bad = np.flatnonzero(np.abs(column) > PLAUSIBLE_GTC_PER_YEAR)
        if bad.size:
            raise fail(
                path,
                f"column {name!r}: {column[bad[0]]:g} GtC/yr is not a plausible global budget term "
                f"(|value| <= {PLAUSIBLE_GTC_PER_YEAR:g}); are the units GtC/yr (not MtC or GtCO2)?",
                int(rows.lines[bad[0]]),
            )
    names = [normalise(n) for n in header[1:]]
    if set(names) <= set(TERMS):
        columns = dict(zip(names, table.values(), strict=True))
        sigma = {t: stated_uncertainty(t, v) for t, v in columns.items() if t in TERM_UNCERTAINTY}
        if "budget_imbalance" in columns:
            sigma["budget_imbalance"] = np.sqrt(sum(sigma[t] ** 2 for t in TERMS[:5] if t in sigma))
        terms = {t: t for t in columns}
    else:
        term = term or next((t for word, t in _TABLE_TERMS.items() if word in normalise(path.stem)), None)
        if term is None:
            raise fail(
                path, f"cannot tell the budget term from the file name; pass term= one of {list(TERM_UNCERTAINTY)}"
            )
        columns, sigma, terms = {}, {}, {}
        for group, spread in _groups(header[1:]):
            individual = [c for c in group if not _is_official(c) and not _is_mean(c)] or group
            spread_values = table[spread] if spread else _sample_sd(np.column_stack([table[c] for c in individual]))
            if np.isfinite(spread_values).any():  # a year with one member: the table's median spread
                spread_values = np.where(np.isnan(spread_values), np.nanmedian(spread_values), spread_values)
            for name in group:
                columns[name], terms[name] = table[name], term
                sigma[name] = stated_uncertainty(term, table[name]) if _is_official(name) else spread_values
    value = np.concatenate([columns[c] for c in columns])
    unc = np.concatenate([sigma[c] if c in sigma else np.full(len(rows), np.nan) for c in columns])
    estimate = np.repeat(list(columns), len(rows))
    term_of = np.repeat([terms[c] for c in columns], len(rows))
    years = np.tile(year, len(columns))
    keep = ~np.isnan(value)
    no_unc = keep & ~(unc > 0)
    if no_unc.any():
        i = int(np.flatnonzero(no_unc)[0])
        raise fail(
            path,
            f"{estimate[i]} {years[i]}: no uncertainty can be given (its group's spread is missing or zero); "
            "drop the column or fill its spread",
            int(rows.lines[i % len(rows)]),
        )
    where = site_location(path, GLOBAL, "budget") | {"site": estimate[keep]}
    return record_dataset(
        path,
        "budget",
        value=convert(value[keep], "GtC yr-1", UNITS),
        uncertainty=convert(unc[keep], "GtC yr-1", UNITS),
        units=UNITS,
        time=tuple(t[keep] for t in period_times(years)),
        where=where,
        coords={"term": term_of[keep], "estimate": estimate[keep]},
        attrs={
            "quantity": "carbon_budget_term",
            "averaging_period": "year",
            "sign_convention": SIGN_CONVENTION,
            "uncertainty_source": UNCERTAINTY_SOURCE,
            "source": "Global Carbon Budget 2025 v1.0 (Friedlingstein et al. 2025, ESSD), CC BY 4.0",
        },
    )


def _sample_sd(members: np.ndarray) -> np.ndarray:
    """Per-row sample standard deviation across the non-missing columns (NaN with fewer than 2)."""
    count = np.sum(~np.isnan(members), axis=1)
    mean = np.nansum(members, axis=1) / np.maximum(count, 1)
    ss = np.nansum((members - mean[:, None]) ** 2, axis=1)
    return np.where(count >= 2, np.sqrt(ss / np.maximum(count - 1, 1)), np.nan)
