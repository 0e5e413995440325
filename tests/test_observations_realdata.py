"""Every real observation file in ../shared/data reads, with spot values checked against the raw text."""

from __future__ import annotations

import numpy as np
import pytest

import observations

pytestmark = pytest.mark.realdata

#: File (relative to ../shared/data) -> (format, records read).
COUNTS = {
    "noaa_co2_global/co2_mm_gl.csv": ("noaa_csv", 568),
    "noaa_co2_global/co2_mm_mlo.csv": ("noaa_csv", 624),
    "noaa_co2_global/co2_annmean_gl.csv": ("noaa_csv", 47),
    "noaa_co2_global/co2_annmean_mlo.csv": ("noaa_csv", 67),
    "noaa_co2_global/co2_gr_gl.csv": ("noaa_csv", 67),
    "noaa_co2_global/co2_gr_mlo.csv": ("noaa_csv", 67),
    "noaa_co2_global/noaa_raw_release_2026-06/co2_gr_gl.csv": ("noaa_csv", 67),
    "noaa_co2_global/noaa_raw_release_2026-06/co2_annmean_gl.csv": ("noaa_csv", 47),
    "station_co2/noaa_insitu_monthly_v2016-08/co2_brw_surface-insitu_1_ccgg_MonthlyData.txt": ("noaa_station", 509),
    "station_co2/noaa_insitu_monthly_v2016-08/co2_mlo_surface-insitu_1_ccgg_MonthlyData.txt": ("noaa_station", 500),
    "station_co2/noaa_insitu_monthly_v2016-08/co2_smo_surface-insitu_1_ccgg_MonthlyData.txt": ("noaa_station", 466),
    "station_co2/noaa_insitu_monthly_v2016-08/co2_spo_surface-insitu_1_ccgg_MonthlyData.txt": ("noaa_station", 468),
    "station_co2/noaa_flask_monthly/co2_asc_surface-flask_1_ccgg_month.txt": ("noaa_flask_month", 516),
    "station_co2/noaa_flask_monthly/co2_kum_surface-flask_1_ccgg_month_DERIVED_noheader.csv": ("noaa_flask_month", 556),
    "station_co2/southern_ocean_long2021/SO_CO2_monthly.txt": ("station_matrix", 6166),
    "global_carbon_budget/gcb2025_global_budget_GtC.csv": ("gcb", 462),
    "global_carbon_budget/gcb2025_historical_budget_1750-2024_GtC.csv": ("gcb", 1512),
    "global_carbon_budget/gcb2025_terrestrial_sink_DGVMs_GtC.csv": ("gcb", 1650),
    "global_carbon_budget/gcb2025_ocean_sink_models_products_GtC.csv": ("gcb", 1270),
    "global_carbon_budget/gcb2025_atmospheric_growth_and_inversions_GtC.csv": ("gcb", 371),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_real_file_reads(shared_data, name):
    kind, count = COUNTS[name]
    assert observations.detect(shared_data / name) == kind
    ds = observations.read(shared_data / name)
    assert ds.sizes["obs"] == count


def test_real_spot_values(shared_data):
    gl = observations.read(shared_data / "noaa_co2_global/co2_mm_gl.csv")
    jan = gl.where(gl["time_start"] == np.datetime64("2024-01-01"), drop=True)
    raw = [
        line for line in (shared_data / "noaa_co2_global/co2_mm_gl.csv").read_text().splitlines() if "2024-01" in line
    ]
    assert float(jan["value"].item()) == float(raw[0].split(",")[2])
    gr = observations.read(shared_data / "noaa_co2_global/co2_gr_gl.csv")
    y2024 = gr.where(gr["time_start"] == np.datetime64("2024-01-01"), drop=True)
    assert (float(y2024["value"].item()), float(y2024["uncertainty"].item())) == (3.75, 0.09)
    gcb = observations.read(shared_data / "global_carbon_budget/gcb2025_global_budget_GtC.csv")
    land = gcb.where((gcb["term"] == "land_sink") & (gcb["time"].dt.year == 2024), drop=True)
    assert float(land["value"].item()) == pytest.approx(1.94215) and float(land["uncertainty"].item()) == 0.5


def test_original_short_header_files_are_refused(shared_data):
    with pytest.raises(observations.ObservationError, match=r"co2-mm-gl\.csv:2: expected 4 fields"):
        observations.read(shared_data / "noaa_co2_global/original_datasets_co2-ppm/co2-mm-gl.csv")
