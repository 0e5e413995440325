"""Command line: ``assim demo``, ``assim run CONFIG.toml``, ``assim report RUN.nc``, ``assim methods``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from assim.config import Config, RunConfig, load_config
from assim.osse import OsseConfig
from assim.pipeline import run as run_case
from assim.report import make_outputs, read_run, write_report
from assim.solvers import SOLVERS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assim", description="Land carbon sink inversion.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="the real global land sink 1990-2024 from the bundled NOAA and GCB tables, into ./assim-output"
    )
    demo.add_argument("--output", type=Path, default=None, help="output directory (default: assim-output)")
    demo.add_argument("--osse", action="store_true", help="a synthetic world with a known truth instead")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic world (with --osse)")
    demo.add_argument("--method", default="analytic", help=f"solver, one of {sorted(SOLVERS)}")
    run = sub.add_parser("run", help="run the inversion described by a TOML config")
    run.add_argument("config", type=Path)
    run.add_argument("--output", type=Path, default=None, help="output directory (overrides [run] output_dir)")
    report = sub.add_parser("report", help="re-make the HTML report of a run file")
    report.add_argument("run_file", type=Path)
    report.add_argument("--output", type=Path, default=None, help="directory (default: beside the run file)")
    sub.add_parser("methods", help="list the solvers")
    return parser


def _execute(config: Config, output: Path | None) -> None:
    start = time.perf_counter()
    run = run_case(config, progress=sys.stderr.isatty())
    outdir = output or Path(config.run.output_dir)
    paths = make_outputs(run, outdir)
    post = run["land_sink_posterior"].sel(aggregate="Global land")
    sd = run["land_sink_posterior_sd"].sel(aggregate="Global land")
    print(f"posterior global land sink (PgC/yr, uptake positive), {run.attrs['method']}:")
    reference = None
    if "land_sink_truth" in run:
        reference = ("truth", run["land_sink_truth"].sel(aggregate="Global land"))
    elif "gcb_atmosphere_implied_land_sink" in run:
        reference = ("GCB S_LAND+B_IM", run["gcb_atmosphere_implied_land_sink"])
    for year in run["year"].values:
        line = f"  {year}: {float(post.sel(year=year)):6.2f} +/- {float(sd.sel(year=year)):.2f}"
        if reference is not None:
            line += f"   ({reference[0]} {float(reference[1].sel(year=year)):6.2f})"
        print(line)
    print(f"DOFS {float(run['dofs']):.1f}, reduced chi2 {float(run['chi2_reduced']):.2f}")
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            case = "osse" if args.osse else "global"
            config = Config(run=RunConfig(case=case, method=args.method), osse=OsseConfig(seed=args.seed))
            _execute(config, args.output)
        elif args.command == "run":
            _execute(load_config(args.config), args.output)
        elif args.command == "report":
            html = write_report(read_run(args.run_file), args.output or args.run_file.parent)
            print(f"report: {html}")
        elif args.command == "methods":
            for name, func in sorted(SOLVERS.items()):
                print(f"{name:14s} {'exact' if func.exact else 'approximate'}  {func.__doc__.splitlines()[0]}")
    except (ValueError, OSError) as err:
        print(f"assim: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
