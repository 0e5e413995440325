"""`assim nowcast`: a saved run plus one month of observations equals the batch solution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from assim import Problem, solve
from assim.cli import main
from assim.covariance import DiagonalCovariance
from assim.osse import OsseConfig, make_world, world_problem
from assim.report import read_run
from assim.state import transcom3_land_regions
from assim.transport import make_transport


def month_of_observations(config: OsseConfig, month: str, tmp: Path) -> tuple[Path, xr.Dataset]:
    """The observations of ``month`` from a world that runs one month longer, with their background."""
    regions, transport = transcom3_land_regions(), make_transport("box12")
    longer = OsseConfig(start=config.start, end=month, seed=config.seed + 100)
    world = make_world(longer, regions, transport)
    rows = np.flatnonzero(world.obs["time"].values >= np.datetime64(f"{month}-01"))
    new = world.obs.isel(obs=rows).assign(background=("obs", world.background_ppm[rows], {"units": "ppm"}))
    path = tmp / f"obs_{month}.nc"
    new.to_netcdf(path)
    return path, new


def batch(problem: Problem, new: xr.Dataset, months: int) -> Problem:
    """The OSSE problem of the run extended by ``months`` and the new observations, as one problem."""
    config = OsseConfig(start="2023-01", end=str(new["time"].values.max())[:7], seed=0)
    regions, transport = transcom3_land_regions(), make_transport("box12")
    longer = world_problem(make_world(config, regions, transport), config, regions, transport)
    obs = xr.concat([problem.obs, new[list(problem.obs.data_vars)]], dim="obs", combine_attrs="override")
    y = obs["value"].values - obs["background"].values
    H = transport.jacobian(longer.state, obs)
    return Problem(longer.state, longer.x_prior, longer.B, H, y, DiagonalCovariance(obs["uncertainty"].values ** 2))


@pytest.mark.slow
def test_nowcast_two_months_from_the_command_line_equals_batch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ASSIM_CACHE_DIR", str(tmp_path / "cache"))
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        '[run]\ncase = "osse"\nmethod = "ensemble"\nreference_period = [2023, 2023]\n'
        '[osse]\nstart = "2023-01"\nend = "2024-12"\nseed = 0\n'
    )
    assert main(["run", str(config_file), "--output", str(tmp_path / "run")]) == 0
    config = OsseConfig(start="2023-01", end="2024-12", seed=0)
    regions, transport = transcom3_land_regions(), make_transport("box12")
    problem = world_problem(make_world(config, regions, transport), config, regions, transport)
    data1, new1 = month_of_observations(config, "2025-01", tmp_path)
    assert main(["nowcast", str(tmp_path / "run" / "run.nc"), str(data1), "--output", str(tmp_path / "now1")]) == 0
    data2, new2 = month_of_observations(config, "2025-02", tmp_path)
    new2 = new2.isel(obs=np.flatnonzero(new2["time"].values >= np.datetime64("2025-02-01")))
    new2.to_netcdf(data2.with_name("feb.nc"))
    assert (
        main(
            [
                "nowcast",
                str(tmp_path / "now1" / "run.nc"),
                str(data2.with_name("feb.nc")),
                "--output",
                str(tmp_path / "now2"),
            ]
        )
        == 0
    )
    run = read_run(tmp_path / "now2" / "run.nc")
    assert run.sizes["time"] == 26 and run.attrs["nowcast_months"] == "2025-01 2025-02"
    assert run.sizes["member"] == 24 * 11 + 2 * 11
    exact = solve(batch(problem, xr.concat([new1, new2], dim="obs", combine_attrs="override"), 2))
    np.testing.assert_allclose(run["flux_posterior"].values.ravel(), exact.mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(run["flux_posterior_sd"].values.ravel(), exact.sd, rtol=1e-8)


@pytest.mark.slow
def test_nowcast_rejects_observations_of_another_month(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ASSIM_CACHE_DIR", str(tmp_path / "cache"))
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        '[run]\ncase = "osse"\nreference_period = [2024, 2024]\n[osse]\nstart = "2024-01"\nend = "2024-12"\n'
    )
    assert main(["run", str(config_file), "--output", str(tmp_path / "run")]) == 0
    data, _ = month_of_observations(OsseConfig(start="2024-01", end="2024-12"), "2025-02", tmp_path)
    assert main(["nowcast", str(tmp_path / "run" / "run.nc"), str(data)]) == 2
    assert "nowcast adds the month after the run (2025-01)" in capsys.readouterr().err
