"""Config validation and the command line end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

from assim.cli import main
from assim.config import Config, ConfigError, config_from_dict, load_config


def test_empty_config_is_the_demo() -> None:
    assert config_from_dict({}) == Config()


def test_config_round_trips_through_toml(tmp_path: Path) -> None:
    config = config_from_dict({"run": {"method": "analytic"}, "osse": {"seed": 4, "sites": ["MLO", "SPO"]}})
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"osse": {"sedd": 1}}, r"\[osse\] unknown key 'sedd'; valid keys: .*seed"),
        ({"runn": {}}, r"unknown section \[runn\]"),
        ({"osse": {"seed": "one"}}, r"\[osse\] seed: expected int, got 'one'"),
        ({"osse": {"seed": True}}, r"\[osse\] seed: expected int"),
        ({"osse": {"sites": ["MLO", "XXX"]}}, r"\[osse\] osse.sites: unknown station\(s\) \['XXX'\]"),
        ({"run": {"method": "magic"}}, r"\[run\] method 'magic' unknown; choose one of \['analytic'"),
        ({"run": {"reference_period": [2022]}}, r"\[run\] reference_period: expected 2 items"),
        ({"run": {"reference_period": [2022, 2015]}}, r"must be \[first, last\] year"),
        ({"transport": {"name": "tm5"}}, r"\[transport\] name 'tm5' unknown"),
        ({"transport": {"options": {"speed": 2}}}, r"\[transport\] options: .*speed"),
        ({"run": {"case": "mars"}}, r"\[run\] case 'mars' unknown; choose one of \['global', 'osse', 'regional'\]"),
        ({"real": {"first_year": 1970}}, r"\[real\] first_year/last_year must satisfy 1980"),
        ({"real": {"stations": True}}, r"\[real\] stations = true needs data_dir"),
        ({"real": {"averaging": "week"}}, r"\[real\] averaging must be 'month' or 'year'"),
    ],
)
def test_bad_config_names_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[osse]\nseed = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"missing\.toml: no such config file"):
        load_config(tmp_path / "missing.toml")


def test_run_and_report_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "short.toml"
    config.write_text(
        '[osse]\nstart = "2021-01"\nend = "2024-12"\nseed = 3\n[run]\ncase = "osse"\nreference_period = [2021, 2022]\n'
    )
    out = tmp_path / "out"
    assert main(["run", str(config), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "posterior land sink, Global land" in printed and "2023:" in printed
    run = xr.open_dataset(out / "run.nc")
    assert run.attrs["Conventions"] == "CF-1.8"
    assert load_config_text(run.attrs["config"]).osse.seed == 3
    assert {"land_sink_posterior", "land_sink_truth", "dofs"} <= set(run.data_vars)
    run.close()
    assert (out / "land_sink.csv").exists() and (out / "report.html").exists()
    (out / "report.html").unlink()
    assert main(["report", str(out / "run.nc")]) == 0
    assert (out / "report.html").exists()


def load_config_text(text: str) -> Config:
    import tomllib

    return config_from_dict(tomllib.loads(text))


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[osse]\nseed = -1.5\n")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("assim: error: ") and "seed: expected int" in err
    assert main(["report", str(tmp_path / "none.nc")]) == 2
    assert "none.nc" in capsys.readouterr().err


def test_methods_lists_solvers(capsys: pytest.CaptureFixture) -> None:
    assert main(["methods"]) == 0
    assert "analytic" in capsys.readouterr().out


def test_demo_runs_the_real_global_case_from_bundled_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` without ../shared/data: 1990-2024 from the tables inside the package."""
    monkeypatch.setenv("ASSIM_SHARED_DATA", str(tmp_path / "no-shared-data"))
    assert main(["demo", "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "2024:" in printed and "GCB S_LAND+B_IM" in printed and "prior: climatology" in printed
    run = xr.open_dataset(tmp_path / "run.nc")
    assert run["year"].values[0] == 1990 and run["year"].values[-1] == 2024
    assert "climatology" in run.attrs["prior_source"]
    assert float(run["probability_below_reference"].sel(year=2024, aggregate="Global land")) > 0.9
    run.close()
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Comparison with the Global Carbon Budget 2025" in page and "gcb_comparison.png" in page


@pytest.mark.realdata
def test_demo_uses_the_emulator_prior_when_the_shared_data_are_there(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSIM_SHARED_DATA", str(shared_data))
    monkeypatch.setenv("ASSIM_CACHE_DIR", str(tmp_path / "cache"))  # trains the emulator (~10 s) into a fresh cache
    assert main(["demo", "--output", str(tmp_path / "out")]) == 0
    assert "prior: priors.LandFluxEmulator" in capsys.readouterr().out
    with xr.open_dataset(tmp_path / "out" / "run.nc") as run:
        assert "LandFluxEmulator" in run.attrs["prior_source"]
        # the emulator prior already weakens the 2024 sink (record warmth, El Nino) before the atmosphere speaks
        prior = run["land_sink_prior"].sel(aggregate="Global land")
        assert float(prior.sel(year=2024)) < float(prior.sel(year=slice(2015, 2022)).mean()) - 0.3
        assert float(run["probability_below_reference"].sel(year=2024, aggregate="Global land")) > 0.9
