"""Driver and teacher readers: layouts, units and signs on tiny hand-made files and on the real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assim.state import TRANSCOM3_LAND
from priors import drivers, teachers
from priors.drivers import (
    DriverError,
    load_drivers,
    read_gistemp_global,
    read_gistemp_zonal_monthly,
    read_noaa_co2,
    read_oni,
)
from priors.teachers import TRANSCOM3_LAND_REGIONS, read_trendy_monthly

GISTEMP_TXT = """\
        GLOBAL Land-Ocean Temperature Index in 0.01 degrees Celsius   base period: 1951-1980

Year   Jan  Feb  Mar  Apr  May  Jun  Jul  Aug  Sep  Oct  Nov  Dec    J-D D-N    DJF  MAM  JJA  SON  Year
2000    10   20   30   40   50   60   70   80   90  100  110  120     65  60     12   40   70  100  2000
2001   -10  -20  -30 **** **** **** **** **** **** **** **** ****   **** ***    -8  -30 **** ****  2001
Year   Jan  Feb  Mar  Apr  May  Jun  Jul  Aug  Sep  Oct  Nov  Dec    J-D D-N    DJF  MAM  JJA  SON  Year
"""

ONI_TXT = "SEAS   YR  ANOM\nNDJ  1999  -1.50\nDJF  2000  -1.70\nJFM  2000  -1.40\n"

ZONAL_CSV = "Year,Glob,24S-24N,EQU-24N\n1999,.30,.10,.12\n2000,.40,-.25,***\n2001,.50,.60,.58\n"

CO2_CSV = (
    "month,decimal_date,average_ppm,deseasonalized_ppm,ndays,sdev_days_ppm,unc_mon_mean_ppm\n"
    "1999-12,1999.96,368.0,369.0,20,0.3,0.1\n2000-01,2000.04,369.0,369.2,20,0.3,0.1\n"
)


@pytest.fixture()
def tiny_data(tmp_path):
    """A data folder in the layout of ../shared/data holding a few months of each file."""
    climate = tmp_path / "climate_drivers"
    climate.mkdir()
    (climate / "GISTEMPv4_GLB.Ts+dSST.txt").write_text(GISTEMP_TXT)
    (climate / "cpc_oni_ersstv6.ascii.txt").write_text(ONI_TXT)
    (climate / "gistemp_v4_hemispheric_zonal").mkdir()
    (climate / "gistemp_v4_hemispheric_zonal" / "ZonAnn.Ts+dSST.csv").write_text(ZONAL_CSV)
    (tmp_path / "noaa_co2_global").mkdir()
    (tmp_path / "noaa_co2_global" / "co2_mm_mlo.csv").write_text(CO2_CSV)
    trendy = tmp_path / teachers.TRENDY_DIR
    trendy.mkdir(parents=True)
    # January (31 d) and February 2000 (29 d, leap year): GtC per month, negative = uptake
    rows = [[200001] + [0.31] * 11 + [3.41], [200002] + [-0.29 * (r + 1) for r in range(11)] + [-19.14]]
    np.savetxt(trendy / "DGVM_TOYreg_monthly.csv", rows, fmt="%.3f")
    return tmp_path


def test_region_names_match_the_state_vector() -> None:
    assert list(TRANSCOM3_LAND_REGIONS) == [TRANSCOM3_LAND[code] for code in sorted(TRANSCOM3_LAND)]


def test_gistemp_reader_scales_hundredths_and_trims_missing_months(tiny_data) -> None:
    series = read_gistemp_global(tiny_data)
    assert series.attrs["units"] == "K"
    assert series.sizes["time"] == 15  # Jan 2000 .. Mar 2001; the **** months are trimmed
    np.testing.assert_allclose(series.sel(time="2000-10").values, [1.0])
    np.testing.assert_allclose(series.sel(time="2001-03").values, [-0.3])


def test_oni_is_dated_at_the_centre_month_of_its_season(tiny_data) -> None:
    oni = read_oni(data_dir=tiny_data)
    assert [str(t)[:7] for t in oni.time.values] == ["1999-12", "2000-01", "2000-02"]
    np.testing.assert_allclose(oni.values, [-1.5, -1.7, -1.4])


def test_zonal_annual_mean_becomes_a_monthly_step_that_averages_back(tiny_data) -> None:
    tropics = load_drivers(["gistemp_tropics"], data_dir=tiny_data)["gistemp_tropics"]
    assert [str(t)[:7] for t in tropics.time.values[[0, -1]]] == ["1999-01", "2001-12"]
    np.testing.assert_array_equal(tropics.sel(time="2000").values, np.full(12, -0.25))  # the file's 2000 value
    np.testing.assert_allclose(tropics.groupby("time.year").mean().values, [0.10, -0.25, 0.60])
    assert "step per calendar year" in tropics.attrs["monthly_from_annual"] and tropics.attrs["units"] == "K"
    # a missing year inside the record stays a gap (load_drivers refuses periods across it)
    assert np.isnan(read_gistemp_zonal_monthly("EQU-24N", tiny_data).sel(time="2000")).all()


def test_zonal_reader_errors_name_the_file_and_the_column(tiny_data, tmp_path) -> None:
    with pytest.raises(DriverError, match=r"no zone column '24N-90N'.*choose one of \['Glob', '24S-24N', 'EQU-24N'\]"):
        read_gistemp_zonal_monthly("24N-90N", tiny_data)
    with pytest.raises(DriverError, match=r"ZonAnn\.Ts\+dSST\.csv not found"):
        read_gistemp_zonal_monthly(data_dir=tmp_path / "nowhere")
    (tiny_data / "climate_drivers" / "gistemp_v4_hemispheric_zonal" / "ZonAnn.Ts+dSST.csv").write_text("Yr,Glob\n")
    with pytest.raises(DriverError, match="no 'Year' column"):
        read_gistemp_zonal_monthly(data_dir=tiny_data)


def test_trendy_gtc_per_month_becomes_pgc_per_year_with_real_month_lengths(tiny_data) -> None:
    flux = read_trendy_monthly(tiny_data, start="2000-01", end="2000-03")
    assert flux.attrs["units"] == "PgC yr-1" and "positive to the atmosphere" in flux.attrs["sign"]
    np.testing.assert_allclose(flux.sel(time="2000-01-01").values, 0.31 / 31 * 365.25)
    np.testing.assert_allclose(flux.sel(time="2000-02-01").values[0], -0.29 / 29 * 365.25 * np.arange(1, 12))
    assert np.isnan(flux.sel(time="2000-03-01")).all()  # beyond the file: NaN, not zero


def test_load_drivers_aligns_and_refuses_uncovered_periods(tiny_data) -> None:
    ds = load_drivers(["gistemp_global", "oni", "co2"], data_dir=tiny_data)
    assert list(ds.time.values) == list(pd.date_range("2000-01", "2000-01", freq="MS"))
    np.testing.assert_allclose([ds[v].item() for v in ds], [0.1, -1.7, 369.2])
    with pytest.raises(DriverError, match=r"'oni'.*1999-12\.\.2000-02"):
        load_drivers(["oni"], start="2000-01", end="2000-06", data_dir=tiny_data)
    with pytest.raises(DriverError, match="unknown driver"):
        load_drivers(["nino"], data_dir=tiny_data)


def test_missing_file_names_the_path(tmp_path) -> None:
    with pytest.raises(DriverError, match=r"co2_mm_mlo\.csv"):
        read_noaa_co2(tmp_path)


@pytest.mark.realdata
def test_real_drivers_cover_the_training_and_inversion_periods(shared_data) -> None:
    ds = load_drivers(
        ["gistemp_global", "gistemp_nh", "gistemp_sh", "oni", "roni", "co2"], "1960-01", "2024-12", shared_data
    )
    np.testing.assert_allclose(ds["gistemp_global"].sel(time="2015-12").values, [1.17])  # table value 117
    np.testing.assert_allclose(ds["oni"].sel(time="2015-12").values, [2.59])  # NDJ 2015 (CPC)
    assert 316 < ds["co2"].values[0] < 318 and 420 < ds["co2"].values[-1] < 430
    assert drivers.read_uah_tropical_land(shared_data).time.values[-1] == np.datetime64("2024-09-01")
    # the tropical band: every month of a year is that year's 24S-24N row of the zonal file
    zonal = pd.read_csv(shared_data / "climate_drivers" / "gistemp_v4_hemispheric_zonal" / "ZonAnn.Ts+dSST.csv")
    tropics = load_drivers(["gistemp_tropics"], "1960-01", "2025-12", shared_data)["gistemp_tropics"]
    np.testing.assert_allclose(tropics.sel(time="2015").values, np.full(12, 0.95))  # file row 2015: .95
    expected = zonal.set_index("Year").loc[1960:2025, "24S-24N"].to_numpy()
    np.testing.assert_allclose(tropics.groupby("time.year").mean().values, expected)
    assert drivers.read_hadcrut5_monthly("gl", shared_data).sizes["time"] == 171 * 12


@pytest.mark.realdata
def test_real_trendy_regions_sum_to_the_global_band_file(shared_data) -> None:
    regions = read_trendy_monthly(shared_data, start="1960-01")
    bands = read_trendy_monthly(shared_data, domain="bands", start="1960-01")
    assert regions.sizes == {"model": 13, "time": 720, "region": 11}
    # the files round to 0.001 GtC/month: 12 roundings ~ 0.1 PgC/yr at most
    np.testing.assert_allclose(regions.sum("region"), bands.sel(region="Global"), atol=0.1)
    sink = -regions.sum("region").groupby("time.year").mean().mean("model")
    assert 0.5 < float(sink.mean()) < 1.5  # S3 net land sink, PgC/yr (GCB2020: ~1 PgC/yr over 1960-2019)


@pytest.mark.realdata
def test_real_gcb2025_multi_model_mean_is_the_mean_of_its_dgvms(shared_data) -> None:
    gcb = teachers.read_gcb2025_dgvm_sinks(shared_data)
    assert gcb.sizes == {"model": 22, "year": 66}
    np.testing.assert_allclose(gcb["land_sink"].mean("model"), gcb["dgvm_mean"], atol=1e-3)
