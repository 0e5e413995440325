"""The regional case: `assim run` on a folder of footprint files (a twin experiment with a known truth)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import observations
from assim.cli import main
from assim.config import ConfigError, config_from_dict, load_config
from assim.covariance import to_dense
from assim.pipeline import run
from assim.regional import DOMAIN_TOTAL, RegionalConfig, regional_problem, write_twin_case
from assim.solvers import solve
from assim.state import StateVector, month_starts
from assim.transport import make_transport


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The twin experiment's config file (footprints, mask, observations, truth written beside it)."""
    return write_twin_case(tmp_path_factory.mktemp("twin"), seed=3)


def _problem(config_path: Path):
    config = load_config(config_path)
    return regional_problem(config.regional, make_transport(config.transport.name, **config.transport.options))


def test_twin_posterior_equals_dense_normal_equations_and_covers_the_truth(twin: Path) -> None:
    problem, counts = _problem(twin)
    assert counts == {"observations_read": 3 * 240, "observations_used": 3 * 240}
    assert problem.n == 2 * 6 + 3  # 2 months x 6 regions + one offset per site
    post = solve(problem, method="analytic")
    # independent: dense normal equations (H from the chunked store, offsets as indicator columns)
    H, B, R_inv = to_dense(problem.H), to_dense(problem.B), 1.0 / problem.R.diagonal()
    A = np.linalg.inv(H.T @ (R_inv[:, None] * H) + np.linalg.inv(B))
    x = problem.x_prior + A @ H.T @ (R_inv * (problem.y - H @ problem.x_prior))
    np.testing.assert_allclose(post.mean, x, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(post.sd, np.sqrt(np.diag(A)), rtol=1e-8)
    assert np.all(post.sd < 0.8 * np.sqrt(np.diag(B)))  # every element is constrained by the data

    truth = xr.open_dataset(twin.parent / "truth.nc")["flux"].values.ravel()
    z = (post.mean[:12] - truth) / post.sd[:12]
    assert np.all(np.abs(z) < 3.5)
    offsets = post.mean[12:]
    assert abs(offsets[1] - 0.5) < 3 * post.sd[13] and np.all(np.abs(offsets[[0, 2]]) < 3 * post.sd[[12, 14]])
    assert 0.85 < post.chi2_reduced() < 1.15


def test_variational_matches_analytic_through_the_chunked_jacobian(twin: Path) -> None:
    problem, _ = _problem(twin)
    exact = solve(problem, method="analytic")
    approx = solve(problem, method="variational")
    np.testing.assert_allclose(approx.mean, exact.mean, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(approx.sd, exact.sd, rtol=1e-3)
    assert approx.dofs() == pytest.approx(exact.dofs(), rel=1e-3)


def test_assim_run_on_a_footprint_folder_writes_a_complete_run(twin: Path, capsys: pytest.CaptureFixture) -> None:
    out = twin.parent / "out"
    assert main(["run", str(twin), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Domain total" in printed and "truth" in printed
    with xr.open_dataset(out / "run.nc") as result:
        assert list(result["aggregate"].values) == [f"block {c}" for c in range(1, 7)] + [DOMAIN_TOTAL]
        assert int(result["months_in_year"].sel(year=2020)) == 2
        # the domain total is the sum of the regions' two-month means, with its covariance propagated
        regions = result["land_sink_posterior"].sel(year=2020).values[:6]
        assert float(result["land_sink_posterior"].sel(year=2020, aggregate=DOMAIN_TOTAL)) == pytest.approx(
            regions.sum(), rel=1e-10
        )
        cov = result["land_sink_posterior_covariance"].sel(year=2020, year_b=2020).values[:6, :6]
        total_sd = float(result["land_sink_posterior_sd"].sel(year=2020, aggregate=DOMAIN_TOTAL))
        assert total_sd == pytest.approx(np.sqrt(cov.sum()), rel=1e-8)
        truth = float(result["land_sink_truth"].sel(year=2020, aggregate=DOMAIN_TOTAL))
        assert abs(truth - float(result["land_sink_posterior"].sel(year=2020, aggregate=DOMAIN_TOTAL))) < 3.5 * total_sd
        assert list(result["extra"].values) == ["offset AAA", "offset BBB", "offset CCC"]
    assert (out / "report.html").exists()


def test_regional_errors_name_the_key_or_file(twin: Path, tmp_path: Path) -> None:
    config = load_config(twin)
    transport = make_transport(config.transport.name, **config.transport.options)
    with pytest.raises(ValueError, match="background_variable 'bg' is not in the observations"):
        regional_problem(replace(config.regional, background_variable="bg"), transport)
    with pytest.raises(ValueError, match=r"\[regional\] observations is empty"):
        regional_problem(replace(config.regional, observations=()), transport)
    obs = observations.read(config.regional.observations[0])
    moved = obs.assign_coords(site=("obs", np.where(obs["site"].values == "AAA", "ZZZ", obs["site"].values)))
    moved.to_netcdf(tmp_path / "moved.nc")
    with pytest.raises(ValueError, match=r"no footprint for obs \d+ \(ZZZ"):
        regional_problem(replace(config.regional, observations=(str(tmp_path / "moved.nc"),)), transport)
    with pytest.raises(ValueError, match=r"reference_period \[2010, 2015\] has no year in the regional state"):
        run(replace(config, run=replace(config.run, reference_period=(2010, 2015), method="analytic")), progress=False)
    with pytest.raises(ConfigError, match="case 'regional' needs a transport with a region mask"):
        config_from_dict({"run": {"case": "regional"}})
    with pytest.raises(ConfigError, match=r"\[regional\] start must be a month"):
        config_from_dict({"regional": {"start": "2020-13"}})


def test_observation_dataset_files_read_back_unchanged(twin: Path) -> None:
    path = Path(load_config(twin).regional.observations[0])
    assert observations.detect(path) == "dataset"
    ds = observations.read(path)
    with xr.open_dataset(path) as raw:
        np.testing.assert_array_equal(ds["value"].values, raw["value"].values)
        assert ds["value"].attrs["units"] == "ppm"
    assert ds.attrs["source_file"] == path.name


@pytest.mark.realdata
def test_real_tacolneston_footprints_through_the_regional_case(shared_data: Path, tmp_path: Path) -> None:
    """The real TAC NAME footprints (ACRG layout) on the TransCom mask, with a prior over TransCom names."""
    folder = shared_data / "transport_footprints" / "openghg_test"
    options = {
        "directory": str(folder),
        "pattern": "TAC-*.nc",
        "region_mask": str(shared_data / "regions" / "TRANSCOM_mask_original_1x1.nc"),
        "mask_variable": "mask64",
        "store": str(tmp_path / "H.zarr"),
    }
    transport = make_transport("footprints", **options)
    table = transport.releases()
    n_obs = table.sizes["obs"]
    rng = np.random.default_rng(7)
    obs = observations.observation_dataset(
        400.0 + rng.normal(0.0, 2.0, n_obs),  # replaced below once H is known
        np.full(n_obs, 2.0),
        units="ppm",
        time=table["time"].values,
        latitude=table["release_latitude"].values,
        longitude=table["release_longitude"].values,
        altitude=np.full(n_obs, 100.0),
        site=np.full(n_obs, "tac"),  # lower case on purpose: sites match in any case
        platform="tower",
        category="continental",
        data_vars={"background": ("obs", np.full(n_obs, 400.0), {"units": "ppm"})},
    )
    prior = xr.Dataset(
        {"flux": (("time", "region"), [[-0.5]]), "flux_sd": (("time", "region"), [[0.3]])},
        coords={"time": [np.datetime64("2014-07-01", "ns")], "region": ["Europe"]},
    )
    for name in ("flux", "flux_sd"):
        prior[name].attrs["units"] = "PgC yr-1"
    prior.to_netcdf(tmp_path / "prior.nc")
    config = RegionalConfig(
        observations=(str(tmp_path / "obs.nc"),), add_mismatch=False, region_ids=(11,), prior=str(tmp_path / "prior.nc")
    )
    state = StateVector(month_starts("2014-07", "2014-07"), transport.regions([11]))
    h = transport.jacobian(state, obs).todense()[:, 0]
    assert h.shape == (73,) and (h > 0).all()
    truth = -1.2
    obs["value"] = ("obs", 400.0 + h * truth + rng.normal(0.0, 2.0, n_obs), obs["value"].attrs)
    obs.to_netcdf(tmp_path / "obs.nc")
    problem, _ = regional_problem(config, transport)
    assert list(problem.state.region) == ["region 11"]  # no flag meanings in this mask; matched to "Europe" by code
    post = solve(problem, method="analytic")
    # independent: the scalar Gaussian update
    y = obs["value"].values - 400.0
    precision = 1 / 0.3**2 + h @ h / 2.0**2
    mean = -0.5 + (h @ (y - h * -0.5) / 2.0**2) / precision
    assert post.mean[0] == pytest.approx(mean, rel=1e-10)
    assert post.sd[0] == pytest.approx(precision**-0.5, rel=1e-10)
    assert post.sd[0] < 0.3
