"""ObsPack reader against the documented-layout fixtures and an independent netCDF4 read."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest

import observations

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "obspack"
FLASK = FIXTURES / "co2_tst_surface-flask_1_representative.nc"
TOWER = FIXTURES / "co2_twr_tower-insitu_1_representative.nc"


def raw(path: Path, name: str) -> np.ndarray:
    with netCDF4.Dataset(path) as nc:
        return np.ma.filled(nc[name][:].astype(float), np.nan)


def test_mol_per_mol_is_converted_to_ppm():
    ds = observations.read(FLASK)
    expected = raw(FLASK, "value") * 1e6  # hand conversion: 1 mol/mol = 1e6 ppm
    usable = ~np.isnan(expected)
    usable[[7, 9]] = False  # qcflag *.. and obs_flag 0
    np.testing.assert_allclose(ds["value"], expected[usable], rtol=1e-12)
    assert ds["value"].attrs["units"] == "ppm" and 414 < float(ds["value"][0]) < 416
    assert (ds.attrs["n_missing"], ds.attrs["n_rejected"], ds.attrs["n_obs_flag_0"]) == (1, 1, 1)
    np.testing.assert_allclose(ds["uncertainty"], 0.1)  # value_unc 0.05 ppm lifted to the floor
    np.testing.assert_allclose(ds["value_unc"], 0.05, rtol=1e-6)
    assert ds["scale"].values[0] == "WMO CO2 X2019" and float(ds["intake_height"][0]) == 10.0


def test_rejected_records_kept_and_flagged_on_request():
    ds = observations.read(FLASK, keep_rejected=True)
    assert ds.sizes["obs"] == 23
    flagged = ds.where(ds["flag"] > 0, drop=True)
    assert flagged["flag"].values.tolist() == [1, 3]
    assert flagged["obspack_num"].values.tolist() == [8, 10]


def test_collection_directory_and_tower_levels():
    ds = observations.read(FIXTURES)
    assert ds.attrs["n_files"] == 2 and ds.sizes["obs"] == 21 + 48
    tower = ds.where(ds["site"] == "TWR", drop=True)
    assert set(tower["intake_height"].values) == {30.0, 300.0}
    assert set(tower["platform"].values) == {"tower"} and set(tower["category"].values) == {"tower"}
    np.testing.assert_allclose(tower["value"], raw(TOWER, "value"), rtol=1e-12)  # already micromol/mol = ppm


@pytest.mark.parametrize(("units", "factor"), [("mol mol-1", 1e6), ("nmol mol-1", 1e-3), ("ppm", 1.0)])
def test_stated_units_are_honoured(tmp_path, units, factor):
    from observations.synthetic import write_obspack

    ppm = np.array([400.0, 401.0])
    path = write_obspack(
        tmp_path / "co2_abc_surface-flask_1_x.nc",
        value=ppm / factor,
        time=np.array(["2020-01-01", "2020-01-02"], "datetime64[s]"),
        units=units,
    )
    np.testing.assert_allclose(observations.read(path)["value"], ppm, rtol=1e-6)


def test_mislabelled_units_are_caught(tmp_path):
    from observations.synthetic import write_obspack

    path = write_obspack(
        tmp_path / "co2_abc_surface-flask_1_x.nc",
        value=np.array([400.0]),
        time=np.array(["2020-01-01"], "datetime64[s]"),
    )
    with pytest.raises(
        observations.ObservationError,
        match=r"co2_abc_surface-flask_1_x.nc: variable 'value' value 4e\+08 ppm is not a plausible",
    ):
        observations.read(path)


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "count", "first_ppb"),
    [
        ("ch4_esp_surface-flask_2_representative.nc", 109, 1767.63),
        ("ch4_bao_tower-insitu_1_ccgg_all.nc", 4190, 1969.01),
    ],
)
def test_real_methane_obspack(shared_data, name, count, first_ppb):
    ds = observations.read(shared_data / "obspack_format" / name)
    assert ds.sizes["obs"] == count and ds["value"].attrs["units"] == "ppb"
    assert float(ds["value"][0]) == pytest.approx(first_ppb, abs=1e-3)


@pytest.mark.filterwarnings("ignore:The specified chunks separate")  # small chunks on purpose
@pytest.mark.parametrize("keep_rejected", [False, True])
def test_lazy_read_equals_eager(keep_rejected):
    eager = observations.read(FIXTURES, keep_rejected=keep_rejected)
    lazy = observations.read(FIXTURES, keep_rejected=keep_rejected, chunks=7)  # chunks that split both files
    assert lazy["value"].chunks is not None and lazy["time"].chunks is not None
    assert lazy.attrs == eager.attrs
    for name in eager.variables:
        np.testing.assert_array_equal(lazy[name].values, eager[name].values, err_msg=name)
        assert lazy[name].dtype == eager[name].dtype, name


def test_glob_reads_the_matching_files():
    ds = observations.read(FIXTURES / "co2_*_tower-insitu_*.nc")  # detected from the first match
    assert ds.attrs["n_files"] == 1 and set(ds["site"].values) == {"TWR"}
    assert ds.sizes["obs"] == 48


@pytest.mark.filterwarnings("ignore:The specified chunks separate")
def test_lazy_read_raises_on_bad_latitude(tmp_path):
    from observations.synthetic import write_obspack

    path = write_obspack(
        tmp_path / "co2_abc_aircraft-pfp_1_x.nc",
        value=np.array([400.0, 401.0, 402.0]) * 1e-6,
        time=np.array(["2020-01-01", "2020-01-02", "2020-01-03"], "datetime64[s]"),
        latitude=np.array([10.0, 95.0, 20.0]),
    )
    with pytest.raises(observations.ObservationError, match=r"'latitude' outside -90..90 at obs 1"):
        observations.read(path, chunks=2)
    with pytest.raises(observations.ObservationError, match=r"variable 'latitude': obs 1 is 95.0, outside -90..90"):
        observations.read(path)


def test_fixed_site_positions_are_one_value_per_file():
    ds = observations.read(FLASK)
    assert ds["latitude"].values.strides == (0,)  # a read-only view of one value
    np.testing.assert_allclose(ds["latitude"], raw(FLASK, "latitude")[0], rtol=1e-7)
    tower = observations.read(TOWER)
    np.testing.assert_array_equal(tower["intake_height"], raw(TOWER, "intake_height"))  # two levels: per record
