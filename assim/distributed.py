"""Where dask work runs: a running dask.distributed scheduler, or a LocalCluster sized to the machine.

Everything chunked in assim (footprint projection, products with a
:class:`~assim.transport.chunked.ChunkedJacobian`, synthetic Jacobians) is a dask graph, so it
runs on whichever scheduler is active. :func:`scheduler` makes one active for a block:

- ``scheduler("tcp://host:8786")`` connects to an existing cluster (workers must see the same
  files: footprints, region masks and Jacobian stores on a shared filesystem);
- ``scheduler()`` runs on a :class:`distributed.LocalCluster` with one single-threaded worker
  process per core, started only when the block first computes something with dask (a run
  of the 12-box model never starts it) and closed at the end of the block.

``assim run --scheduler ADDRESS`` wraps the run in ``scheduler(ADDRESS)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask
from distributed import Client, LocalCluster, get_worker


class LazyLocalCluster:
    """A dask scheduler function that starts a LocalCluster at its first call.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: ``os.cpu_count()``), one thread each.
    processes : bool
        Workers in separate processes (True) or as threads of this process (False, for tests).
    """

    def __init__(self, n_workers: int | None = None, processes: bool = True) -> None:
        self.n_workers = n_workers
        self.processes = processes
        self.client_: Client | None = None

    def client(self) -> Client:
        """The cluster's client, starting the cluster on first use."""
        if self.client_ is None:
            cluster = LocalCluster(
                n_workers=self.n_workers or os.cpu_count() or 1,
                threads_per_worker=1,
                processes=self.processes,
                dashboard_address=":0",
            )
            self.client_ = Client(cluster, set_as_default=False)
        return self.client_

    def __call__(self, dsk, keys, **kwargs):  # the dask "get" protocol
        try:
            get_worker()
        except ValueError:
            return self.client().get(dsk, keys, **kwargs)
        # Inside a task on a worker (dask config, hence this scheduler, travels with it): run
        # the task's own small graphs (e.g. reading a lazily opened file) in place.
        return dask.get(dsk, keys, **kwargs)

    def close(self) -> None:
        """Shut the cluster down (if it was started)."""
        if self.client_ is not None:
            cluster = self.client_.cluster
            self.client_.close()
            cluster.close()
            self.client_ = None


@contextmanager
def scheduler(
    address: str | None = None, n_workers: int | None = None, processes: bool = True
) -> Iterator[Client | LazyLocalCluster]:
    """Run the dask work of the ``with`` block on ``address``, or on a LocalCluster (module docstring).

    Parameters
    ----------
    address : str, optional
        Address of a running dask.distributed scheduler, e.g. ``"tcp://10.0.0.5:8786"``.
    n_workers, processes
        For the LocalCluster when ``address`` is None (see :class:`LazyLocalCluster`).

    Yields
    ------
    Client or LazyLocalCluster
        The connection (its ``client()`` method, for the LocalCluster, starts it).
    """
    if address:
        try:
            client = Client(address, timeout="10s")
        except OSError as err:
            raise ValueError(f"cannot reach the dask scheduler at {address!r}: {err}; is it running?") from err
        with client:
            yield client
        return
    lazy = LazyLocalCluster(n_workers, processes)
    try:
        with dask.config.set(scheduler=lazy):
            yield lazy
    finally:
        lazy.close()
