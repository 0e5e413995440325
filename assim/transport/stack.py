"""Several observation types in one Problem: H stacked by rows, R block-diagonal, y concatenated;
and parts of a state side by side (:class:`ColumnStack`).

Surface mole fractions (ppm), satellite XCO2 (ppm) and tower NEE (gC m-2 d-1) constrain the same
state through their own operators; the errors of different types are independent, so R is
block-diagonal and the joint posterior equals assimilating the types one after the other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.sparse.linalg import LinearOperator

from assim.covariance import BlockDiagonalCovariance, DiagonalCovariance, to_dense
from assim.problem import Problem
from assim.state import StateVector


class RowStack(LinearOperator):
    """[H_1; H_2; ...]: operators on one state stacked by rows (observations in block order)."""

    def __init__(self, blocks: list[LinearOperator]) -> None:
        widths = {b.shape[1] for b in blocks}
        if len(widths) != 1:
            raise ValueError(f"stacked operators must share the state size; found widths {sorted(widths)}")
        self.blocks = list(blocks)
        self.edges = np.cumsum([0] + [b.shape[0] for b in blocks])
        super().__init__(dtype=np.float64, shape=(int(self.edges[-1]), widths.pop()))

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        X = np.reshape(X, (self.shape[1], -1))
        return np.concatenate([np.asarray(b.matmat(X)).reshape(b.shape[0], -1) for b in self.blocks])

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.reshape(x, (-1, 1)))[:, 0]

    def _rmatmat(self, Y: np.ndarray) -> np.ndarray:
        Y = np.reshape(Y, (self.shape[0], -1))
        parts = zip(self.blocks, self.edges[:-1], self.edges[1:], strict=True)
        return sum(np.asarray(b.rmatmat(Y[lo:hi])).reshape(self.shape[1], -1) for b, lo, hi in parts)

    def _rmatvec(self, y: np.ndarray) -> np.ndarray:
        return self._rmatmat(np.reshape(y, (-1, 1)))[:, 0]


class ColumnStack(LinearOperator):
    """[H_1, H_2, ...]: the parts of a state (e.g. fluxes, then per-site offsets) side by side."""

    def __init__(self, blocks: list[LinearOperator]) -> None:
        heights = {b.shape[0] for b in blocks}
        if len(heights) != 1:
            raise ValueError(f"side-by-side operators must share the observations; found heights {sorted(heights)}")
        self.blocks = list(blocks)
        self.edges = np.cumsum([0] + [b.shape[1] for b in blocks])
        super().__init__(dtype=np.float64, shape=(heights.pop(), int(self.edges[-1])))

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        X = np.reshape(X, (self.shape[1], -1))
        parts = zip(self.blocks, self.edges[:-1], self.edges[1:], strict=True)
        return sum(np.asarray(b.matmat(X[lo:hi])).reshape(self.shape[0], -1) for b, lo, hi in parts)

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.reshape(x, (-1, 1)))[:, 0]

    def _rmatmat(self, Y: np.ndarray) -> np.ndarray:
        Y = np.reshape(Y, (self.shape[0], -1))
        return np.concatenate([np.asarray(b.rmatmat(Y)).reshape(b.shape[1], -1) for b in self.blocks])

    def _rmatvec(self, y: np.ndarray) -> np.ndarray:
        return self._rmatmat(np.reshape(y, (-1, 1)))[:, 0]


class ObservationBlock(NamedTuple):
    """One observation type: its operator (m_i, n), data (m_i,) and error covariance (m_i, m_i)."""

    H: LinearOperator
    y: np.ndarray
    R: LinearOperator


def joint_problem(
    state: StateVector, x_prior: np.ndarray, B: LinearOperator, blocks: list[ObservationBlock]
) -> Problem:
    """One Problem from several observation types (units may differ between blocks, not within one).

    R is a :class:`~assim.covariance.DiagonalCovariance` when every block's R is one, else a
    :class:`~assim.covariance.BlockDiagonalCovariance` of the blocks' dense covariances. The
    Problem carries no obs Dataset (the types do not share one layout's units).
    """
    if all(isinstance(b.R, DiagonalCovariance) for b in blocks):
        R = DiagonalCovariance(np.concatenate([b.R.variance for b in blocks]))
    else:
        R = BlockDiagonalCovariance([to_dense(b.R) for b in blocks])
    y = np.concatenate([np.asarray(b.y, dtype=float) for b in blocks])
    return Problem(state, x_prior, B, RowStack([b.H for b in blocks]), y, R).validate()
