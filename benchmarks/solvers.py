"""Solver benchmarks; one JSON line per case (keys ``case``, ``n``, ``m``, ``seconds`` and per case
``ratio_to_gemm``, ``nowcast_speedup``, ``ess_per_s_ratio``, ``max_rel_error``).

Cases (``python benchmarks/solvers.py [case ...]``, default all):

* ``analytic``: n = 5,000 state, m = 50,000 observations; time and its ratio to a numpy GEMM
  of the same flop count timed in the same process (goal <= 1.5).
* ``variational``: variational vs analytic as n grows (m = 500): time, iterations, kept rank,
  max relative error of the mean and of the sd (the crossover is where ``speedup`` passes 1).
* ``nowcast``: adding one month to 30 years x 22 regions with the carried full-rank ensemble vs
  re-solving everything with ``analytic`` (goal: <= 1/20 of the time), and their agreement.
* ``calibration``: OSSE 1- and 2-sigma coverage of regional annual sinks for each solver
  (``--calibration-methods``, default analytic, variational, ensemble, hierarchical) over
  ``--worlds`` seeded worlds (default 200; goal 62-74 % and 91-98 %); hierarchical with
  ``--calibration-draws`` draws and tuning steps per chain (default 200, 2 chains).
* ``peer``: hierarchical vs openghg_inversions 0.7.4 ``inferpymc`` on the peer harness's own
  ``make_problem()`` (../shared/peers): effective samples per second of four regional totals
  (basis functions grouped by quadrant of the unit square), for our marginalised model (one
  mismatch factor per site, as the peer; also with 200 tuning steps, and with one shared
  factor) and our run of the peer's lognormal model, and the agreement of posterior means and
  sds. ``ess_per_s_ratio`` is the per-site marginalised model with the peer's draws and tuning. The peer runs
  in its own virtual environment (``--peer-python``), through this file's ``--peer-worker`` mode.

Only numpy is imported at the top: the ``--peer-worker`` mode runs in the peer's environment,
which has no ``assim``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

CALIBRATED = ("analytic", "variational", "ensemble", "hierarchical")
PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers"
PEER_PYTHON = Path(__file__).resolve().parents[2] / ".venv-peer" / "bin" / "python"


def emit(record: dict) -> None:
    print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in record.items()}), flush=True)


def gemm_seconds(rows: int, inner: int, cols: int) -> float:
    """Best of two timings of a (rows, inner) @ (inner, cols) float64 product."""
    rng = np.random.default_rng(0)
    a, b = rng.random((rows, inner)), rng.random((inner, cols))
    best = np.inf
    for _ in range(2):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return best


def kronecker_problem(n_time: int, n_region: int, m: int, seed: int = 0):
    """Random linear-Gaussian problem: Kronecker B (exponential in months and km), dense H, diagonal R."""
    from assim import Problem
    from assim.covariance import DiagonalCovariance, ExponentialCorrelation, prior_covariance
    from assim.state import StateVector, month_starts
    from assim.transport import Jacobian

    rng = np.random.default_rng(seed)
    regions = synthetic_regions(n_region, rng)
    time_axis = month_starts("2000-01", "2200-12")[:n_time]
    state = StateVector(time_axis, regions)
    B = prior_covariance(
        state, rng.uniform(0.3, 1.5, state.size), ExponentialCorrelation(3.0), ExponentialCorrelation(1500.0)
    )
    H = Jacobian(rng.normal(0.0, 1.0 / np.sqrt(state.size), (m, state.size)))
    R = DiagonalCovariance(rng.uniform(0.1, 0.5, m) ** 2)
    x_prior = rng.normal(-0.2, 0.5, state.size)
    y = H.matvec(x_prior + B.sample(rng)) + R.sample(rng)
    return Problem(state, x_prior, B, H, y, R)


def synthetic_regions(n_region: int, rng: np.random.Generator):
    """A region table with random centroids; each region lies wholly in its centroid's latitude band."""
    import xarray as xr

    from assim.state import LATITUDE_BANDS

    lat = np.rad2deg(np.arcsin(rng.uniform(-1, 1, n_region)))
    lon = rng.uniform(-180, 180, n_region)
    bands = list(LATITUDE_BANDS)
    fraction = np.array(
        [[lo <= la < hi or (hi == 90 and la >= lo) for lo, hi in LATITUDE_BANDS.values()] for la in lat]
    )
    return xr.Dataset(
        {
            "region_id": ("region", np.arange(1, n_region + 1)),
            "area": ("region", np.full(n_region, 1e12)),
            "centroid_latitude": ("region", lat),
            "centroid_longitude": ("region", lon),
            "band_fraction": (("region", "band"), fraction.astype(float)),
        },
        coords={"region": [f"r{i:03d}" for i in range(n_region)], "band": bands},
    )


def case_analytic(n: int, m: int) -> dict:
    from assim import solve

    problem = kronecker_problem(n // 50, 50, m)
    n = problem.n
    t0 = time.perf_counter()
    post = solve(problem, method="analytic")
    seconds = time.perf_counter() - t0
    # state form: H L and G^T G (2 m n^2 each), two Cholesky (n^3/3 each), L K^-T (n^3), A (n^3 via syrk-like GEMM)
    flops = 4 * m * n**2 + (2 / 3 + 1 + 2) * n**3
    gemm = gemm_seconds(n, m, n) * flops / (2 * m * n**2)
    return {
        "case": "analytic",
        "n": n,
        "m": m,
        "seconds": seconds,
        "ratio_to_gemm": seconds / gemm,
        "form": post.info["form"],
    }


def case_variational(sizes: list[int], m: int) -> list[dict]:
    from assim import solve

    records = []
    for n in sizes:
        problem = kronecker_problem(n // 100, 100, m, seed=n)
        t0 = time.perf_counter()
        exact = solve(problem, method="analytic")
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        post = solve(problem, method="variational")
        t_var = time.perf_counter() - t0
        records.append(
            {
                "case": "variational",
                "n": problem.n,
                "m": m,
                "seconds": t_var,
                "analytic_seconds": t_exact,
                "speedup": t_exact / t_var,
                "iterations": post.info["iterations"],
                "rank": post.info["rank"],
                "truncation_bound": post.info["truncation_bound"],
                "max_rel_error": float(np.abs(post.mean - exact.mean).max() / np.abs(exact.mean).max()),
                "sd_max_rel_error": float(np.abs(post.sd / exact.sd - 1).max()),
            }
        )
        emit(records[-1])
    return records


def case_nowcast(years: int, n_region: int, sites: int) -> dict:
    """One more month on top of ``years`` x 12 months: carried ensemble update vs full re-solve."""
    import scipy.linalg

    from assim import Problem, solve
    from assim.covariance import DiagonalCovariance, ExponentialCorrelation, prior_covariance
    from assim.osse import DEFAULT_SITES, OsseConfig, observation_layout
    from assim.solvers.ensemble import Ensemble, nowcast
    from assim.state import StateVector, month_starts
    from assim.transport import make_transport

    rng = np.random.default_rng(0)
    regions = synthetic_regions(n_region, rng)
    months = month_starts("1990-01", f"{1990 + years}-01")  # years x 12 months, plus one
    full = StateVector(months, regions)
    config = OsseConfig(start=str(months[0])[:7], end=str(months[-1])[:7], sites=DEFAULT_SITES[:sites])
    obs = observation_layout(full, config)
    transport = make_transport("box12")
    sd = rng.uniform(0.05, 0.3, full.size)
    B = prior_covariance(full, sd, ExponentialCorrelation(3.0), ExponentialCorrelation(1500.0))
    H = transport.jacobian(full, obs)
    R = DiagonalCovariance(obs["uncertainty"].values ** 2)
    x_prior = rng.normal(-0.1, 0.3, full.size)
    y = H.matvec(x_prior + B.sample(rng)) + R.sample(rng)
    problem = Problem(full, x_prior, B, H, y, R, obs)
    t0 = time.perf_counter()
    batch = solve(problem, method="analytic")
    resolve_seconds = time.perf_counter() - t0
    # the carried run: every month but the last, solved once (any square root of A is a valid ensemble)
    old = StateVector(months[:-1], regions)
    n_old = old.size
    old_rows = np.flatnonzero(obs["time"].values < months[-1])
    new_rows = np.flatnonzero(obs["time"].values >= months[-1])
    old_problem = Problem(
        old,
        x_prior[:n_old],
        prior_covariance(old, sd[:n_old], ExponentialCorrelation(3.0), ExponentialCorrelation(1500.0)),
        transport.jacobian(old, obs.isel(obs=old_rows)),
        y[old_rows],
        DiagonalCovariance(R.variance[old_rows]),
    )
    carried_post = solve(old_problem, method="analytic")
    carried = Ensemble(
        old, x_prior[:n_old], carried_post.mean, scipy.linalg.cholesky(carried_post.covariance, lower=True)
    )
    del carried_post
    H_new = transport.jacobian(full, obs.isel(obs=new_rows))
    t0 = time.perf_counter()
    updated = nowcast(carried, full, x_prior, B, H_new, y[new_rows], DiagonalCovariance(R.variance[new_rows]))
    nowcast_seconds = time.perf_counter() - t0
    sd_now = np.sqrt(np.einsum("ij,ij->i", updated.perturbations, updated.perturbations))
    return {
        "case": "nowcast",
        "n": full.size,
        "m": problem.m,
        "seconds": nowcast_seconds,
        "resolve_seconds": resolve_seconds,
        "nowcast_speedup": resolve_seconds / nowcast_seconds,
        "members": updated.members,
        "max_rel_error": float(np.abs(updated.mean - batch.mean).max() / np.abs(batch.mean).max()),
        "sd_max_rel_error": float(np.abs(sd_now / batch.sd - 1).max()),
    }


def case_calibration(worlds: dict[str, int], options: dict[str, dict], anomaly: float | None = None) -> list[dict]:
    """Coverage over ``worlds[method]`` seeded OSSE worlds, solving each with ``options[method]``.

    ``anomaly``: the planted anomaly (PgC/yr; default the OsseConfig one). With 0 the truth is a
    pure draw from the prior (x_b, B), the world the hierarchical model's hyperpriors centre on.
    """
    planted = {} if anomaly is None else {"anomaly_pgc_per_yr": anomaly}
    from scipy.stats import norm

    from assim import solve
    from assim.osse import OsseConfig, make_world, world_problem
    from assim.posterior import annual_mean_weights, land_aggregates
    from assim.state import transcom3_land_regions
    from assim.transport import make_transport

    regions, transport = transcom3_land_regions(), make_transport("box12")
    records = []
    for method, count in worlds.items():
        z, t0 = [], time.perf_counter()
        for seed in range(count):
            config = OsseConfig(start="2023-01", end="2024-12", seed=seed, **planted)
            world = make_world(config, regions, transport)
            problem = world_problem(world, config, regions, transport)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                post = solve(problem, method=method, **options.get(method, {}))
            weights = annual_mean_weights(post.state, land_aggregates(regions)).isel(aggregate=slice(0, 11))
            totals = post.aggregate(weights)
            truth = (weights * world.truth).sum(("time", "region"))
            z.append(np.abs((totals["mean"] - truth) / totals["sd"]).values.ravel())
        z = np.concatenate(z)
        records.append(
            {
                "case": f"calibration_{method}",
                "n": problem.n,
                "m": problem.m,
                "worlds": count,
                "anomaly_pgc_per_yr": config.anomaly_pgc_per_yr,
                **options.get(method, {}),
                "intervals": int(z.size),
                "seconds": time.perf_counter() - t0,
                "coverage_1sigma": float((z <= norm.ppf(0.841345)).mean()),
                "coverage_2sigma": float((z <= norm.ppf(0.97725)).mean()),
            }
        )
        emit(records[-1])
    return records


# ----------------------------------------------------------------------------------------------
# hierarchical vs openghg_inversions


def peer_problem(n: int, m: int, seed: int):
    """The peer harness's ``make_problem`` (plain numpy) and its basis centres (its first draw)."""
    sys.path.insert(0, str(PEERS))
    from openghg_bench import make_problem

    centres = np.random.default_rng(seed).uniform(0, 1, size=(n, 2))
    return make_problem(n, m, 4, seed, 5.0, 1.0), centres


def quadrant_weights(centres: np.ndarray) -> np.ndarray:
    """(4, n): basis functions summed by quadrant of the unit square (the 'regional totals')."""
    quadrant = (centres[:, 0] >= 0.5).astype(int) + 2 * (centres[:, 1] >= 0.5)
    return np.eye(4)[quadrant].T


def peer_worker(out: str, n: int, m: int, tune: int, draws: int, chains: int, seed: int) -> None:
    """Run openghg_inversions' inferpymc as the harness does; save x draws (chain, draw, n) and wall time."""
    (H, Hbc, y, _, _, site_of_obs), _ = peer_problem(n, m, seed)
    from openghg_bench import XPRIORS, make_inv_inputs

    inv_inputs = make_inv_inputs(H, Hbc, y, site_of_obs, 1.0, 0.0)
    from openghg_inversions.hbmcmc.inversion_pymc import inferpymc

    walls = []
    for _ in range(2):  # the first run fills the PyTensor compile cache; report the warm one
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            res = inferpymc(
                inv_inputs,
                xprior=dict(XPRIORS["lognormal"]),
                bcprior={"pdf": "truncatednormal", "mu": 1.0, "sigma": 0.05, "lower": 0.0},
                sigprior={"pdf": "uniform", "lower": 0.1, "upper": 3.0},
                nuts_sampler="pymc",
                nit=draws,
                burn=0,
                tune=tune,
                nchain=chains,
                sigma_per_site=True,
                use_bc=True,
                sampler_kwargs={"random_seed": seed},
            )
            walls.append(time.perf_counter() - t0)
    x = res["trace"].posterior["x"].transpose("chain", "draw", "nx").values.astype(float)
    np.savez(out, x=x, wall=np.array(walls))


def our_peer_problem(n: int, m: int, seed: int):
    """The same problem for assim: state = n scaling factors + 4 boundary factors, prior mean 1."""
    import xarray as xr

    from assim import Problem
    from assim.covariance import DiagonalCovariance
    from assim.state import StateVector
    from assim.transport import Jacobian

    (H, Hbc, y, x_true, _, site_of_obs), centres = peer_problem(n, m, seed)
    k = n + Hbc.shape[0]
    regions = xr.Dataset(coords={"region": [f"basis {i}" for i in range(n)] + [f"bc {i}" for i in range(Hbc.shape[0])]})
    state = StateVector(np.array(["2020-01-01"], dtype="datetime64[ns]"), regions)
    sites = np.array([f"site {s}" for s in site_of_obs])
    obs = xr.Dataset(coords={"site": ("obs", sites), "category": ("obs", sites)})  # mismatch factor per site
    B = DiagonalCovariance(np.r_[np.ones(n), np.full(Hbc.shape[0], 0.05**2)])  # lognormal(1, 1) moments; bc 5 %
    problem = Problem(state, np.ones(k), B, Jacobian(np.vstack([H, Hbc]).T), y, DiagonalCovariance(np.ones(m)), obs)
    return problem, centres, x_true


def ess_per_second(draws: np.ndarray, weights: np.ndarray, seconds: float) -> tuple[float, float]:
    """(min bulk ESS of the regional totals, that / seconds); draws (chain, draw, n)."""
    import arviz as az

    totals = np.einsum("cdn,qn->cdq", draws, weights)
    ess = float(np.min(az.ess(az.convert_to_dataset({"total": totals}))["total"].values))
    return ess, ess / seconds


def case_peer(n: int, m: int, tune: int, draws: int, chains: int, seed: int, peer_python: Path) -> dict:
    from assim import solve
    from assim.solvers.hierarchical import HierarchicalConfig

    problem, centres, x_true = our_peer_problem(n, m, seed)
    W = quadrant_weights(centres)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.npz"
        command = [str(peer_python), __file__, "--peer-worker", str(out), "--n", str(n), "--m", str(m)]
        command += ["--tune", str(tune), "--draws", str(draws), "--chains", str(chains), "--seed", str(seed)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peer = np.load(out)
        peer_x, peer_wall = peer["x"], float(peer["wall"][-1])
    record = {"case": "hierarchical_vs_openghg", "n": n, "m": m, "tune": tune, "draws": draws, "chains": chains}
    peer_ess, peer_rate = ess_per_second(peer_x, W, peer_wall)
    record |= {"peer_seconds": peer_wall, "peer_ess_min": peer_ess, "peer_ess_per_s": peer_rate}
    peer_mean, peer_sd = peer_x.reshape(-1, n).mean(0), peer_x.reshape(-1, n).std(0, ddof=1)
    totals_peer = (peer_x.reshape(-1, n) @ W.T).mean(0)
    shared = replace(problem, obs=problem.obs.assign_coords(category=("obs", np.full(m, "all"))))
    # label: (problem, scaling, tuning steps); "shared": one mismatch factor for all sites (O(n) eigen form);
    # "short_tune": the same draws after 200 tuning steps (ample for nutpie on 5 hyperparameters)
    variants = {
        "marginalised": (problem, "gaussian", tune),
        "marginalised_short_tune": (problem, "gaussian", min(tune, 200)),
        "marginalised_shared_mismatch": (shared, "gaussian", tune),
        "lognormal": (problem, "lognormal", tune),
    }
    for label, (variant, scaling, variant_tune) in variants.items():
        config = HierarchicalConfig(draws=draws, tune=variant_tune, chains=chains, seed=seed, scaling=scaling)
        for _ in range(2):  # first run fills the numba/PyTensor caches; report the warm one
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                t0 = time.perf_counter()
                post = solve(variant, method="hierarchical", config=config)
                seconds = time.perf_counter() - t0
        ours = post.info["idata"].posterior["flux"].values.reshape(chains, draws, -1)[..., :n]
        ess, rate = ess_per_second(ours, W, seconds)
        mean, sd = post.mean[:n], post.sd[:n]
        record |= {
            f"{label}_seconds": seconds,
            f"{label}_ess_min": ess,
            f"{label}_ess_per_s": rate,
            f"{label}_rhat_max": post.info["rhat_max"],
            f"{label}_ess_per_s_ratio": rate / peer_rate,
            f"{label}_mean_max_abs_diff_in_peer_sd": float(np.abs(mean - peer_mean).max() / peer_sd.mean()),
            f"{label}_sd_ratio_mean": float((sd / peer_sd).mean()),
            f"{label}_rmse_vs_truth": float(np.sqrt(np.mean((mean - x_true) ** 2))),
            # regional totals: the agreement that matters for a budget
            f"{label}_totals_max_rel_error": float(np.abs((ours.reshape(-1, n) @ W.T).mean(0) / totals_peer - 1).max()),
        }
        if label == "marginalised":
            record["seconds"] = seconds
    record["ess_per_s_ratio"] = record["marginalised_ess_per_s_ratio"]
    record["peer_rmse_vs_truth"] = float(np.sqrt(np.mean((peer_mean - x_true) ** 2)))
    record["max_rel_error"] = record["marginalised_totals_max_rel_error"]
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", default=["analytic", "variational", "nowcast", "calibration", "peer"])
    parser.add_argument("--peer-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--peer-python", type=Path, default=PEER_PYTHON)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--m", type=int, default=2000)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--analytic-n", type=int, default=5000)
    parser.add_argument("--analytic-m", type=int, default=50000)
    parser.add_argument("--variational-n", type=int, nargs="+", default=[1000, 2000, 5000, 10000, 20000])
    parser.add_argument("--variational-m", type=int, default=500)
    parser.add_argument("--nowcast-years", type=int, default=30)
    parser.add_argument("--worlds", type=int, default=200, help="OSSE worlds per solver (calibration)")
    parser.add_argument("--calibration-methods", nargs="+", default=list(CALIBRATED))
    parser.add_argument("--anomaly-pgc", type=float, default=None, help="planted OSSE anomaly (PgC/yr)")
    parser.add_argument("--calibration-draws", type=int, default=200, help="hierarchical draws (= tune) per chain")
    args = parser.parse_args(argv)
    if args.peer_worker:
        peer_worker(args.peer_worker, args.n, args.m, args.tune, args.draws, args.chains, args.seed)
        return
    os.environ.setdefault("ASSIM_CACHE_DIR", tempfile.mkdtemp(prefix="assim-cache-"))
    for case in args.cases:
        if case == "analytic":
            emit(case_analytic(args.analytic_n, args.analytic_m))
        elif case == "variational":
            case_variational(args.variational_n, args.variational_m)
        elif case == "nowcast":
            emit(case_nowcast(args.nowcast_years, 22, 12))
        elif case == "calibration":
            draws = args.calibration_draws
            case_calibration(
                dict.fromkeys(args.calibration_methods, args.worlds),
                {"hierarchical": {"draws": draws, "tune": draws, "chains": 2}},
                args.anomaly_pgc,
            )
        elif case == "peer":
            emit(case_peer(args.n, args.m, args.tune, args.draws, args.chains, args.seed, args.peer_python))
        else:
            parser.error(f"unknown case {case!r}")


if __name__ == "__main__":
    main()
