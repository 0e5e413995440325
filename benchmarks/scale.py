"""Scale benchmark: variational solve through a chunked, out-of-core footprint Jacobian.

One JSON line per case with ``m`` (observations), ``n`` (state: 100 months x 100 regions),
``seconds`` (the solve), ``peak_memory_gb`` (largest summed RSS of this process and every
dask worker while solving, sampled every 50 ms), ``workers`` (LocalCluster worker processes,
one thread each), plus ``build_seconds`` (writing H), ``iterations``, ``seconds_per_iteration``,
``store_gb`` (H on disk) and ``per_obs_ratio``: seconds per observation and iteration relative
to the smallest case with the same workers (1.0 = cost exactly linear in m). A last line gives
``speedup`` = seconds with 1 worker / seconds with 2 workers at the same m.

H is :func:`assim.transport.synthetic.write_synthetic_jacobian`: plume footprints from 50
random sites over a 40 x 60 degree domain of 10 x 10 regions, 32 non-zeros per row, float32.
B: 0.3 PgC/yr sd, 3-month and 1500 km exponential correlations; R: 1 ppm^2 diagonal.

Usage: ``python benchmarks/scale.py`` (m = 1e5 and 3e5 on 2 workers, 3e5 on 1 worker) or
``python benchmarks/scale.py --full`` (adds m = 1e6, about 30 minutes on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from assim.covariance import DiagonalCovariance, ExponentialCorrelation, prior_covariance
from assim.distributed import scheduler
from assim.problem import Problem
from assim.solvers import solve
from assim.solvers.variational import ConvergenceError
from assim.state import StateVector, month_starts
from assim.transport.synthetic import block_regions, write_synthetic_jacobian

GTOL, MAX_ITER, RANK = 1e-6, 200, 20


def emit(record: dict) -> None:
    print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in record.items()}), flush=True)


class PeakMemory:
    """Largest summed RSS (GB) of this process and its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**30

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def state() -> StateVector:
    latitude, longitude = np.arange(30.25, 70.0, 0.5), np.arange(-19.75, 40.0, 0.5)
    _, regions = block_regions(latitude, longitude, 10, 10)
    return StateVector(month_starts("2000-01", "2008-04"), regions)


def case(m: int, workers: int, workdir: Path) -> dict:
    """Build H for m observations and solve on a LocalCluster of ``workers``; the record of :func:`emit`."""
    st = state()
    B = prior_covariance(st, np.full(st.size, 0.3), ExponentialCorrelation(3.0), ExponentialCorrelation(1500.0))
    rng = np.random.default_rng(1)
    x_true = B.sample(rng)
    store = workdir / f"H_{m}.zarr"
    with scheduler(n_workers=workers) as cluster:
        cluster.client().wait_for_workers(workers)
        t0 = time.perf_counter()
        H = write_synthetic_jacobian(store, st, m)
        build = time.perf_counter() - t0
        y = H.matvec(x_true) + rng.standard_normal(m)
        problem = Problem(st, np.zeros(st.size), B, H, y, DiagonalCovariance(np.ones(m)))
        with PeakMemory() as memory:
            t0 = time.perf_counter()
            try:
                post = solve(problem, method="variational", gtol=GTOL, max_iter=MAX_ITER, rank=RANK)
            except ConvergenceError as err:
                post = err.result
            seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**30
    iterations = post.info["iterations"]
    return {
        "case": "variational_chunked",
        "m": m,
        "n": st.size,
        "seconds": seconds,
        "peak_memory_gb": memory.peak,
        "workers": workers,
        "build_seconds": build,
        "iterations": iterations,
        "seconds_per_iteration": seconds / iterations,
        "gradient_reduction": post.info["gradient_reduction"],
        "store_gb": size,
    }


def emit_speedup(records: list[dict]) -> None:
    """The 1- vs 2-worker line, from the last 1-worker record and the 2-worker record of the same m."""
    one = records[-1]
    two = next(r for r in records if r["workers"] == 2 and r["m"] == one["m"])
    emit(
        {
            "case": "workers_speedup",
            "m": one["m"],
            "n": one["n"],
            "seconds": two["seconds"],
            "workers": 2,
            "speedup": one["seconds_per_iteration"] / two["seconds_per_iteration"],
            "peak_memory_gb": two["peak_memory_gb"],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also m = 1e6 (several minutes)")
    args = parser.parse_args()
    runs = [(100_000, 2), (300_000, 2), (300_000, 1)] + ([(1_000_000, 2)] if args.full else [])
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="assim-scale-") as tmp:
        for m, workers in runs:
            record = case(m, workers, Path(tmp))
            reference = next((r for r in records if r["workers"] == workers), record)
            per_obs = record["seconds_per_iteration"] / record["m"]
            record["per_obs_ratio"] = per_obs / (reference["seconds_per_iteration"] / reference["m"])
            records.append(record)
            emit(record)
            if workers == 1:
                emit_speedup(records)


if __name__ == "__main__":
    main()
