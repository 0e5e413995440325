"""OCO-2 Lite netCDF (``oco2_LtCO2_*.nc4``) and binned subsets of it: XCO2 with what an operator needs.

Lite layout (OCO-2 Data Product User's Guide, L2 Lite FP): dimension ``sounding_id`` (or ``time``
in binned subsets) and ``levels`` (20, space to surface); ``time`` (seconds since 1970-01-01 UTC),
``latitude``/``longitude`` (``lat``/``lon`` in subsets), ``xco2`` and ``xco2_uncertainty`` (ppm),
``xco2_quality_flag`` (0 = good), ``xco2_averaging_kernel`` (normalised column kernel),
``pressure_weight`` (``pressure_weights``; sums to 1), ``co2_profile_apriori`` (ppm) and
``pressure_levels`` (hPa), each (sounding, level). The column a model would see is
``xco2_model = sum_l w_l [a_l x_l + (1 - a_l) x_apriori_l]`` (Connor et al. 2008): the kernel,
weights, a priori and pressures are kept as (obs, level) variables for the satellite operator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from observations._build import VERSION, check_plausible
from observations._text import fail
from observations.readers import reader
from observations.schema import observation_dataset

#: Variable name in the Lite file -> alternatives in binned subsets.
NAMES = {
    "latitude": ("latitude", "lat"),
    "longitude": ("longitude", "lon"),
    "pressure_weight": ("pressure_weight", "pressure_weights"),
    "xco2_averaging_kernel": ("xco2_averaging_kernel",),
    "co2_profile_apriori": ("co2_profile_apriori",),
    "pressure_levels": ("pressure_levels",),
    "xco2": ("xco2",),
    "xco2_uncertainty": ("xco2_uncertainty",),
    "time": ("time",),
}
#: Kept (obs, level) variables.
PROFILE = ("xco2_averaging_kernel", "pressure_weight", "co2_profile_apriori", "pressure_levels")


def _is_oco2(path: Path, head: bytes) -> bool:
    return head[:4] in (b"CDF\x01", b"CDF\x02", b"\x89HDF") and any(w in path.name.lower() for w in ("oco2", "ltco2"))


def _get(path: Path, nc: xr.Dataset, name: str) -> np.ndarray:
    for alias in NAMES[name]:
        if alias in nc.variables:
            return nc[alias].values
    raise fail(
        path, f"variable {name!r} (or {list(NAMES[name][1:])}) is missing; an OCO-2 Lite file needs {list(NAMES)}"
    )


@reader("oco2", _is_oco2)
def read_oco2_lite(path: Path | str, *, keep_rejected: bool = False) -> xr.Dataset:
    """Read OCO-2 Lite soundings: XCO2 (ppm) with averaging kernel, pressure weights and a priori.

    Parameters
    ----------
    keep_rejected : bool
        Keep soundings with ``xco2_quality_flag`` != 0 (``flag`` 1); by default they are left out
        and counted in ``attrs["n_rejected"]``. Files without the flag (filtered subsets) keep all.

    Returns
    -------
    Observation Dataset (obs,) with platform ``satellite``, category ``satellite``, altitude NaN
    (a column), site ``OCO2``; plus ``xco2_averaging_kernel``, ``pressure_weight``,
    ``co2_profile_apriori`` (ppm) and ``pressure_levels`` (hPa) over (obs, level), level 0 = top.
    """
    path = Path(path)
    try:
        nc = xr.open_dataset(path, decode_times=False, mask_and_scale=True)
    except (OSError, ValueError) as err:
        raise fail(path, f"not a readable netCDF file ({err}); the file is truncated or of another format") from err
    with nc:
        xco2 = _get(path, nc, "xco2").astype(float).ravel()
        n = xco2.size
        columns = {
            name: _get(path, nc, name).astype(float).ravel()
            for name in ("xco2_uncertainty", "latitude", "longitude", "time")
        }
        profiles = {name: np.atleast_2d(_get(path, nc, name).astype(float)) for name in PROFILE}
        quality = nc["xco2_quality_flag"].values.ravel() if "xco2_quality_flag" in nc.variables else np.zeros(n)
        units = nc[NAMES["xco2"][0]].attrs.get("units", "ppm")
        time_units = nc["time"].attrs.get("units", "")
        attrs = {k: str(v) for k, v in nc.attrs.items()}
    for name, column in {**columns, "xco2_quality_flag": quality}.items():
        if column.shape != (n,):
            raise fail(path, f"variable {name!r} has {column.size} values but 'xco2' has {n}")
    for name, profile in profiles.items():
        if profile.shape[0] != n:
            raise fail(path, f"variable {name!r} has shape {profile.shape}, expected ({n}, levels)")
    if units != "ppm":
        raise fail(path, f"variable 'xco2' has units {units!r}, expected 'ppm'")
    if not time_units.startswith("seconds since 1970-01-01"):
        raise fail(path, f"variable 'time' has units {time_units!r}, expected 'seconds since 1970-01-01'")
    check_plausible(path, xco2, "co2", "xco2")
    weights = profiles["pressure_weight"]
    bad = np.flatnonzero(~(np.abs(weights.sum(axis=1) - 1.0) < 0.01))
    if bad.size:
        raise fail(
            path, f"variable 'pressure_weight' of sounding {bad[0]} sums to {weights[bad[0]].sum():.4f}, expected 1"
        )
    rejected = quality != 0
    missing = np.isnan(xco2) | np.isnan(columns["time"])
    keep = ~missing & (keep_rejected | ~rejected)
    if not keep.any():
        raise fail(path, "no usable soundings (all missing or xco2_quality_flag != 0)")
    seconds = columns["time"][keep]
    level_vars = {
        name: (
            ("obs", "level"),
            profiles[name][keep],
            {"units": {"co2_profile_apriori": "ppm", "pressure_levels": "hPa"}.get(name, "1")},
        )
        for name in PROFILE
    }
    return observation_dataset(
        xco2[keep],
        columns["xco2_uncertainty"][keep],
        check=False,  # validated once by the reader wrapper
        units="ppm",
        time=(seconds * 1e9).astype("int64").astype("datetime64[ns]"),
        latitude=columns["latitude"][keep],
        longitude=columns["longitude"][keep],
        altitude=np.nan,
        site="OCO2",
        platform="satellite",
        category="satellite",
        coords={
            "flag": rejected[keep].astype(np.int8),
            "flag_reason": np.where(rejected[keep], "xco2_quality_flag != 0", ""),
        },
        data_vars=level_vars,
        attrs={
            "source_file": path.name,
            "history": f"read by observations.oco2 (assim {VERSION})",
            "quantity": "xco2",
            "level_order": "level 0 = top of atmosphere, last = surface (Lite orientation)",
            "n_missing": int(missing.sum()),
            "n_rejected": int((rejected & ~missing).sum()),
            "scale": attrs.get("scale", "see xco2 long_name (X2007 for B10/B11 Lite files)"),
            **{k: attrs[k] for k in ("title", "identifier_product_doi", "BuildId") if k in attrs},
        },
    )
