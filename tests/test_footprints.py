"""Footprint Jacobians: the chunked store against dense algebra, the readers of both layouts, the region
overlay, the projection against a hand computation, and the real openghg test footprints."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import psutil
import pytest
import scipy.sparse
import xarray as xr

from assim.covariance import BlockDiagonalCovariance, DiagonalCovariance
from assim.state import StateVector, month_starts, transcom3_land_regions
from assim.transport import TRANSPORTS, make_transport
from assim.transport.chunked import ChunkedJacobian, JacobianWriter, write_dense
from assim.transport.footprints import grid_cell_area, match_releases, open_footprint, region_fractions
from assim.transport.synthetic import block_regions, write_footprint_file
from observations.units import SECONDS_PER_YEAR

# 1 PgC/yr in mol/s, written out by hand: 1e15 g / 12.011 g/mol / seconds per (Julian) year.
MOL_PER_S = 1e15 / 12.011 / SECONDS_PER_YEAR


@pytest.fixture(scope="module")
def dense() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(53, 7)).astype(np.float32).astype(float)


@pytest.fixture(scope="module")
def chunked(dense: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> ChunkedJacobian:
    return ChunkedJacobian(write_dense(dense, tmp_path_factory.mktemp("h") / "H.zarr", chunk_obs=10))


def test_chunked_products_match_dense_algebra(dense: np.ndarray, chunked: ChunkedJacobian) -> None:
    rng = np.random.default_rng(1)
    x, y, X, Y = rng.normal(size=7), rng.normal(size=53), rng.normal(size=(7, 3)), rng.normal(size=(53, 2))
    assert chunked.shape == (53, 7) and chunked.chunks == 10
    np.testing.assert_allclose(chunked.matvec(x), dense @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chunked.rmatvec(y), dense.T @ y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chunked.matmat(X), dense @ X, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chunked.rmatmat(Y), dense.T @ Y, rtol=1e-12, atol=1e-12)
    assert np.isclose(chunked.matvec(x) @ y, x @ chunked.rmatvec(y), rtol=1e-12)  # adjoint (dot-product) test
    np.testing.assert_array_equal(chunked.todense(), dense)


def test_normal_matrix_accumulates_over_chunks(dense: np.ndarray, chunked: ChunkedJacobian) -> None:
    variance = np.random.default_rng(2).uniform(0.5, 2.0, 53)
    expected = dense.T @ (dense / variance[:, None])
    np.testing.assert_allclose(chunked.normal_matrix(DiagonalCovariance(variance)).toarray(), expected, rtol=1e-10)
    with pytest.raises(TypeError, match="DiagonalCovariance"):
        chunked.normal_matrix(BlockDiagonalCovariance([np.eye(53)]))


def test_padded_sparse_rows_equal_a_scipy_matrix(tmp_path) -> None:
    rng = np.random.default_rng(3)
    m, n, k = 40, 30, 4
    cols = np.array([rng.choice(n, size=k, replace=False) for _ in range(m)])
    vals = rng.normal(size=(m, k)).astype(np.float32)
    writer = JacobianWriter(tmp_path / "S.zarr", (m, n), nnz=6, chunk_obs=16)  # two padding entries a row
    writer.write(0, cols[:25], vals[:25])
    writer.write(25, cols[25:], vals[25:])
    H = ChunkedJacobian(tmp_path / "S.zarr")
    reference = scipy.sparse.csr_matrix((vals.ravel().astype(float), cols.ravel(), np.arange(0, m * k + 1, k)), (m, n))
    y = rng.normal(size=m)
    np.testing.assert_allclose(H.rmatvec(y), reference.T @ y, rtol=1e-12)
    np.testing.assert_allclose(H.todense(), reference.toarray())
    with pytest.raises(ValueError, match=r"outside 0\.\.29"):
        writer.write(0, np.array([[30]]), np.array([[1.0]]))


def test_store_errors_name_the_path(tmp_path) -> None:
    with pytest.raises(ValueError, match="no Jacobian store"):
        ChunkedJacobian(tmp_path / "missing.zarr")


def test_region_fractions_exact_on_aligned_and_straddling_cells() -> None:
    mask = xr.DataArray(
        np.array([[1, 2], [3, 0]]), dims=("lat", "lon"), coords={"lat": [0.5, 1.5], "lon": [10.5, 11.5]}
    )
    # footprint cells of 0.5 deg: each lies in one mask cell
    lat, lon = np.array([0.25, 0.75, 1.25, 1.75]), np.array([10.25, 10.75, 11.25, 11.75])
    f = region_fractions(lat, lon, mask, np.array([3, 1, 2]), subsample=4).toarray().reshape(4, 4, 3)
    np.testing.assert_array_equal(f[:2, :2], np.broadcast_to([0, 1, 0], (2, 2, 3)))  # region 1 = column 1
    np.testing.assert_array_equal(f[2:, 2:].sum(-1), 0.0)  # code 0: no region
    # one cell centred on the corner shared by the four mask cells: a quarter in each
    g = region_fractions(np.array([0.0, 1.0, 2.0]), np.array([10.0, 11.0, 12.0]), mask, np.array([1, 2, 3]), 4)
    np.testing.assert_allclose(g.toarray()[4], [0.25, 0.25, 0.25])


def test_region_fractions_wrap_longitude() -> None:
    lon360 = np.arange(0.5, 360.0, 1.0)
    mask = xr.DataArray(np.where(lon360 > 180, 2, 1)[None, :].repeat(2, 0), dims=("lat", "lon"),
                        coords={"lat": [0.5, 1.5], "lon": lon360})  # fmt: skip
    f = region_fractions(np.array([0.5, 1.5]), np.array([-10.5, -9.5, 9.5]), mask, np.array([1, 2]), 2).toarray()
    np.testing.assert_array_equal(f[:3], [[0, 1], [0, 1], [1, 0]])


def test_grid_cell_area_sums_to_the_sphere() -> None:
    area = grid_cell_area(np.arange(-89.5, 90.0), np.arange(-179.5, 180.0))
    assert np.isclose(area.sum(), 4 * np.pi * 6.371e6**2, rtol=1e-12)


def footprint_folder(tmp_path, layout: str = "paris", times: dict[str, pd.DatetimeIndex] | None = None):
    """Synthetic footprints over two months on a 0.5 deg grid; mask of 2 x 3 block regions.

    ``times``: release times per site; default two sites, AAA and BBB. Sites alternate between
    two release positions, each with its own random plume.
    """
    latitude, longitude = np.arange(40.25, 46.0, 0.5), np.arange(0.25, 9.0, 0.5)
    mask, regions = block_regions(latitude, longitude, 2, 3)
    mask.to_dataset().to_netcdf(tmp_path / "mask.nc")
    folder = tmp_path / "fp"
    folder.mkdir()
    times = times or {
        "AAA": pd.date_range("2020-01-30", periods=4, freq="1D"),
        "BBB": pd.date_range("2020-02-03", periods=3, freq="6h"),
    }
    for k, (site, time) in enumerate(times.items()):
        position = (42.0 + 2 * (k % 2), 3.0 + 3 * (k % 2))
        write_footprint_file(
            folder / f"{site}-10magl_TEST_{layout}.nc",
            site,
            position,
            time.to_numpy(),
            latitude,
            longitude,
            layout,
            seed=k,
        )
    state = StateVector(month_starts("2020-01", "2020-02"), regions)
    return folder, tmp_path / "mask.nc", mask, state


@pytest.mark.parametrize("layout", ["paris", "acrg"])  # same fields in both layouts: the same H by hand
def test_projection_matches_a_hand_computation(tmp_path, layout: str) -> None:
    folder, mask_path, mask, state = footprint_folder(tmp_path, layout)
    transport = make_transport("footprints", directory=str(folder), region_mask=str(mask_path), subsample=2)
    table = transport.releases()
    H = transport.jacobian(state, table).todense()
    assert H.shape == (7, state.size)
    expected = np.zeros_like(H)
    codes = mask.values.ravel()
    for i in range(table.sizes["obs"]):
        with open_footprint(folder / str(table["source_file"].values[i])) as fp:
            srr = fp["sensitivity"].values[int(table["index"].values[i])].ravel()  # s m2 mol-1
        month = int(pd.Timestamp(table["time"].values[i]).month) - 1
        for r, code in enumerate(state.regions["region_id"].values):
            mol_per_m2_s = MOL_PER_S / state.regions["area"].values[r]
            expected[i, month * state.region.size + r] = 1e6 * mol_per_m2_s * srr[codes == code].sum()
    np.testing.assert_allclose(H, expected, rtol=2e-6)
    assert (H[:4, :6] > 0).any() and (H[4:, 6:] > 0).any() and not H[4:, :6].any()  # Feb obs see Feb fluxes only


def test_jacobian_store_is_reused_and_obs_are_matched_by_site_and_period(tmp_path) -> None:
    folder, mask_path, _, state = footprint_folder(tmp_path)
    transport = make_transport(
        "footprints", directory=str(folder), region_mask=str(mask_path), store=str(tmp_path / "H.zarr")
    )
    table = transport.releases()
    H = transport.jacobian(state, table).todense()  # read now: the store path is rewritten below
    late = table.isel(obs=[5, 0]).assign_coords(time=table["time"].values[[5, 0]] + np.timedelta64(59, "m"))
    np.testing.assert_array_equal(transport.jacobian(state, late).todense(), H[[5, 0]])
    stamp = (tmp_path / "H.zarr" / "zarr.json").stat().st_mtime_ns
    transport.jacobian(state, late)
    assert (tmp_path / "H.zarr" / "zarr.json").stat().st_mtime_ns == stamp  # same inputs: not rebuilt
    with pytest.raises(ValueError, match=r"no footprint for obs 0 \(BBB"):
        match_releases(late.assign_coords(time=late["time"] + np.timedelta64(1, "m")), table, np.timedelta64(1, "h"))


def test_footprint_errors(tmp_path) -> None:
    assert "footprints" in TRANSPORTS
    with pytest.raises(ValueError, match="directory"):
        make_transport("footprints")
    with pytest.raises(ValueError, match="unknown option"):
        make_transport("footprints", directory="x", region_mask="y", bogus=1)
    folder, _, _, _ = footprint_folder(tmp_path)
    path = next(folder.glob("AAA*"))
    with xr.open_dataset(path) as ds:
        bad = ds.load()
    bad["srr"].attrs["units"] = "s m3 kg-1"
    bad.to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(ValueError, match="s m3 kg-1"):
        open_footprint(tmp_path / "bad.nc")
    bad.rename({"srr": "other"}).to_netcdf(tmp_path / "other.nc")
    with pytest.raises(ValueError, match="not a supported footprint layout"):
        open_footprint(tmp_path / "other.nc")


@pytest.fixture(scope="module")
def openghg(shared_data):
    return shared_data / "transport_footprints" / "openghg_test"


@pytest.mark.realdata
def test_real_footprints_read_in_both_layouts(openghg) -> None:
    expected = {  # MANIFEST.tsv: layout, site, releases, grid
        "MHD-10magl_FLEXPART_ECMWFHRES_TEST_inert_201809.nc": ("paris", "MHD", 49, (12, 12)),
        "MHD-10magl_NAME_UKV_TEST_inert_PARIS-format_201301.nc": ("paris", "MHD", 49, (12, 12)),
        "TAC-100magl_UKV_co2_TEST_201407.nc": ("acrg", "TAC", 73, (12, 12)),
        "THW-column_NAME_UMG_EUROPE_TEST_inert_202304.nc": ("paris", "THW", 4, (293, 391)),
    }
    for name, (layout, site, n, grid) in expected.items():
        with open_footprint(openghg / name) as fp:
            assert (fp.attrs["layout"], str(fp["site"].values[0]), fp.sizes["obs"]) == (layout, site, n)
            assert (fp.sizes["latitude"], fp.sizes["longitude"]) == grid
            assert np.all(np.diff(fp["latitude"].values) > 0) and float(fp["sensitivity"].min()) >= 0


@pytest.mark.realdata
def test_real_footprints_project_onto_transcom(openghg, shared_data, tmp_path) -> None:
    mask_path = shared_data / "regions" / "TRANSCOM_mask_original_1x1.nc"
    transport = make_transport(
        "footprints", directory=str(openghg), pattern="[MT][HA][DC]-*.nc", region_mask=str(mask_path), subsample=1,
        store=str(tmp_path / "H.zarr"),
    )  # fmt: skip
    regions = transcom3_land_regions()
    state = StateVector(month_starts("2013-01", "2018-12"), regions)
    table = transport.releases()
    H = transport.jacobian(state, table).todense()
    # independent: each footprint cell centre takes the nearest mask cell (xarray), uniform flux over Europe
    europe = int(np.flatnonzero(regions["region"].values == "Europe")[0])
    with xr.open_dataset(mask_path) as ds:
        mask = ds["mask64"].load()
    for name in ("MHD-10magl_NAME_UKV_TEST_inert_PARIS-format_201301.nc", "TAC-100magl_UKV_co2_TEST_201407.nc"):
        rows = np.flatnonzero(table["source_file"].values == name)
        with open_footprint(openghg / name) as fp:
            codes = mask.sel(latitude=fp["latitude"], longitude=fp["longitude"], method="nearest").values
            srr = fp["sensitivity"].values
        month = np.searchsorted(state.time, table["time"].values[rows], side="right") - 1
        expected = 1e6 * MOL_PER_S / regions["area"].values[europe] * (srr * (np.rint(codes) == 11)).sum((1, 2))
        np.testing.assert_allclose(H[rows, month * regions.sizes["region"] + europe], expected, rtol=1e-5)
        assert np.count_nonzero(H[rows]) == np.count_nonzero(expected)  # nothing outside Europe on this grid


def test_closing_a_footprint_closes_its_file(tmp_path) -> None:
    # a file left to the garbage collector is closed in whichever thread collects (see open_footprint)
    folder, *_ = footprint_folder(tmp_path)
    path = str(next(folder.glob("AAA*")))
    process = psutil.Process()  # psutil comes with dask.distributed
    with open_footprint(path) as fp:
        assert fp["sensitivity"].values.any()
        assert path in {f.path for f in process.open_files()}
    assert path not in {f.path for f in process.open_files()}


def test_projection_in_threads_equals_the_serial_one(tmp_path) -> None:
    # netCDF-C is not thread-safe: many files projected by the threaded scheduler must neither crash
    # (concurrent opens segfaulted) nor differ from one file after another
    times = {f"S{k:02d}": pd.date_range("2020-01-05", periods=3, freq="5D") + pd.Timedelta(hours=k) for k in range(12)}
    folder, mask_path, _, state = footprint_folder(tmp_path, times=times)

    def build(scheduler: str, store: str) -> np.ndarray:
        transport = make_transport("footprints", directory=str(folder), region_mask=str(mask_path), store=store)
        with dask.config.set(scheduler=scheduler, num_workers=8):
            return transport.jacobian(state, transport.releases()).todense()

    serial = build("synchronous", str(tmp_path / "serial.zarr"))
    for attempt in range(2):
        np.testing.assert_array_equal(build("threads", str(tmp_path / f"threads{attempt}.zarr")), serial)
