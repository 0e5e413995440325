"""OSSE calibration and end-to-end demo time; one JSON line per case.

Calibration: over many seeded synthetic worlds (truth = prior + draw from B + a planted
2023 tropical anomaly), the share of regional and aggregate annual sinks whose truth lies
inside the posterior 1- and 2-sigma intervals (goal 62-74 % and 91-98 %).
Demo: wall time of the two demo chains (real global case; synthetic world), data to report, and
its ratio to a dense (n, n) x (n, min(m, n)) GEMM in the same process (a machine-speed yardstick).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np
from scipy.stats import norm

from assim import solve
from assim.config import Config, RunConfig
from assim.osse import OsseConfig, make_world, world_problem
from assim.pipeline import run as run_case
from assim.posterior import annual_mean_weights, land_aggregates
from assim.report import make_outputs
from assim.state import transcom3_land_regions
from assim.transport import make_transport


def calibration(n_worlds: int, start: str, end: str) -> dict:
    regions, transport = transcom3_land_regions(), make_transport("box12")
    z_all, z_tropics_2023 = [], []
    t0 = time.perf_counter()
    for seed in range(n_worlds):
        config = OsseConfig(start=start, end=end, seed=seed)
        world = make_world(config, regions, transport)
        post = solve(world_problem(world, config, regions, transport))
        weights = annual_mean_weights(post.state, land_aggregates(regions))
        totals = post.aggregate(weights)
        truth = (weights * world.truth).sum(("time", "region"))
        z = ((totals["mean"] - truth) / totals["sd"]).transpose("year", "aggregate")
        z_all.append(z.values.ravel())
        z_tropics_2023.append(float(z.sel(year=2023, aggregate="Tropics (30S-30N)")))
    z = np.abs(np.concatenate(z_all))
    return {
        "case": "osse_calibration",
        "worlds": n_worlds,
        "period": f"{start}..{end}",
        "intervals": int(z.size),
        "coverage_1sigma": round(float((z <= norm.ppf(0.841345)).mean()), 4),
        "coverage_2sigma": round(float((z <= norm.ppf(0.97725)).mean()), 4),
        "coverage_1sigma_tropics_2023": round(float((np.abs(z_tropics_2023) <= 1).mean()), 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def demo_time(case: str) -> dict:
    """Wall time of ``assim demo`` (case "global") or ``assim demo --osse`` (case "osse") without the CLI."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = run_case(Config(run=RunConfig(case=case)), progress=False)
        make_outputs(run, tmp)
        seconds = time.perf_counter() - t0
    n, m = run.sizes["time"] * run.sizes["region"], run.sizes["obs"]
    a, b = np.random.default_rng(0).random((n, n)), np.random.default_rng(1).random((n, min(m, n)))
    t0 = time.perf_counter()
    a @ b
    gemm = time.perf_counter() - t0
    return {
        "case": f"demo_{case}",
        "n": n,
        "m": m,
        "seconds": round(seconds, 2),
        "ratio_to_gemm": round(seconds / gemm, 1),
    }


if __name__ == "__main__":
    os.environ.setdefault("ASSIM_CACHE_DIR", tempfile.mkdtemp(prefix="assim-cache-"))
    n_worlds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print(json.dumps(demo_time("global")), flush=True)
    print(json.dumps(demo_time("osse")), flush=True)
    print(json.dumps(calibration(n_worlds, "2020-01", "2024-12")), flush=True)
