"""Command line: ``assim demo``, ``assim run CONFIG.toml``, ``assim report RUN.nc``, ``assim methods``,
``assim nowcast RUN.nc NEW_DATA``, ``assim prior``."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from assim.config import Config, RunConfig, load_config
from assim.global_case import demo_real_config
from assim.osse import OsseConfig
from assim.pipeline import nowcast_run
from assim.pipeline import run as run_case
from assim.regional import write_twin_case
from assim.report import atomic_write, make_outputs, read_run, total_aggregate, write_report
from assim.solvers import SOLVERS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assim", description="Land carbon sink inversion.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="the real global land sink 1990-2024 from the bundled NOAA and GCB tables, into ./assim-output"
    )
    demo.add_argument("--output", type=Path, default=None, help="output directory (default: assim-output)")
    kind = demo.add_mutually_exclusive_group()
    kind.add_argument("--osse", action="store_true", help="a synthetic world with a known truth instead")
    kind.add_argument(
        "--regional",
        action="store_true",
        help="a regional twin experiment instead: writes footprint files, a mask, observations and a config "
        "into OUTPUT/regional-input, then runs that config",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic world (with --osse or --regional)")
    demo.add_argument("--method", default="analytic", help=f"solver, one of {sorted(SOLVERS)}")
    run = sub.add_parser("run", help="run the inversion described by a TOML config")
    run.add_argument("config", type=Path)
    run.add_argument("--output", type=Path, default=None, help="output directory (overrides [run] output_dir)")
    run.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="dask.distributed scheduler for chunked work (default: a LocalCluster sized to this machine, "
        "started only if the run uses dask)",
    )
    report = sub.add_parser("report", help="re-make the HTML report of a run file")
    report.add_argument("run_file", type=Path)
    report.add_argument("--output", type=Path, default=None, help="directory (default: beside the run file)")
    sub.add_parser("methods", help="list the solvers")
    prior = sub.add_parser("prior", help="train (or load) the land-flux emulator and write the Prior Dataset")
    prior.add_argument("--start", default="1990-01", help="first month (default 1990-01)")
    prior.add_argument("--end", default="2024-12", help="last month (default 2024-12)")
    prior.add_argument("--data-dir", type=Path, default=None, help="shared data folder (default ../shared/data)")
    prior.add_argument(
        "--model", type=Path, default=None, help="emulator .npz: loaded if present, else trained and saved"
    )
    prior.add_argument("--output", type=Path, default=Path("prior.nc"), help="netCDF to write (default prior.nc)")
    now = sub.add_parser("nowcast", help="add the next month of observations to a run without re-solving the past")
    now.add_argument("run_file", type=Path)
    now.add_argument("new_data", type=Path, help="Observation Dataset (netCDF) of the month after the run")
    now.add_argument("--output", type=Path, default=None, help="directory (default: beside the run file)")
    return parser


def _execute(config: Config, output: Path | None) -> None:
    start = time.perf_counter()
    run = run_case(config, progress=sys.stderr.isatty())
    outdir = output or Path(config.run.output_dir)
    paths = make_outputs(run, outdir)
    total = total_aggregate(run)
    post = run["land_sink_posterior"].sel(aggregate=total)
    sd = run["land_sink_posterior_sd"].sel(aggregate=total)
    print(f"prior: {run.attrs['prior_source']}")
    print(f"posterior land sink, {total} (PgC/yr, uptake positive), {run.attrs['method']}:")
    reference = None
    if "land_sink_truth" in run:
        reference = ("truth", run["land_sink_truth"].sel(aggregate=total))
    elif "gcb_atmosphere_implied_land_sink" in run:
        reference = ("GCB S_LAND+B_IM", run["gcb_atmosphere_implied_land_sink"])
    for year in run["year"].values:
        line = f"  {year}: {float(post.sel(year=year)):6.2f} +/- {float(sd.sel(year=year)):.2f}"
        if reference is not None:
            line += f"   ({reference[0]} {float(reference[1].sel(year=year)):6.2f})"
        print(line)
    if "probability_below_reference" in run:
        reference_period = run["land_sink_anomaly_posterior"].attrs.get("reference_period", "the reference period")
        for year in run["year"].values[-2:]:
            glob = run.sel(year=year, aggregate=total)
            print(
                f"{year} anomaly vs {reference_period}: {float(glob['land_sink_anomaly_posterior']):+.2f} +/- "
                f"{float(glob['land_sink_anomaly_posterior_sd']):.2f} PgC/yr, "
                f"P(sink below that mean) = {float(glob['probability_below_reference']):.0%}"
            )
    print(f"DOFS {float(run['dofs']):.1f}, reduced chi2 {float(run['chi2_reduced']):.2f}")
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")


def _nowcast(run_path: Path, data_path: Path, output: Path | None) -> None:
    start = time.perf_counter()
    updated = nowcast_run(run_path, data_path)
    paths = make_outputs(updated, output or run_path.parent)
    print(f"nowcast {updated.attrs['nowcast_months'].split()[-1]}: {updated.sizes['obs']} observations in all")
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo" and args.regional:
            outdir = args.output or Path(RunConfig.output_dir)
            config = load_config(write_twin_case(outdir / "regional-input", seed=args.seed))
            print(f"regional twin experiment written to {outdir / 'regional-input'} (config regional.toml)")
            _execute(replace(config, run=replace(config.run, method=args.method)), outdir)
        elif args.command == "demo":
            case = "osse" if args.osse else "global"
            config = Config(
                run=RunConfig(case=case, method=args.method), osse=OsseConfig(seed=args.seed), real=demo_real_config()
            )
            _execute(config, args.output)
        elif args.command == "run":
            from assim.distributed import scheduler  # dask.distributed loads only for `run`

            config = load_config(args.config)
            with scheduler(args.scheduler):
                _execute(config, args.output)
        elif args.command == "report":
            html = write_report(read_run(args.run_file), args.output or args.run_file.parent)
            print(f"report: {html}")
        elif args.command == "nowcast":
            _nowcast(args.run_file, args.new_data, args.output)
        elif args.command == "prior":
            from priors import land_flux_prior

            dataset = land_flux_prior(args.start, args.end, data_dir=args.data_dir, model_path=args.model)
            atomic_write(args.output, lambda tmp: dataset.to_netcdf(tmp))
            print(f"prior ({dataset.attrs.get('prior_source', '')}): {args.output}")
        elif args.command == "methods":
            for name, func in sorted(SOLVERS.items()):
                print(f"{name:14s} {'exact' if func.exact else 'approximate'}  {func.__doc__.splitlines()[0]}")
    except (ValueError, OSError) as err:
        print(f"assim: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
