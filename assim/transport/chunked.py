"""H out of core: a Jacobian stored as a chunked zarr array, applied chunk by chunk with dask.

Layout of a store (a zarr v3 group, one directory)::

    column  (obs, nnz) int32     state index of each stored entry of a row
    value   (obs, nnz) float32   d(obs ppm) / d(state PgC/yr) of that entry (0 for padding)
    attrs   format, n_state, units, and whatever the writer adds (state labels, sources)

Each row keeps at most ``nnz`` entries (padded with column 0, value 0): the "ELLPACK" sparse
layout, chunked along ``obs`` only, so a chunk is a block of whole rows. A footprint row
projected on (region, month) has at most one month's regions non-zero, so ``nnz`` = the
number of regions; a dense H is the special case ``nnz = n`` with ``column = 0..n-1``.

:class:`ChunkedJacobian` reads the store lazily with :func:`dask.array.from_zarr` and never
holds H in memory: ``matvec`` maps each chunk to its rows' products, ``rmatvec`` maps each
chunk to its contribution H_c^T y_c and sums them by dask's tree reduction, and
:meth:`ChunkedJacobian.normal_matrix` accumulates H^T R^-1 H (sparse) the same way. The
work runs on whatever dask scheduler is active: the threaded default, or a
``dask.distributed`` client (see :mod:`assim.distributed`).
"""

from __future__ import annotations

import operator
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import scipy.sparse
import zarr
from scipy.sparse.linalg import LinearOperator

from assim.covariance import DiagonalCovariance

STORE_FORMAT = "assim chunked jacobian (ELLPACK rows) v1"
H_UNITS = "ppm (PgC yr-1)-1"
#: Decompressed bytes per chunk the default chunking aims at (values + columns).
CHUNK_BYTES = 8 * 2**20
#: :meth:`ChunkedJacobian.todense` refuses matrices larger than this (bytes, float64).
DENSE_LIMIT_BYTES = 2 * 2**30


def default_chunk_obs(nnz: int) -> int:
    """Rows per chunk so that one chunk of ``column`` + ``value`` is about :data:`CHUNK_BYTES`."""
    return max(1, CHUNK_BYTES // (8 * max(nnz, 1)))


@contextmanager
def atomic_store(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` (a directory store).

    If the body raises, the temporary directory is removed and ``path`` is left as it was.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise ValueError(f"cannot write {target}: directory {target.parent} does not exist")
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class JacobianWriter:
    """Fill a new store row block by row block (see the module docstring for the layout).

    Parameters
    ----------
    path : path-like
        Directory of the zarr group to create (written in place; wrap in :func:`atomic_store`).
    shape : (int, int)
        (m observations, n state elements).
    nnz : int
        Entries kept per row (at most n).
    chunk_obs : int, optional
        Rows per chunk (default :func:`default_chunk_obs`).
    attrs : dict, optional
        JSON-serialisable metadata stored with the group (e.g. state labels, source files).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: tuple[int, int],
        nnz: int,
        chunk_obs: int | None = None,
        attrs: dict | None = None,
    ) -> None:
        m, n = (int(s) for s in shape)
        if not 0 < nnz <= n:
            raise ValueError(f"nnz (entries per row) must be in 1..n = {n}, got {nnz}")
        chunk = chunk_obs or default_chunk_obs(nnz)
        self.path, self.shape, self.nnz = Path(path), (m, n), int(nnz)
        group = zarr.open_group(self.path, mode="w")
        group.attrs.update({**(attrs or {}), "format": STORE_FORMAT, "n_state": n, "units": H_UNITS})
        # uncompressed: footprint values compress ~1.6x but decompression triples the read time of a pass
        layout = {"shape": (m, nnz), "chunks": (min(chunk, m), nnz), "compressors": None}
        self.column = group.create_array("column", dtype="int32", **layout)
        self.value = group.create_array("value", dtype="float32", **layout)

    def write(self, start: int, column: np.ndarray, value: np.ndarray) -> None:
        """Store rows ``start .. start + len(value)``: ``column`` and ``value`` of shape (rows, k), k <= nnz.

        Padding beyond k is filled with column 0, value 0. Columns must lie in 0..n-1.
        """
        column, value = np.atleast_2d(column), np.atleast_2d(value)
        rows, k = value.shape
        if column.shape != value.shape or k > self.nnz:
            raise ValueError(
                f"{self.path}: rows {start}..{start + rows} have column shape {column.shape} and value "
                f"shape {value.shape}; both must be (rows, k) with k <= nnz = {self.nnz}"
            )
        if rows and (column.min() < 0 or column.max() >= self.shape[1]):
            raise ValueError(f"{self.path}: rows {start}..{start + rows} have columns outside 0..{self.shape[1] - 1}")
        pad = ((0, 0), (0, self.nnz - k))
        self.column[start : start + rows] = np.pad(column.astype(np.int32), pad)
        self.value[start : start + rows] = np.pad(value.astype(np.float32), pad)


def write_dense(matrix: np.ndarray, path: str | os.PathLike[str], chunk_obs: int | None = None) -> Path:
    """Store a dense (m, n) matrix (rows kept whole, ``nnz = n``) atomically; for tests and small H."""
    matrix = np.asarray(matrix, dtype=float)
    m, n = matrix.shape
    with atomic_store(path) as tmp:
        writer = JacobianWriter(tmp, (m, n), n, chunk_obs)
        writer.write(0, np.broadcast_to(np.arange(n), (m, n)), matrix)
    return Path(path)


def _block(column: np.ndarray, value: np.ndarray, n: int) -> scipy.sparse.csr_matrix:
    """The rows of one chunk as a CSR matrix (rows, n); padding entries are explicit zeros."""
    rows, nnz = value.shape
    indptr = np.arange(0, rows * nnz + 1, nnz)
    return scipy.sparse.csr_matrix((value.astype(float).ravel(), column.ravel(), indptr), shape=(rows, n))


def _block_matmat(column: np.ndarray, value: np.ndarray, X: np.ndarray) -> np.ndarray:
    return _block(column, value, X.shape[0]) @ X


def _block_rmatmat(column: np.ndarray, value: np.ndarray, Y: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(_block(column, value, n).T @ Y)


def _block_normal(column: np.ndarray, value: np.ndarray, weight: np.ndarray, n: int) -> scipy.sparse.csr_matrix:
    block = _block(column, value, n)
    return (block.T @ scipy.sparse.diags(weight) @ block).tocsr()


def _tree_sum(parts: list) -> object:
    """Sum delayed parts pairwise (a binary tree), so few partial sums are alive at once."""
    while len(parts) > 1:
        parts = [
            dask.delayed(operator.add)(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


class ChunkedJacobian(LinearOperator):
    """H (obs, state) read chunk by chunk from a zarr store; products run on dask.

    Parameters
    ----------
    path : path-like
        A store written by :class:`JacobianWriter` (module docstring). Held open lazily; with a
        ``dask.distributed`` cluster every worker must see the same path (shared filesystem).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            group = zarr.open_group(self.path, mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
            raise ValueError(f"{self.path}: no Jacobian store here; write one with JacobianWriter") from err
        self.attrs = group.attrs.asdict()
        if self.attrs.get("format") != STORE_FORMAT:
            raise ValueError(
                f"{self.path}: attribute 'format' is {self.attrs.get('format')!r}, expected {STORE_FORMAT!r}; "
                "rebuild the store with this version of assim"
            )
        self._column = da.from_zarr(str(self.path), component="column")
        self._value = da.from_zarr(str(self.path), component="value")
        super().__init__(dtype=np.float64, shape=(self._value.shape[0], int(self.attrs["n_state"])))

    def __repr__(self) -> str:
        m, n = self.shape
        return f"ChunkedJacobian({self.path.name}: {m} obs x {n} state, {self.nnz} per row, {self.chunks} rows/chunk)"

    @property
    def nnz(self) -> int:
        """Entries stored per row."""
        return int(self._value.shape[1])

    @property
    def chunks(self) -> int:
        """Rows per chunk."""
        return int(self._value.chunks[0][0])

    def _blocks(self) -> Iterator[tuple[slice, object, object]]:
        """(rows, delayed column block, delayed value block) per chunk."""
        edges = np.cumsum((0, *self._value.chunks[0]))
        delayed = zip(self._column.to_delayed().ravel(), self._value.to_delayed().ravel(), strict=True)
        for lo, hi, (column, value) in zip(edges[:-1], edges[1:], delayed, strict=True):
            yield slice(int(lo), int(hi)), column, value

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        X = dask.delayed(np.asarray(X, dtype=float).reshape(self.shape[1], -1))
        parts = [dask.delayed(_block_matmat)(column, value, X) for _, column, value in self._blocks()]
        return np.concatenate(dask.compute(*parts))

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.reshape(x, (-1, 1)))[:, 0]

    def _rmatmat(self, Y: np.ndarray) -> np.ndarray:
        Y = np.asarray(Y, dtype=float).reshape(self.shape[0], -1)
        n = self.shape[1]
        parts = [dask.delayed(_block_rmatmat)(column, value, Y[rows], n) for rows, column, value in self._blocks()]
        return dask.compute(_tree_sum(parts))[0]

    def _rmatvec(self, y: np.ndarray) -> np.ndarray:
        return self._rmatmat(np.reshape(y, (-1, 1)))[:, 0]

    def normal_matrix(self, R: DiagonalCovariance | np.ndarray) -> scipy.sparse.csr_matrix:
        """H^T R^-1 H (n, n), (ppm per PgC/yr)^2 / ppm^2, accumulated over chunks (sparse).

        Parameters
        ----------
        R : DiagonalCovariance or ndarray (obs,)
            Observation-error covariance (its variances, ppm^2). Correlated errors would couple
            chunks; whiten them first (rows of R^-1/2 H) and pass unit variances.
        """
        if isinstance(R, DiagonalCovariance):
            variance = R.variance
        elif isinstance(R, np.ndarray) and R.ndim == 1:
            variance = R
        else:
            raise TypeError(
                f"normal_matrix needs a DiagonalCovariance or a vector of variances, got {type(R).__name__}; "
                "for correlated errors store R^-1/2 H and pass unit variances"
            )
        if variance.shape != (self.shape[0],):
            raise ValueError(f"R has {variance.size} variances for {self.shape[0]} observations")
        weight, n = 1.0 / variance, self.shape[1]
        parts = [dask.delayed(_block_normal)(column, value, weight[rows], n) for rows, column, value in self._blocks()]
        return dask.compute(_tree_sum(parts))[0].tocsr()

    def todense(self) -> np.ndarray:
        """The full (m, n) matrix, for small problems (the analytic solver); refuses above 2 GiB."""
        m, n = self.shape
        if 8 * m * n > DENSE_LIMIT_BYTES:
            raise MemoryError(
                f"{self.path}: a dense H of {m} x {n} needs {8 * m * n / 2**30:.1f} GiB; "
                "use a solver that only applies H (method 'variational')"
            )
        return self.matmat(np.eye(n))
