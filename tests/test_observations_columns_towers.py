"""OCO-2 Lite and FLUXNET readers against fixtures, hand computations and the real files."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest

import observations

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LITE = FIXTURES / "oco2" / "oco2_LtCO2_210701_fixture.nc4"


def test_oco2_lite_keeps_the_operator_inputs():
    ds = observations.read(LITE)
    assert ds.sizes == {"obs": 9, "level": 20} and ds.attrs["n_rejected"] == 1
    with netCDF4.Dataset(LITE) as nc:
        good = np.asarray(nc["xco2_quality_flag"][:]) == 0
        np.testing.assert_allclose(ds["value"], np.asarray(nc["xco2"][:], float)[good])
        np.testing.assert_allclose(ds["xco2_averaging_kernel"], np.asarray(nc["xco2_averaging_kernel"][:], float)[good])
    np.testing.assert_allclose(ds["pressure_weight"].sum("level"), 1.0, atol=1e-3)
    # the operator: a model profile equal to the a priori gives back the a priori column
    w, a, prior = ds["pressure_weight"], ds["xco2_averaging_kernel"], ds["co2_profile_apriori"]
    column = (w * (a * prior + (1 - a) * prior)).sum("level")
    np.testing.assert_allclose(column, (w * prior).sum("level"))
    assert set(ds["platform"].values) == {"satellite"} and np.isnan(ds["altitude"]).all()
    assert observations.read(LITE, keep_rejected=True)["flag"].values.tolist().count(1) == 1


def test_oco2_weights_that_do_not_sum_to_one_are_refused(tmp_path):
    from observations.synthetic import write_oco2_lite

    path = write_oco2_lite(
        tmp_path / "oco2_LtCO2_bad.nc4",
        xco2=[410.0],
        time=np.array(["2021-01-01"], "datetime64[s]"),
        latitude=[0.0],
        longitude=[0.0],
        averaging_kernel=np.ones(3),
        pressure_weight=np.array([0.2, 0.2, 0.2]),
        apriori=np.full(3, 400.0),
        pressure_levels=np.array([1.0, 500.0, 1000.0]),
    )
    with pytest.raises(
        observations.ObservationError, match=r"oco2_LtCO2_bad.nc4: variable 'pressure_weight' .* sums to 0.6000"
    ):
        observations.read(path)


SITES = "SITE_ID,SITE_NAME,FLUXNET2015,FLUXNET-CH4,LOCATION_LAT,LOCATION_LONG,LOCATION_ELEV,IGBP,MAT,MAP\n"
SITES += 'AU-Xyz,"Somewhere, Australia",CC-BY-4.0,,-12.5,131.1,20,SAV,,\n'
MONTHLY = "TIMESTAMP,NEE_VUT_REF,NEE_VUT_REF_QC,NEE_VUT_REF_RANDUNC,NEE_VUT_25,NEE_VUT_75\n"
MONTHLY += "201001,-1.5,0.9,0.3,-1.9,-1.1\n201002,-9999,-9999,-9999,-9999,-9999\n201003,2.0,0.2,-9999,1.9,2.1\n"


def test_fluxnet_monthly_with_site_list(tmp_path):
    (tmp_path / "FluxNET_sites.csv").write_text(SITES)
    path = tmp_path / "FLX_AU-Xyz_FLUXNET2015_SUBSET_MM_2010-2010_1-4.csv"
    path.write_text(MONTHLY)
    ds = observations.read(path)
    assert ds.sizes["obs"] == 1 and (ds.attrs["n_missing"], ds.attrs["n_rejected"]) == (1, 1)
    assert ds["value"].attrs["units"] == "gC m-2 d-1" and ds["igbp"].item() == "SAV"
    np.testing.assert_allclose(ds["uncertainty"], np.hypot(0.3, 0.8 / 1.349))
    kept = observations.read(path, keep_rejected=True)
    assert kept["flag_reason"].values.tolist() == ["", "NEE_VUT_REF_QC < 0.5"]
    np.testing.assert_allclose(kept["uncertainty"][1], max(0.2 / 1.349, 0.05))  # RANDUNC missing -> u* spread only


@pytest.mark.realdata
def test_real_oco2_sounding_and_fluxnet(shared_data):
    ds = observations.read(shared_data / "satellite_xco2/oco2-spectrometer_oco2_20150131-336_co2-column.nc")
    assert ds.sizes == {"obs": 1, "level": 20} and float(ds["value"][0]) == pytest.approx(399.24, abs=1e-4)
    files = sorted((shared_data / "flux_towers/fluxnet2015_subset_MM").glob("FLX_*.csv"))
    counts = [observations.read(f, keep_rejected=True).sizes["obs"] for f in files]
    assert len(files) == 206 and sum(counts) == 17376  # every month with a valid NEE_VUT_REF
