"""Out-of-core H at small scale: the variational solve through a chunked store, and dask.distributed runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from distributed import LocalCluster, get_task_stream

from assim.cli import main
from assim.covariance import DiagonalCovariance, ExponentialCorrelation, prior_covariance
from assim.distributed import scheduler
from assim.problem import Problem
from assim.solvers import solve
from assim.state import StateVector, month_starts
from assim.transport import Jacobian
from assim.transport.chunked import ChunkedJacobian
from assim.transport.synthetic import block_regions, write_synthetic_jacobian


@pytest.fixture(scope="module")
def state() -> StateVector:
    _, regions = block_regions(np.arange(40.25, 52.0, 0.5), np.arange(-4.75, 14.0, 0.5), 3, 3)
    return StateVector(month_starts("2020-01", "2020-04"), regions)


@pytest.fixture(scope="module")
def store(state: StateVector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scale") / "H.zarr"
    write_synthetic_jacobian(path, state, n_obs=500, n_sites=6, nnz=5, seed=2, chunk_obs=64)
    return path


def test_variational_through_the_chunked_store_matches_analytic(state: StateVector, store: Path) -> None:
    H = ChunkedJacobian(store)
    assert H.shape == (500, state.size) and H.nnz == 5 and H.chunks == 64
    B = prior_covariance(state, np.full(state.size, 0.4), ExponentialCorrelation(2.0), ExponentialCorrelation(500.0))
    rng = np.random.default_rng(7)
    y = H.matvec(B.sample(rng)) + 0.5 * rng.standard_normal(500)
    R = DiagonalCovariance(np.full(500, 0.25))
    chunked = solve(Problem(state, np.zeros(state.size), B, H, y, R), method="variational")
    dense = solve(Problem(state, np.zeros(state.size), B, Jacobian(H.todense()), y, R), method="analytic")
    np.testing.assert_allclose(chunked.mean, dense.mean, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(chunked.covariance.diagonal(), np.diag(dense.covariance), rtol=0.02)


def test_products_and_building_on_a_local_cluster(state: StateVector, store: Path, tmp_path: Path) -> None:
    H = ChunkedJacobian(store)
    rng = np.random.default_rng(8)
    x, y, variance = rng.normal(size=state.size), rng.normal(size=500), rng.uniform(1, 2, 500)
    local = H.matvec(x), H.rmatvec(y), H.normal_matrix(variance).toarray()
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        scheduler(cluster.scheduler_address) as client,
        get_task_stream(client) as tasks,
    ):
        on_cluster = H.matvec(x), H.rmatvec(y), H.normal_matrix(variance).toarray()
        write_synthetic_jacobian(tmp_path / "H.zarr", state, n_obs=500, n_sites=6, nnz=5, seed=2, chunk_obs=64)
    assert len(tasks.data) >= 3 * 8  # every chunk of every product ran on the cluster's worker
    for a, b in zip(local, on_cluster, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    for name in ("column", "value"):  # the same store, built chunk by chunk on the cluster
        np.testing.assert_array_equal(
            zarr.open_array(tmp_path / "H.zarr", path=name)[:], zarr.open_array(store, path=name)[:]
        )


def test_cli_takes_a_scheduler_address(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[run]\nmethod = 'nope'\n")  # fails at load, before any scheduler is contacted
    assert main(["run", str(config), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "method 'nope' unknown" in capsys.readouterr().err


def test_the_local_cluster_starts_only_when_dask_runs(store: Path) -> None:
    H = ChunkedJacobian(store)
    x = np.ones(H.shape[1])
    with scheduler(n_workers=1, processes=False) as lazy:
        assert lazy.client_ is None
        np.testing.assert_allclose(H.matvec(x), H.todense() @ x, rtol=1e-12)
        assert lazy.client_ is not None and len(lazy.client_.scheduler_info()["workers"]) == 1
    assert lazy.client_ is None  # closed with the block


@pytest.mark.slow  # a whole OSSE run (~20 s here); the scheduler itself is tested above
def test_cli_run_on_a_scheduler_address(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "short.toml"
    config.write_text(
        '[osse]\nstart = "2023-01"\nend = "2023-12"\n[run]\ncase = "osse"\nreference_period = [2023, 2023]\n'
    )
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
        assert (
            main(["run", str(config), "--output", str(tmp_path / "out"), "--scheduler", cluster.scheduler_address]) == 0
        )
    assert "posterior land sink, Global land" in capsys.readouterr().out
