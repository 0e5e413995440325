"""Tests of assim.report: run file round trip, atomic writes, CSV summary and the HTML report."""

from __future__ import annotations

import re
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from assim import report
from assim.state import month_starts, transcom3_land_regions

BANDS = {
    "Northern extratropics (30N-90N)": ["90N-30N"],
    "Tropics (30S-30N)": ["30N-0", "0-30S"],
    "Southern extratropics (90S-30S)": ["30S-90S"],
}
SITES = {  # code: (latitude, model-data mismatch ppm)
    "ALT": (82.45, 0.75),
    "BRW": (71.32, 0.75),
    "MHD": (53.33, 1.5),
    "MLO": (19.54, 0.75),
    "ASC": (-7.97, 0.75),
    "SMO": (-14.25, 0.75),
    "CGO": (-40.68, 0.75),
    "SPO": (-89.98, 0.75),
}
CONFIG = '[run]\nmethod = "analytic"\nyears = [2015, 2024]\nnote = "prior σ ×1.5, \\"quoted\\""\n'


def _annual(values: np.ndarray, years: np.ndarray, year_of_month: np.ndarray) -> np.ndarray:
    """(time, region) monthly values -> (year, region) annual means."""
    return np.stack([values[year_of_month == y].mean(0) for y in years])


def make_run(truth: bool = True, seed: int = 0) -> xr.Dataset:
    """A realistic synthetic OSSE run: 2015-2024 monthly, 11 TransCom regions, 2023 tropical dip.

    Fluxes are PgC yr-1 positive to the atmosphere; land sinks are their negated annual means
    aggregated with region / band-fraction weights; monthly errors independent, so the annual
    covariance is W diag(sum sd^2 / 144) W^T per year.
    """
    rng = np.random.default_rng(seed)
    regions = transcom3_land_regions()
    names = regions["region"].values
    time = month_starts("2015-01", "2024-12")
    index = pd.DatetimeIndex(time)
    month, year_of_month = index.month.to_numpy(), index.year.to_numpy()
    years = np.unique(year_of_month)
    lat = regions["centroid_latitude"].values
    tropical = np.abs(lat) < 25
    n_t, n_r = time.size, names.size

    base = -np.array([0.25, 0.5, 0.45, 0.15, 0.2, 0.2, 0.45, 0.4, 0.3, 0.05, 0.3])  # sum -3.25
    amplitude = 2.5 * np.clip(lat, 0, None) / 60 + 0.4 * np.clip(-lat, 0, None) / 30
    phase = np.where(lat >= 0, 7, 1)  # strongest uptake in local summer
    seasonal = -amplitude * np.cos(2 * np.pi * (month[:, None] - phase[None, :]) / 12)
    dip = np.zeros((n_t, n_r))
    dip[year_of_month == 2023] = 0.35 * tropical  # weaker tropical uptake (flux up)
    dip[year_of_month == 2024] = 0.15 * tropical
    flux_truth = base + seasonal + dip + rng.normal(0, 0.05, (n_t, n_r))
    prior_sd = np.broadcast_to(0.4 + 0.5 * np.abs(base), (n_t, n_r))
    flux_prior = base + 0.9 * seasonal + 0.1
    post_sd = prior_sd * np.where(tropical, 0.7, 0.45)
    flux_posterior = flux_truth + rng.normal(0, 1, (n_t, n_r)) * post_sd / 4

    aggregates = [*names, "Global land", *BANDS]
    frac = regions["band_fraction"].to_pandas()
    weights = np.vstack([np.eye(n_r), np.ones(n_r), *[frac[cols].sum(axis=1).to_numpy() for cols in BANDS.values()]])
    n_y, n_g = years.size, len(aggregates)

    def sink(flux: np.ndarray) -> np.ndarray:
        return -_annual(flux, years, year_of_month) @ weights.T

    def covariance(sd: np.ndarray) -> np.ndarray:
        var = np.stack([(sd[year_of_month == y] ** 2).sum(0) / 144 for y in years])
        cov = np.zeros((n_y, n_g, n_y, n_g))
        for i in range(n_y):
            cov[i, :, i, :] = weights @ np.diag(var[i]) @ weights.T
        return cov

    cov_prior, cov_post = covariance(prior_sd), covariance(post_sd)
    sd_of = lambda cov: np.sqrt(np.einsum("igig->ig", cov))  # noqa: E731
    centre = np.eye(n_y) - 1 / n_y
    post = sink(flux_posterior)
    anomaly = centre @ post
    anomaly_sd = np.sqrt(np.einsum("ai,aj,igjg->ag", centre, centre, cov_post))

    # observations: 8 sites x 120 months, time-major
    n_obs = n_t * len(SITES)
    site = np.tile(list(SITES), n_t)
    obs_lat = np.tile([v[0] for v in SITES.values()], n_t)
    unc = np.tile([v[1] for v in SITES.values()], n_t)
    obs_time = np.repeat(time, len(SITES)) + np.timedelta64(14, "D") + np.timedelta64(12, "h")
    obs_month = np.repeat(month, len(SITES))
    season = -(6 * np.clip(obs_lat, 0, None) / 80 + 0.5) * np.cos(2 * np.pi * (obs_month - 8) / 12)
    trend = np.linspace(0, 1.5, n_obs)
    sim_truth = season + trend
    obs_value = sim_truth + rng.normal(0, 1, n_obs) * unc
    obs_prior = sim_truth + 0.8 * np.sign(obs_lat) * np.cos(2 * np.pi * obs_month / 12) + 0.6
    obs_post = sim_truth + rng.normal(0, 0.2, n_obs)

    ds = xr.Dataset(
        {
            "flux_prior": (("time", "region"), flux_prior),
            "flux_prior_sd": (("time", "region"), prior_sd.copy()),
            "flux_posterior": (("time", "region"), flux_posterior),
            "flux_posterior_sd": (("time", "region"), post_sd),
            "land_sink_prior": (("year", "aggregate"), sink(flux_prior)),
            "land_sink_prior_sd": (("year", "aggregate"), sd_of(cov_prior)),
            "land_sink_posterior": (("year", "aggregate"), post),
            "land_sink_posterior_sd": (("year", "aggregate"), sd_of(cov_post)),
            "land_sink_posterior_covariance": (("year", "aggregate", "year_b", "aggregate_b"), cov_post),
            "land_sink_anomaly_posterior": (("year", "aggregate"), anomaly, {"reference_period": "2015-2024"}),
            "land_sink_anomaly_posterior_sd": (("year", "aggregate"), anomaly_sd),
            "uncertainty_reduction": (("year", "aggregate"), 1 - sd_of(cov_post) / sd_of(cov_prior)),
            "obs_value": ("obs", obs_value, {"units": "ppm", "background_ppm": 400.0}),
            "obs_uncertainty": ("obs", unc),
            "obs_prior_simulated": ("obs", obs_prior),
            "obs_posterior_simulated": ("obs", obs_post),
            "dofs": ((), 42.5),
            "chi2_reduced": ((), 1.07),
        },
        coords={
            "time": time,
            "region": names,
            "region_id": ("region", regions["region_id"].values),
            "year": years,
            "aggregate": aggregates,
            "year_b": years,
            "aggregate_b": aggregates,
            "obs_time": ("obs", obs_time),
            "obs_site": ("obs", site),
            "obs_latitude": ("obs", obs_lat),
        },
        attrs={
            "title": "Synthetic OSSE <2023 dip> & friends",
            "method": "analytic",
            "prior_source": "priors.LandFluxEmulator (synthetic)",
            "created": "2025-01-01T00:00:00+00:00",
            "software_version": "0.0.9-test",
            "config": CONFIG,
            "osse_seed": seed,
            "history": "2025-01-01T00:00:00+00:00 assim 0.0.9-test: pipeline.run (analytic)",
        },
    )
    if truth:
        ds["flux_truth"] = (("time", "region"), flux_truth)
        ds["land_sink_truth"] = (("year", "aggregate"), sink(flux_truth))
    return ds


@pytest.fixture(scope="module")
def run() -> xr.Dataset:
    return make_run()


def test_synthetic_run_is_valid_and_has_2023_dip(run):
    report.validate_run(run)
    anomaly = run["land_sink_anomaly_posterior"].sel(aggregate="Tropics (30S-30N)")
    assert int(anomaly.idxmin()) == 2023


def test_round_trip_keeps_values_strings_and_attrs(run, tmp_path):
    path = report.write_run(run, tmp_path / "run.nc")
    assert path == tmp_path / "run.nc"
    back = report.read_run(path)
    for name in run.data_vars:
        np.testing.assert_allclose(back[name].values, run[name].values, rtol=0, atol=0, err_msg=name)
    for name in ("region", "aggregate", "aggregate_b", "obs_site"):
        assert back[name].dtype.kind == "U", name
        np.testing.assert_array_equal(back[name].values, run[name].values)
    np.testing.assert_array_equal(back["time"].values, run["time"].values)
    np.testing.assert_array_equal(back["obs_time"].values, run["obs_time"].values)
    np.testing.assert_array_equal(back["year"].values, run["year"].values)
    assert back.attrs["config"] == CONFIG
    assert back.attrs["software_version"] == "0.0.9-test"
    assert back.attrs["Conventions"] == "CF-1.8"
    assert back.attrs["method"] == "analytic"
    assert back["land_sink_posterior"].attrs["units"] == "PgC yr-1"
    assert back["land_sink_anomaly_posterior"].attrs["reference_period"] == "2015-2024"
    lines = back.attrs["history"].split("\n")
    assert lines[0] == run.attrs["history"]
    version = report.software_version()
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 assim {re.escape(version)}: "
        r"wrote run\.nc",
        lines[1],
    ), lines[1]
    assert "Conventions" not in run.attrs and run.attrs["history"].count("\n") == 0  # input untouched
    with netCDF4.Dataset(path) as nc:
        assert nc["flux_posterior"].filters()["zlib"]


def test_rewrite_of_read_run_extends_history(run, tmp_path):
    path = report.write_run(run, tmp_path / "run.nc")
    again = report.write_run(report.read_run(path), path, what="re-made report")
    history = report.read_run(again).attrs["history"].split("\n")
    assert len(history) == 3 and history[-1].endswith("re-made report")


def test_atomic_write_failure_keeps_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "land_sink.csv"
    target.write_bytes(b"year,value\n2023,1.0\n")
    before = target.read_bytes()

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"year,val")
        raise RuntimeError("disk full half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        report.atomic_write(target, half_then_fail)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["land_sink.csv"]

    fresh = tmp_path / "new.csv"
    with pytest.raises(RuntimeError):
        report.atomic_write(fresh, half_then_fail)
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["land_sink.csv"]


def test_write_run_failure_half_way_keeps_previous_run(run, tmp_path, monkeypatch):
    path = report.write_run(run, tmp_path / "run.nc")
    before = path.read_bytes()
    original = xr.Dataset.to_netcdf

    def broken(self, target, *args, **kwargs):
        original(self.isel(obs=slice(0, 10)), target, *args, **kwargs)  # a partial file
        raise OSError("interrupted")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(OSError, match="interrupted"):
        report.write_run(run, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]


def test_read_run_errors_name_file_and_problem(run, tmp_path):
    missing = tmp_path / "nope.nc"
    with pytest.raises(ValueError, match=r"nope\.nc.*does not exist"):
        report.read_run(missing)
    corrupt = tmp_path / "corrupt.nc"
    good = report.write_run(run, tmp_path / "run.nc").read_bytes()
    corrupt.write_bytes(good[: len(good) // 3])
    with pytest.raises(ValueError, match=r"corrupt\.nc"):
        report.read_run(corrupt)
    partial = tmp_path / "partial.nc"
    run.drop_vars(["dofs", "obs_value"]).to_netcdf(partial, engine="netcdf4")
    with pytest.raises(ValueError, match=r"partial\.nc.*'dofs'.*'obs_value'|partial\.nc.*obs_value"):
        report.read_run(partial)
    with pytest.raises(ValueError, match="dofs"):
        report.write_run(run.drop_vars("dofs"), tmp_path / "x.nc")
    assert not (tmp_path / "x.nc").exists()


def test_write_run_rejects_unstorable_attrs(run, tmp_path):
    with pytest.raises(ValueError, match="config"):
        report.write_run(run.assign_attrs(config={"method": "analytic"}), tmp_path / "run.nc")


def test_summary_csv_columns_and_sign(run, tmp_path):
    path = report.write_summary_csv(run, tmp_path / "land_sink.csv")
    table = pd.read_csv(path)
    assert list(table.columns) == [
        "year",
        "aggregate",
        "land_sink_prior_PgC_per_yr",
        "land_sink_prior_sd_PgC_per_yr",
        "land_sink_posterior_PgC_per_yr",
        "land_sink_posterior_sd_PgC_per_yr",
        "uncertainty_reduction_fraction",
        "land_sink_anomaly_posterior_PgC_per_yr",
        "land_sink_anomaly_posterior_sd_PgC_per_yr",
        "land_sink_truth_PgC_per_yr",
    ]
    assert len(table) == run.sizes["year"] * run.sizes["aggregate"]
    row = table.set_index(["year", "aggregate"])
    years = pd.DatetimeIndex(run["time"].values).year
    flux_2023 = run["flux_posterior"].isel(time=years == 2023).mean("time")
    # land_sink = -flux, uptake positive
    region = str(run["region"].values[2])
    np.testing.assert_allclose(
        row.loc[(2023, region), "land_sink_posterior_PgC_per_yr"], -float(flux_2023.sel(region=region)), rtol=1e-5
    )
    np.testing.assert_allclose(
        row.loc[(2023, "Global land"), "land_sink_posterior_PgC_per_yr"], -float(flux_2023.sum()), rtol=1e-5
    )
    assert (row.xs("Global land", level="aggregate")["land_sink_posterior_PgC_per_yr"] > 0).all()
    assert (row["land_sink_posterior_sd_PgC_per_yr"] > 0).all()
    no_truth = report.summary_table(run.drop_vars(["flux_truth", "land_sink_truth"]))
    assert "land_sink_truth_PgC_per_yr" not in no_truth.columns


def _image_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_make_outputs_writes_all_files_and_report_links_exist(run, tmp_path):
    outdir = tmp_path / "out"
    paths = report.make_outputs(run, outdir)
    assert set(paths) == {"run", "land_sink", "report"}
    assert all(p.is_file() for p in paths.values())
    assert paths["report"] == outdir / "report.html"
    figures = sorted(p.name for p in (outdir / "figures").iterdir())
    real_case_only = {report.FIGURES["gcb_comparison"], report.FIGURES["growth_rate_check"]}
    assert figures == sorted(set(report.FIGURES.values()) - real_case_only)
    for png in (outdir / "figures").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["report"].read_text(encoding="utf-8")
    sources = _image_sources(page)
    assert len(sources) == len(report.FIGURES) - len(real_case_only)
    assert all((outdir / s).is_file() and not Path(s).is_absolute() for s in sources)
    assert "Synthetic OSSE &lt;2023 dip&gt; &amp; friends" in page and "<2023 dip>" not in page
    assert "positive = uptake" in page
    assert "42.50" in page and "1.07" in page  # DOFS, reduced chi2
    assert "wrote run.nc" in page  # report made from run.nc as written, history included
    assert not [p for p in outdir.rglob(".*")]  # no temporary files left


def test_report_without_truth_or_obs_references_only_written_figures(run, tmp_path, monkeypatch):
    # figures are built but not rendered (rendering is covered above): keeps the suite fast
    monkeypatch.setattr(report, "_save", lambda fig, path: report.atomic_write(path, Path.touch))
    bare = run.drop_vars(["flux_truth", "land_sink_truth"]).isel(obs=slice(0, 0))
    html_path = report.write_report(bare, tmp_path)
    page = html_path.read_text(encoding="utf-8")
    sources = _image_sources(page)
    assert sources and all((tmp_path / s).is_file() for s in sources)
    assert "figures/obs_fit_sites.png" not in sources
    assert "truth" not in page.split("<h2>Figures</h2>")[0].lower()


def test_report_from_file_reads_run_and_writes_beside_it(run, tmp_path, monkeypatch):
    path = report.write_run(run, tmp_path / "run.nc")
    calls = []
    monkeypatch.setattr(report, "write_report", lambda r, outdir: calls.append((r, Path(outdir))) or Path(outdir))
    assert report.report_from_file(path) == tmp_path
    assert report.report_from_file(path, tmp_path / "elsewhere") == tmp_path / "elsewhere"
    xr.testing.assert_allclose(calls[0][0]["land_sink_posterior"], run["land_sink_posterior"])
