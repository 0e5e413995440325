"""Property-based bad-input tests: every reader ends in a valid Dataset or an ObservationError naming the file.

Each case mutates a valid file (truncation, dropped/duplicated/swapped lines, sentinel and NaN
storms, wrong units, garbage tokens, other encodings, NUL bytes, empty files) or writes a netCDF
file from drawn arrays. When a read succeeds, values are checked against the source (text: the
value is a number on the line it came from; netCDF: the stored value times the stated units factor)
and against the plausible range, so a silently wrong value fails the test as surely as a raw
library traceback does.

Default run: the ``fuzz-quick`` profile (a few dozen cases per reader). Full run (>= 1000 cases per
reader): ``HYPOTHESIS_PROFILE=fuzz-full pytest tests/test_observations_fuzz.py``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import observations
from observations.synthetic import write_obspack, write_oco2_lite
from observations.units import convert

settings.register_profile("fuzz-quick", max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
settings.register_profile("fuzz-full", max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
FUZZ = settings.get_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "fuzz-quick")
    if os.environ.get("HYPOTHESIS_PROFILE", "").startswith("fuzz")
    else "fuzz-quick"
)

STATION = (
    "# dataset_calibration_scale : WMO CO2 X2007\n# value:units : micromol mol-1\n"
    "# site_code year month day hour minute second value value_unc nvalue latitude longitude altitude elevation "
    "intake_height instrument qcflag\n"
    "SPO 2001 1 1 0 0 0 -999.99 -99.99 0 -89.98 -24.8 2821.0 2810.0 11.0 NA *..\n"
    "SPO 2001 2 1 0 0 0 368.10 0.20 27 -89.98 -24.8 2821.0 2810.0 11.0 NA ...\n"
    "SPO 2001 3 1 0 0 0 368.20 0.00 1 -89.98 -24.8 2821.0 2810.0 11.0 NA ...\n"
    "SPO 2001 4 1 0 0 0 375.00 0.30 12 -89.98 -24.8 2821.0 2810.0 11.0 NA X..\n"
)
#: kind -> (file name, valid content, helper files {name: content}, values are ppm mole fractions)
TEXT_CASES = {
    "noaa_csv": (
        "co2_mm_mlo.csv",
        "month,decimal_date,average_ppm,deseasonalized_ppm,ndays,sdev_days_ppm,unc_mon_mean_ppm\n"
        "1975-12,1975.958,330.76,331.73,-01,-9.99,0.00\n2023-11,2023.875,420.46,420.9,20,0.3,0.10\n"
        "2023-12,2023.958,421.86,421.2,21,0.4,0.12\n2024-01,2024.042,422.80,421.6,19,0.5,0.13\n",
        {},
        True,
    ),
    "noaa_station": ("co2_spo_surface-insitu_1_ccgg_MonthlyData.txt", STATION, {}, True),
    "noaa_flask_month": (
        "co2_asc_surface-flask_1_ccgg_month.txt",
        "# data_fields: site year month value\nASC 1979 8 337.44\nASC 1979 9 337.31\nASC 1979 10 337.32\n",
        {},
        True,
    ),
    "station_matrix": (
        "SO_CO2_monthly.txt",
        "year month SPO_NOAA_insitu CGO_CSIRO_flask\n1998 1 362.3 NA\n1998 2 362.4 362.0\n1998 3 362.5 362.1\n",
        {
            "SO_CO2_locations.txt": "record lat lon alt\nSPO_NOAA_insitu -89.98 -24.8 2810\n"
            "CGO_CSIRO_flask -40.683 144.69 164\n"
        },
        True,
    ),
    "gcb": (
        "gcb2025_global_budget_GtC.csv",
        "year,fossil_emissions_excl_carbonation,land_use_change_emissions,atmospheric_growth,ocean_sink,land_sink,"
        "cement_carbonation_sink,budget_imbalance\n2023,10.0,1.0,6.0,3.0,2.0,0.2,-0.2\n2024,10.5,1.25,7.9,3.4,1.9,0.22,\n",
        {},
        False,
    ),
    "fluxnet": (
        "FLX_AU-Xyz_FLUXNET2015_SUBSET_MM_2010-2010_1-4.csv",
        "TIMESTAMP,NEE_VUT_REF,NEE_VUT_REF_QC,NEE_VUT_REF_RANDUNC,NEE_VUT_25,NEE_VUT_75\n"
        "201001,-1.5,0.9,0.3,-1.9,-1.1\n201002,-9999,-9999,-9999,-9999,-9999\n201003,2.0,0.7,-9999,1.9,2.1\n",
        {
            "FluxNET_sites.csv": "SITE_ID,SITE_NAME,FLUXNET2015,FLUXNET-CH4,LOCATION_LAT,LOCATION_LONG,"
            'LOCATION_ELEV,IGBP,MAT,MAP\nAU-Xyz,"Somewhere, Australia",CC-BY-4.0,,-12.5,131.1,20,SAV,,\n'
        },
        False,
    ),
}

TOKENS = st.sampled_from(
    ["NaN", "nan", "inf", "-inf", "", "-999.99", "-9999", "-99.99", "NA", "abc", "0", "-1", "-0.5", "1e300",
     "4.1e-4", "410000", "3.7e-7", "13", "2024-13", "1.0.0", "é", "\t", ",", "9" * 30]
)  # fmt: skip


@st.composite
def mutations(draw, text: str) -> bytes:
    """A valid file after up to three damaging edits."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 3))):
        op = draw(
            st.sampled_from(
                ["token", "token", "drop", "dup", "swap", "truncate", "encoding", "nul", "garbage", "empty"]
            )
        )
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if not lines:
            break
        if op == "token":
            tokens = re.split(r"([\s,]+)", lines[i])
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[j] = draw(st.one_of(TOKENS, st.text(max_size=6)))
            lines[i] = "".join(tokens)
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            k = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[k] = lines[k], lines[i]
        elif op == "truncate":
            joined = "\n".join(lines)
            lines = joined[: draw(st.integers(0, len(joined)))].splitlines()
        elif op == "empty":
            return b""
        elif op == "garbage":
            return draw(st.binary(max_size=300))
        elif op in ("encoding", "nul"):
            data = "\n".join(lines).encode("utf-8")
            if op == "nul":
                k = draw(st.integers(0, len(data)))
                return data[:k] + b"\x00" + data[k:]
            return ("\n".join(lines) + "\n# é").encode(
                draw(st.sampled_from(["latin-1", "utf-16", "cp1252"])), errors="replace"
            )
    return ("\n".join(lines) + "\n").encode()


def numbers_on(line: str) -> list[float]:
    out = []
    for token in re.split(r"[\s,]+", line):
        try:
            out.append(float(token))
        except ValueError:
            continue
    return out


def check_outcome(kind: str, path: Path, ppm: bool) -> None:
    """Read ``path``: a valid, source-faithful Dataset or an ObservationError naming the file."""
    try:
        ds = observations.read(path, kind=kind)
    except observations.ObservationError as err:
        assert path.name in str(err) or any(p.name in str(err) for p in path.parent.iterdir()), str(err)
        return
    values = ds["value"].values
    assert np.isfinite(values).all() and (ds["uncertainty"].values > 0).all()
    if ppm:
        assert ((values >= 100) & (values <= 2000)).all(), values
    if "source_line" in ds.coords:
        lines = path.read_bytes().decode("utf-8-sig").splitlines()
        for value, line in zip(values, ds["source_line"].values, strict=True):
            assert any(np.isclose(value, x, rtol=1e-12) for x in numbers_on(lines[line - 1])), (value, lines[line - 1])


@pytest.mark.parametrize("kind", sorted(TEXT_CASES))
def test_text_readers_survive_bad_input(kind):
    name, text, helpers, ppm = TEXT_CASES[kind]

    @FUZZ
    @given(data=mutations(text))
    def case(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as folder:
            for helper, content in helpers.items():
                (Path(folder) / helper).write_text(content)
            path = Path(folder) / name
            path.write_bytes(data)
            check_outcome(kind, path, ppm)

    case()


def read_truncated(path: Path, truncate: int | None):
    """Read ``path`` (first cut to ``truncate`` bytes): the Dataset, or None after an error naming the file."""
    if truncate is not None:
        path.write_bytes(path.read_bytes()[:truncate])
    try:
        return observations.read(path)
    except observations.ObservationError as err:
        assert path.name in str(err), str(err)
        return None


UNITS = {"mol mol-1": 1e6, "micromol mol-1": 1.0, "ppm": 1.0, "nmol mol-1": 1e-3, "ppb": 1e-3}
FLOATS = st.one_of(st.floats(300, 500), st.sampled_from([np.nan, np.inf, -1.0, 0.0, 4.1e-4, 4.1e5, 1e30]))


@FUZZ
@given(
    n=st.integers(1, 12),
    data=st.data(),
    declared=st.sampled_from([*UNITS, "", "furlong", "1", "K"]),
    actual=st.sampled_from(list(UNITS)),
    truncate=st.one_of(st.none(), st.integers(0, 20000)),
)
def test_obspack_reader_survives_bad_input(n, data, declared, actual, truncate):
    ppm = np.array(data.draw(st.lists(FLOATS, min_size=n, max_size=n)))
    seconds = np.array(data.draw(st.lists(st.integers(0, 2_000_000_000), min_size=n, max_size=n)))
    with tempfile.TemporaryDirectory() as folder:
        path = write_obspack(
            Path(folder) / "co2_fzz_surface-flask_1_representative.nc",
            value=ppm / UNITS[actual],
            time=seconds.astype("datetime64[s]"),
            latitude=np.array(data.draw(st.lists(st.floats(-200, 200), min_size=n, max_size=n))),
            value_unc=np.array(data.draw(st.lists(st.sampled_from([0.1, 0.0, -0.3, np.nan]), min_size=n, max_size=n))),
            qcflag=np.array(
                data.draw(st.lists(st.sampled_from(["...", "*..", "NA", "", ".X."]), min_size=n, max_size=n))
            ),
            obs_flag=np.array(data.draw(st.lists(st.sampled_from([0, 1, -9]), min_size=n, max_size=n))),
            units=declared,
            with_ids=False,
        )
        ds = read_truncated(path, truncate)
    if ds is None:
        return
    # the stored float32 times the *declared* units factor, and a plausible ppm value
    stored = (ppm / UNITS[actual]).astype(np.float32).astype(float)
    expected = stored * float(convert(1.0, declared, "ppm"))
    assert all(np.isclose(v, expected, rtol=1e-9).any() for v in ds["value"].values)
    assert ((ds["value"].values >= 100) & (ds["value"].values <= 2000)).all()


@FUZZ
@given(
    n=st.integers(1, 8),
    data=st.data(),
    weights=st.sampled_from(["ok", "half", "nan"]),
    truncate=st.one_of(st.none(), st.integers(0, 20000)),
)
def test_oco2_reader_survives_bad_input(n, data, weights, truncate):
    xco2 = np.array(data.draw(st.lists(FLOATS, min_size=n, max_size=n)))
    w = {"ok": np.full(4, 0.25), "half": np.full(4, 0.125), "nan": np.array([0.25, np.nan, 0.25, 0.25])}[weights]
    with tempfile.TemporaryDirectory() as folder:
        path = write_oco2_lite(
            Path(folder) / "oco2_LtCO2_fuzz.nc4",
            xco2=xco2,
            time=np.array(data.draw(st.lists(st.integers(0, 2_000_000_000), min_size=n, max_size=n)), "datetime64[s]"),
            latitude=np.array(data.draw(st.lists(st.floats(-200, 200), min_size=n, max_size=n))),
            longitude=np.zeros(n),
            averaging_kernel=np.ones(4),
            pressure_weight=w,
            apriori=np.full(4, 400.0),
            pressure_levels=np.array([1.0, 300.0, 700.0, 1000.0]),
            uncertainty=np.array(
                data.draw(st.lists(st.sampled_from([0.5, 0.0, -1.0, np.nan]), min_size=n, max_size=n))
            ),
            quality_flag=np.array(data.draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))),
        )
        ds = read_truncated(path, truncate)
    if ds is None:
        return
    stored = xco2.astype(np.float32).astype(float)
    assert all(np.isclose(v, stored, rtol=1e-9).any() for v in ds["value"].values)
    assert weights == "ok" and ((ds["value"].values >= 100) & (ds["value"].values <= 2000)).all()


@FUZZ
@given(
    n=st.integers(1, 12),
    data=st.data(),
    units=st.sampled_from(["ppm", "ppb", "mol mol-1", "furlong", None]),
    truncate=st.one_of(st.none(), st.integers(0, 20000)),
)
def test_observation_dataset_reader_survives_bad_input(n, data, units, truncate):
    value = np.array(data.draw(st.lists(FLOATS, min_size=n, max_size=n)))
    uncertainty = np.array(data.draw(st.lists(st.sampled_from([0.5, 0.0, -1.0, np.nan]), min_size=n, max_size=n)))
    latitude = np.array(data.draw(st.lists(st.floats(-200, 200), min_size=n, max_size=n)))
    seconds = np.array(data.draw(st.lists(st.integers(0, 2_000_000_000), min_size=n, max_size=n)))
    attrs = {} if units is None else {"units": units}
    ds = xr.Dataset(
        {"value": ("obs", value, attrs), "uncertainty": ("obs", uncertainty, attrs)},
        coords={
            "time": ("obs", seconds.astype("datetime64[s]").astype("datetime64[ns]")),
            "latitude": ("obs", latitude),
            "longitude": ("obs", np.zeros(n)),
            "altitude": ("obs", np.zeros(n)),
            "site": ("obs", np.full(n, "FZZ")),
            "platform": ("obs", np.full(n, data.draw(st.sampled_from(["surface", "aircraft", "balloon"])))),
            "category": ("obs", np.full(n, "mbl")),
        },
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "observations_fuzz.nc"
        ds.to_netcdf(path)
        read = read_truncated(path, truncate)
    if read is None:
        return
    assert all(np.isclose(v, value, rtol=1e-12).any() for v in read["value"].values)  # stored values, unchanged
    assert np.isfinite(read["value"].values).all() and (read["uncertainty"].values > 0).all()
    assert (np.abs(read["latitude"].values) <= 90).all() and units in ("ppm", "ppb", "mol mol-1")
