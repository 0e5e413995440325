"""Write files in the documented ObsPack layout from arrays (test fixtures and benchmarks).

The layout, variable names, types and attributes copy the GLOBALVIEWplus files (ObsPack
documentation, gml.noaa.gov/ccgg/obspack/documentation.html, and the real
``ch4_esp_surface-flask_2_representative.nc`` in ../shared/data/obspack_format): ``value`` is a
float32 dry-air mole fraction in ``mol mol-1``, fill -1e34; ``time`` int seconds since 1970;
``qcflag`` char(obs, 10); ``obspack_id`` char(obs, 200) = ``obspack_name~dataset_name~obspack_num``.
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np

from observations._text import atomic_path

FILL = -1e34

#: Name of the synthetic ObsPack product written by :func:`write_obspack`.
OBSPACK_NAME = "obspack_co2_1_GLOBALVIEWplus_synthetic_fixture"


def _char(values: np.ndarray, width: int) -> np.ndarray:
    return netCDF4.stringtochar(np.asarray(values, dtype=f"S{width}"))


def write_obspack(
    path: Path | str,
    *,
    value: np.ndarray,
    time: np.ndarray,
    site: str = "MLO",
    project: str = "surface-insitu",
    latitude: np.ndarray | float = 19.536,
    longitude: np.ndarray | float = -155.576,
    altitude: np.ndarray | float = 3437.0,
    intake_height: np.ndarray | float = 40.0,
    value_unc: np.ndarray | None = None,
    qcflag: np.ndarray | None = None,
    obs_flag: np.ndarray | None = None,
    units: str = "mol mol-1",
    with_ids: bool = True,
) -> Path:
    """Write a CO2 ObsPack file (atomically) and return its path.

    Parameters
    ----------
    value : ndarray (obs,)
        Mole fraction in ``units`` (default ``mol mol-1``, as ObsPack); NaN is written as the fill value.
    time : ndarray (obs,) datetime64
        UTC sample times (start of the averaging interval).
    value_unc, qcflag, obs_flag : ndarray (obs,), optional
        Written when given (``qcflag`` strings like ``"..."``, ``obs_flag`` 1/0).
    with_ids : bool
        Write the 200-character ``obspack_id`` (large: 200 bytes a record).
    """
    path = Path(path)
    value = np.asarray(value, dtype=float)
    n = value.size
    dataset = f"co2_{site.lower()}_{project}_1_representative"
    with atomic_path(path) as tmp, netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.createDimension("obs", None)
        nc.createDimension("calendar_components", 6)
        nc.createDimension("string_of_10chars", 10)
        nc.createDimension("string_of_200chars", 200)
        chunk = max(1, min(n, 1 << 16))  # records per chunk: one chunk per record would make reads crawl

        def create(name: str, dtype: str, dims: tuple[str, ...], **kwargs) -> netCDF4.Variable:
            width = [len(nc.dimensions[d]) for d in dims[1:]]
            return nc.createVariable(name, dtype, dims, chunksizes=(chunk, *width), **kwargs)

        seconds = (np.asarray(time, "datetime64[s]") - np.datetime64("1970-01-01T00:00:00", "s")).astype(np.int64)
        t = create("time", "i4", ("obs",))
        t.setncatts(
            {
                "long_name": "sample_time_in_seconds_since_january_1_1970",
                "units": "seconds since 1970-01-01T00:00:00Z",
                "comment": "POSIX time. Time-averaged values are reported at the beginning of the averaging interval.",
            }
        )
        t[:] = seconds
        v = create("value", "f4", ("obs",), fill_value=np.float32(FILL))
        v.setncatts({"long_name": "measured_mole_fraction_of_trace_gas_in_dry_air", "units": units})
        v[:] = np.where(np.isnan(value), FILL, value)
        if value_unc is not None:
            u = create("value_unc", "f4", ("obs",), fill_value=np.float32(FILL))
            u.setncatts({"long_name": "estimated_uncertainty_in_reported_value", "units": units})
            u[:] = np.where(np.isnan(value_unc), FILL, value_unc)
        for name, data, std in (
            ("latitude", latitude, "latitude"),
            ("longitude", longitude, "longitude"),
            ("altitude", altitude, "altitude"),
            ("intake_height", intake_height, None),
        ):
            var = create(name, "f4", ("obs",), fill_value=np.float32(FILL))
            var.setncatts(
                {"units": {"latitude": "degrees_north", "longitude": "degrees_east"}.get(name, "m")}
                | ({"standard_name": std} if std else {})
            )
            var[:] = np.broadcast_to(np.asarray(data, dtype=float), (n,))
        if qcflag is not None:
            q = create("qcflag", "S1", ("obs", "string_of_10chars"))
            q.setncatts({"long_name": "quality_control_flag", "missing_value": "NA"})
            q[:] = _char(qcflag, 10)
        if obs_flag is not None:
            f = create("obs_flag", "i4", ("obs",), fill_value=np.int32(-9))
            f.setncatts({"long_name": "obs_flag", "units": "binary", "comment": "1: large spatial scale; 0: local"})
            f[:] = np.asarray(obs_flag, dtype=np.int32)
        number = create("obspack_num", "i4", ("obs",))
        number.long_name = "unique_ObsPack_observation_number"
        number[:] = np.arange(1, n + 1, dtype=np.int32)
        if with_ids:
            ids = create("obspack_id", "S1", ("obs", "string_of_200chars"))
            ids.long_name = "unique_ObsPack_identification_string"
            ids[:] = _char([f"{OBSPACK_NAME}~{dataset}~{i}" for i in range(1, n + 1)], 200)
        nc.setncatts(
            {
                "site_code": site.upper(),
                "dataset_name": dataset,
                "dataset_parameter": "co2",
                "dataset_project": project,
                "dataset_calibration_scale": "WMO CO2 X2019",
                "lab_1_abbr": "NOAA",
                "obspack_name": OBSPACK_NAME,
                "obspack_citation": "synthetic fixture written by observations.synthetic.write_obspack",
                "Conventions": "CF-1.6",
            }
        )
    return path


def write_oco2_lite(
    path: Path | str,
    *,
    xco2: np.ndarray,
    time: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    averaging_kernel: np.ndarray,
    pressure_weight: np.ndarray,
    apriori: np.ndarray,
    pressure_levels: np.ndarray,
    uncertainty: np.ndarray | float = 0.5,
    quality_flag: np.ndarray | int = 0,
) -> Path:
    """Write an OCO-2 L2 Lite-layout file (atomically): dims ``sounding_id`` and ``levels`` (space to surface).

    Profiles are (sounding, level) arrays or one (level,) profile broadcast to every sounding.
    Variable names, dims and units follow the OCO-2 L2 Lite FP files (``oco2_LtCO2_*.nc4``).
    """
    path = Path(path)
    xco2 = np.asarray(xco2, dtype=np.float32)
    n = xco2.size

    def profile(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return np.broadcast_to(x, (n, x.shape[-1])).copy()

    seconds = (np.asarray(time, "datetime64[ms]") - np.datetime64("1970-01-01", "ms")).astype(np.float64) / 1e3
    with atomic_path(path) as tmp, netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.createDimension("sounding_id", n)
        nc.createDimension("levels", profile(pressure_levels).shape[1])
        specs = {
            "sounding_id": ("i8", ("sounding_id",), np.arange(n, dtype=np.int64) + 2015013107364301, {}),
            "time": ("f8", ("sounding_id",), seconds, {"units": "seconds since 1970-01-01 00:00:00"}),
            "latitude": ("f4", ("sounding_id",), latitude, {"units": "degrees_north"}),
            "longitude": ("f4", ("sounding_id",), longitude, {"units": "degrees_east"}),
            "xco2": ("f4", ("sounding_id",), xco2, {"units": "ppm", "long_name": "Bias-corrected XCO2"}),
            "xco2_uncertainty": ("f4", ("sounding_id",), np.broadcast_to(uncertainty, (n,)), {"units": "ppm"}),
            "xco2_quality_flag": (
                "i1",
                ("sounding_id",),
                np.broadcast_to(quality_flag, (n,)),
                {"comment": "0=Good, 1=Bad"},
            ),
            "xco2_averaging_kernel": ("f4", ("sounding_id", "levels"), profile(averaging_kernel), {"units": "1"}),
            "pressure_weight": ("f4", ("sounding_id", "levels"), profile(pressure_weight), {"units": "1"}),
            "co2_profile_apriori": ("f4", ("sounding_id", "levels"), profile(apriori), {"units": "ppm"}),
            "pressure_levels": ("f4", ("sounding_id", "levels"), profile(pressure_levels), {"units": "hPa"}),
        }
        for name, (dtype, dims, data, attrs) in specs.items():
            var = nc.createVariable(name, dtype, dims)
            var.setncatts(attrs)
            var[:] = data
        nc.setncatts({"title": "synthetic OCO-2 L2 Lite-layout fixture", "Conventions": "CF-1.6"})
    return path
