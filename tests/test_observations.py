"""Text readers (NOAA, Southern Ocean matrix, GCB) against hand-written files and hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import observations
from observations import ObservationError
from observations.schema import GLOBAL_CATEGORY


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


MM_GL = """month,decimal_date,average_ppm,average_unc_ppm,trend_ppm,trend_unc_ppm
2023-11,2023.875,420.46,0.10,420.90,0.06
2023-12,2023.958,421.86,0.10,421.23,0.06
2024-01,2024.042,422.80,0.12,421.58,0.06
"""


def test_global_monthly_means(tmp_path):
    ds = observations.read(write(tmp_path, "co2_mm_gl.csv", MM_GL))
    np.testing.assert_allclose(ds["value"], [420.46, 421.86, 422.80])
    np.testing.assert_allclose(ds["uncertainty"], [0.10, 0.10, 0.12])
    assert ds["value"].attrs["units"] == "ppm" and ds.attrs["quantity"] == "co2_mole_fraction"
    assert (ds["site"] == "GLOBAL").all() and (ds["category"] == GLOBAL_CATEGORY).all()
    assert np.isnan(ds["latitude"]).all()  # whole globe: no point location
    # December: 31 days, the middle is the 16th at 12:00
    assert str(ds["time"].values[1]) == "2023-12-16T12:00:00.000000000"
    assert str(ds["time_end"].values[1])[:10] == "2024-01-01"


def test_mauna_loa_months_without_uncertainty_are_counted_not_hidden(tmp_path):
    text = """month,decimal_date,average_ppm,deseasonalized_ppm,ndays,sdev_days_ppm,unc_mon_mean_ppm
1975-11,1975.875,329.5,330.9,-01,-9.99,-0.99
1975-12,1975.958,330.76,331.73,-01,-9.99,0.00
1976-01,1976.042,331.6,331.8,20,0.4,0.17
"""
    path = write(tmp_path, "co2_mm_mlo.csv", text)
    ds = observations.read(path)
    assert ds.sizes["obs"] == 1 and ds.attrs["n_no_uncertainty"] == 2
    assert ds.attrs["no_uncertainty_periods"] == "1975-11 1975-12"
    assert ds["site"].item() == "MLO" and ds["category"].item() == "mbl"
    filled = observations.read(path, uncertainty_fill=0.5)
    np.testing.assert_allclose(filled["uncertainty"], [0.5, 0.5, 0.17])


def test_growth_rate_is_a_rate_not_a_mole_fraction(tmp_path):
    path = write(
        tmp_path, "co2_gr_gl.csv", "year,annual_increase_ppm_per_yr,unc_ppm_per_yr\n2023,2.75,0.08\n2024,3.75,0.09\n"
    )
    ds = observations.read(path)
    assert ds["value"].attrs["units"] == "ppm yr-1" and ds["platform"].values.tolist() == ["budget"] * 2
    assert ds.attrs["quantity"] == "co2_growth_rate"
    np.testing.assert_allclose(ds["value"], [2.75, 3.75])
    assert str(ds["time_start"].values[1])[:10] == "2024-01-01" and str(ds["time_end"].values[1])[:10] == "2025-01-01"


def test_short_header_is_refused_with_the_line(tmp_path):
    # the original datasets/co2-ppm file: 4 header names over 6 fields
    path = write(
        tmp_path, "co2-mm-gl.csv", "Date,Decimal Date,Average,Trend\n1979-01,1979.042,336.56,0.11,335.92,0.09\n"
    )
    with pytest.raises(ObservationError, match=r"co2-mm-gl.csv:2: expected 4 fields"):
        observations.read(path)


def test_values_in_mol_per_mol_are_refused(tmp_path):
    text = MM_GL.replace("420.46", "0.00042046")
    with pytest.raises(ObservationError, match=r"co2_mm_gl.csv:2: .*not a plausible CO2.*mol/mol"):
        observations.read(write(tmp_path, "co2_mm_gl.csv", text))


def test_duplicated_month_names_both_lines(tmp_path):
    text = MM_GL + "2023-12,2023.958,421.86,0.10,421.23,0.06\n"
    with pytest.raises(ObservationError, match=r"co2_mm_gl.csv:5: duplicated month .*line 3"):
        observations.read(write(tmp_path, "co2_mm_gl.csv", text))


STATION_HEADER = (
    "# header_lines : 4\n# dataset_calibration_scale : WMO CO2 X2007\n# value:units : micromol mol-1\n"
    "# site_code year month day hour minute second value value_unc nvalue latitude longitude altitude elevation "
    "intake_height instrument qcflag\n"
)
STATION_ROWS = """SPO 2001 1 1 0 0 0 -999.99 -99.99 0 -89.98 -24.8 2821.0 2810.0 11.0 NA *..
SPO 2001 2 1 0 0 0 368.10 0.20 27 -89.98 -24.8 2821.0 2810.0 11.0 NA ...
SPO 2001 3 1 0 0 0 368.20 0.00 1 -89.98 -24.8 2821.0 2810.0 11.0 NA ...
SPO 2001 4 1 0 0 0 375.00 0.30 12 -89.98 -24.8 2821.0 2810.0 11.0 NA X..
"""


def test_station_monthly_rejects_by_qcflag_and_keeps_them_on_request(tmp_path):
    path = write(tmp_path, "co2_spo_surface-insitu_1_ccgg_MonthlyData.txt", STATION_HEADER + STATION_ROWS)
    ds = observations.read(path)
    np.testing.assert_allclose(ds["value"], [368.10, 368.20])
    np.testing.assert_allclose(ds["uncertainty"], [0.20, 0.10])  # value_unc 0 -> the 0.1 ppm floor
    assert ds.attrs["n_missing"] == 1 and ds.attrs["n_rejected"] == 1
    assert ds["scale"].values[0] == "WMO CO2 X2007" and float(ds["intake_height"][0]) == 11.0
    kept = observations.read(path, keep_rejected=True)
    assert kept["flag"].values.tolist() == [0, 0, 1]
    assert kept["flag_reason"].values[-1] == "provider qcflag X.."


def test_station_monthly_converts_stated_units(tmp_path):
    text = STATION_HEADER.replace("micromol mol-1", "mol mol-1") + STATION_ROWS.replace("368.10 0.20", "3.681e-4 2e-7")
    text = text.replace("368.20 0.00", "3.682e-4 0").replace("375.00 0.30", "3.75e-4 3e-7")
    ds = observations.read(write(tmp_path, "x_MonthlyData.txt", text), keep_rejected=True)
    np.testing.assert_allclose(ds["value"], [368.10, 368.20, 375.0])
    np.testing.assert_allclose(ds["value_unc"], [0.2, 0.0, 0.3])


@pytest.mark.parametrize("units", ["micromol mol-1(", "ppm ppm -", "furlong"])
def test_station_monthly_with_malformed_units_names_them(tmp_path, units):
    path = write(tmp_path, "x_MonthlyData.txt", STATION_HEADER.replace("micromol mol-1", units) + STATION_ROWS)
    with pytest.raises(ObservationError, match=r"x_MonthlyData.txt: variable 'value': units .* not a mole fraction"):
        observations.read(path)


def test_flask_month_file_and_derived_csv(tmp_path):
    flask = write(
        tmp_path,
        "co2_asc_surface-flask_1_ccgg_month.txt",
        "# data_fields: site year month value\nASC 1979  8   337.44\nASC 1979  9   337.31\n",
    )
    ds = observations.read(flask)
    assert ds["site"].values.tolist() == ["ASC", "ASC"] and float(ds["latitude"][0]) == -7.97
    assert (ds["uncertainty"] == 0.1).all() and "assumed" in ds.attrs["uncertainty_source"]
    derived = write(
        tmp_path, "co2_kum_surface-flask_1_ccgg_month_DERIVED.csv", b"\xef\xbb\xbfyear,month,value\r\n1976,3,334.26\r\n"
    )
    ds = observations.read(derived)
    assert ds["site"].item() == "KUM" and float(ds["value"][0]) == 334.26


def test_flask_month_of_an_unknown_site_asks_for_coordinates(tmp_path):
    path = write(tmp_path, "co2_zzz_surface-flask_1_ccgg_month.txt", "ZZZ 2000 1 370.0\n")
    with pytest.raises(ObservationError, match="pass latitude="):
        observations.read(path)
    ds = observations.read(path, latitude=10.0, longitude=20.0, altitude=5.0, category="land")
    assert ds["category"].item() == "land"


SO_MONTHLY = """year month SPO_NOAA_insitu CGO_CSIRO_flask LMG65_NOAA_underway
1998 1 362.3 NA 361.5
1998 2 362.4 362.0 NA
"""
SO_LOCATIONS = """record lat lon alt
SPO_NOAA_insitu -89.98 -24.8 2810
CGO_CSIRO_flask -40.683 144.69 164
LMG65_NOAA_underway -65 -63.55 10
"""


def test_southern_ocean_matrix(tmp_path):
    write(tmp_path, "SO_CO2_locations.txt", SO_LOCATIONS)
    ds = observations.read(write(tmp_path, "SO_CO2_monthly.txt", SO_MONTHLY))
    assert ds.sizes["obs"] == 4 and ds.attrs["n_missing"] == 2
    cgo = ds.where(ds["site"] == "CGO", drop=True)
    assert cgo["lab"].item() == "CSIRO" and float(cgo["value"][0]) == 362.0 and float(cgo["latitude"][0]) == -40.683
    assert set(ds["category"].values) == {"mbl"}  # the ship too


def test_southern_ocean_matrix_without_a_location(tmp_path):
    write(tmp_path, "SO_CO2_locations.txt", SO_LOCATIONS.replace("CGO_CSIRO_flask -40.683 144.69 164\n", ""))
    with pytest.raises(ObservationError, match=r"SO_CO2_locations.txt: no location for records \['CGO_CSIRO_flask'\]"):
        observations.read(write(tmp_path, "SO_CO2_monthly.txt", SO_MONTHLY))


GCB = (
    "year,fossil_emissions_excl_carbonation,land_use_change_emissions,atmospheric_growth,ocean_sink,land_sink,"
    "cement_carbonation_sink,budget_imbalance\n2023,10.0,1.0,6.0,3.0,2.0,0.2,-0.2\n2024,10.5,1.25,7.9,3.4,1.9,0.22,\n"
)


def test_gcb_budget_terms_with_stated_uncertainty(tmp_path):
    ds = observations.read(write(tmp_path, "gcb2025_global_budget_GtC.csv", GCB))
    assert ds["value"].attrs["units"] == "PgC yr-1" and "positive = uptake" in ds.attrs["sign_convention"]
    assert ds.sizes["obs"] == 13  # the blank 2024 imbalance is not an estimate
    one = ds.where((ds["time"].dt.year == 2023), drop=True).set_index(obs="term")
    np.testing.assert_allclose(one["uncertainty"].sel(obs="fossil_emissions_excl_carbonation"), 0.5)  # 5 % of 10
    np.testing.assert_allclose(one["uncertainty"].sel(obs="land_sink"), 0.5)
    expected = np.sqrt(0.5**2 + 0.7**2 + 0.2**2 + 0.4**2 + 0.5**2)
    np.testing.assert_allclose(one["uncertainty"].sel(obs="budget_imbalance"), expected)
    np.testing.assert_allclose(one["value"].sel(obs="land_sink"), 2.0)  # GCB sign kept: uptake positive


def test_gcb_model_table_uses_the_group_spread(tmp_path):
    text = "year,GCB,ModelA,ModelB,Multi-model_mean,Model_Spread_(sd)\n2024,1.9,3.0,1.0,2.0,1.4\n"
    ds = observations.read(write(tmp_path, "gcb2025_terrestrial_sink_DGVMs_GtC.csv", text)).set_index(obs="estimate")
    np.testing.assert_allclose(ds["uncertainty"].sel(obs=["GCB", "ModelA", "Multi-model_mean"]), [0.5, 1.4, 1.4])
    assert set(ds["term"].values) == {"land_sink"}
    text = "year,GCB,InvA,InvB,InvC\n2024,7.9,7.0,7.5,8.0\n"
    ds = observations.read(write(tmp_path, "gcb_atmospheric_growth.csv", text)).set_index(obs="estimate")
    np.testing.assert_allclose(ds["uncertainty"].sel(obs="InvA"), np.std([7.0, 7.5, 8.0], ddof=1))


def test_read_refuses_unknown_kinds_and_formats(tmp_path):
    with pytest.raises(ObservationError, match="choose one of"):
        observations.read(write(tmp_path, "a.csv", "x\n1\n"), kind="nope")
    with pytest.raises(ObservationError, match="cannot tell the format"):
        observations.read(write(tmp_path, "a.csv", "x\n1\n"))
    with pytest.raises(ObservationError, match="empty"):
        observations.read(write(tmp_path, "co2_mm_gl.csv", ""))
