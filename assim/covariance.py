"""Prior (B) and observation-error (R) covariances as ``scipy.sparse.linalg.LinearOperator``.

B = S (C_time (x) C_region) S for a time-major (month, region) state: S = diag(sd), C_time an
exponential correlation in months, C_region an exponential correlation in great-circle
distance between region centroids (positive definite on the sphere; Gneiting 2013,
Bernoulli 19(4)). The Kronecker product is applied by reshaping (Yadav & Michalak 2013,
GMD 6, 583) and never formed, except by :meth:`KroneckerCovariance.todense` for small cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from assim.state import StateVector

EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class ExponentialCorrelation:
    """rho(d) = exp(-d / length); ``length`` in the units of the distances it is applied to."""

    length: float

    def __post_init__(self) -> None:
        if not self.length >= 0:
            raise ValueError(f"ExponentialCorrelation length must be >= 0, got {self.length!r}")

    def __call__(self, distance: np.ndarray) -> np.ndarray:
        distance = np.asarray(distance, dtype=float)
        if self.length == 0:
            return (distance == 0).astype(float)
        return np.exp(-distance / self.length)

    def matrix(self, distance: np.ndarray) -> np.ndarray:
        """Correlation matrix from a square matrix of distances."""
        return self(distance)


def month_lags(n_months: int) -> np.ndarray:
    """|i - j| in months for a monthly axis of length ``n_months``."""
    i = np.arange(n_months)
    return np.abs(i[:, None] - i[None, :]).astype(float)


def great_circle_km(latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """Pairwise great-circle distances (km) between points given in degrees."""
    phi, lam = np.deg2rad(latitude), np.deg2rad(longitude)
    cos_angle = np.sin(phi)[:, None] * np.sin(phi)[None, :] + np.cos(phi)[:, None] * np.cos(phi)[None, :] * np.cos(
        lam[:, None] - lam[None, :]
    )
    return EARTH_RADIUS_KM * np.arccos(np.clip(cos_angle, -1.0, 1.0))


class KroneckerCovariance(LinearOperator):
    """B = S (C_time (x) C_region) S for a (time, region) state flattened time-major.

    Parameters
    ----------
    time_correlation : ndarray (T, T)
        Temporal correlation matrix.
    region_correlation : ndarray (R, R)
        Spatial correlation matrix.
    sd : ndarray (T*R,) or (T, R)
        Standard deviations in state units (PgC/yr); S = diag(sd).
    """

    def __init__(self, time_correlation: np.ndarray, region_correlation: np.ndarray, sd: np.ndarray):
        self.time_correlation = np.asarray(time_correlation, dtype=float)
        self.region_correlation = np.asarray(region_correlation, dtype=float)
        n_time, n_region = self.time_correlation.shape[0], self.region_correlation.shape[0]
        self.sd = np.asarray(sd, dtype=float).reshape(n_time * n_region)
        if not (np.isfinite(self.sd).all() and (self.sd >= 0).all()):
            raise ValueError("prior sd must be finite and >= 0 for every state element")
        super().__init__(dtype=np.float64, shape=(n_time * n_region, n_time * n_region))

    def __repr__(self) -> str:
        T, R = self.time_correlation.shape[0], self.region_correlation.shape[0]
        return f"KroneckerCovariance(time={T}, region={R}, sd range {self.sd.min():.3g}..{self.sd.max():.3g})"

    def _kron(self, ct: np.ndarray, cr: np.ndarray, X: np.ndarray) -> np.ndarray:
        T, R = ct.shape[0], cr.shape[0]
        Y = np.einsum("ts,sqk,rq->trk", ct, X.reshape(T, R, -1), cr, optimize=True)
        return Y.reshape(T * R, -1)

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float).reshape(self.shape[1], -1)
        return self.sd[:, None] * self._kron(self.time_correlation, self.region_correlation, self.sd[:, None] * X)

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(x.reshape(-1, 1)).ravel()

    def _adjoint(self) -> KroneckerCovariance:
        return self

    def diagonal(self) -> np.ndarray:
        """Variances (PgC/yr)^2; correlations have unit diagonal."""
        return self.sd**2 * np.kron(np.diag(self.time_correlation), np.diag(self.region_correlation))

    def todense(self) -> np.ndarray:
        """The full (n, n) matrix: for small problems and tests only."""
        return self.sd[:, None] * np.kron(self.time_correlation, self.region_correlation) * self.sd[None, :]

    def solve(self, X: np.ndarray) -> np.ndarray:
        """B^-1 X = S^-1 (C_time^-1 (x) C_region^-1) S^-1 X for X (n,) or (n, k); all sd must be > 0."""
        X = np.asarray(X, dtype=float)
        if not (self.sd > 0).all():
            raise ValueError("B is singular: some prior sd are 0")
        flat = X.reshape(self.shape[0], -1) / self.sd[:, None]
        ct_inv = scipy.linalg.cho_solve(
            scipy.linalg.cho_factor(self.time_correlation), np.eye(self.time_correlation.shape[0])
        )
        cr_inv = scipy.linalg.cho_solve(
            scipy.linalg.cho_factor(self.region_correlation), np.eye(self.region_correlation.shape[0])
        )
        return (self._kron(ct_inv, cr_inv, flat) / self.sd[:, None]).reshape(X.shape)

    def sqrt(self) -> LinearOperator:
        """A factor L with B = L L^T: S (L_time (x) L_region), from Cholesky of each correlation."""
        lt = scipy.linalg.cholesky(self.time_correlation, lower=True)
        lr = scipy.linalg.cholesky(self.region_correlation, lower=True)
        n = self.shape[0]
        return LinearOperator(
            shape=(n, n),
            dtype=np.float64,
            matvec=lambda z: self.sd * self._kron(lt, lr, z).ravel(),
            matmat=lambda Z: self.sd[:, None] * self._kron(lt, lr, Z),
            rmatvec=lambda z: self._kron(lt.T, lr.T, self.sd * np.ravel(z)).ravel(),
            rmatmat=lambda Z: self._kron(lt.T, lr.T, self.sd[:, None] * Z),
        )

    def sample(self, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
        """Draws from N(0, B): shape (n,) or (size, n)."""
        k = 1 if size is None else size
        draws = self.sqrt().matmat(rng.standard_normal((self.shape[0], k))).T
        return draws[0] if size is None else draws


class DiagonalCovariance(LinearOperator):
    """R = diag(variance) for independent observation errors (variance in value units^2)."""

    def __init__(self, variance: np.ndarray):
        self.variance = np.asarray(variance, dtype=float).ravel()
        if not (np.isfinite(self.variance).all() and (self.variance > 0).all()):
            bad = int(np.flatnonzero(~(np.isfinite(self.variance) & (self.variance > 0)))[0])
            raise ValueError(f"observation error variance must be finite and > 0; obs {bad} has {self.variance[bad]!r}")
        n = self.variance.size
        super().__init__(dtype=np.float64, shape=(n, n))

    def __repr__(self) -> str:
        sd = np.sqrt(self.variance)
        return f"DiagonalCovariance(m={self.shape[0]}, sd range {sd.min():.3g}..{sd.max():.3g})"

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        return self.variance[:, None] * np.asarray(X).reshape(self.shape[0], -1)

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self.variance * np.ravel(x)

    def _adjoint(self) -> DiagonalCovariance:
        return self

    def diagonal(self) -> np.ndarray:
        return self.variance

    def todense(self) -> np.ndarray:
        return np.diag(self.variance)

    def whiten(self, X: np.ndarray) -> np.ndarray:
        """R^(-1/2) X for X of shape (m,) or (m, k)."""
        X = np.asarray(X, dtype=float)
        scale = 1.0 / np.sqrt(self.variance)
        return scale * X if X.ndim == 1 else scale[:, None] * X

    def solve(self, X: np.ndarray) -> np.ndarray:
        """R^-1 X for X of shape (m,) or (m, k)."""
        X = np.asarray(X, dtype=float)
        return X / self.variance if X.ndim == 1 else X / self.variance[:, None]

    def sqrt(self) -> LinearOperator:
        """diag(sd): the factor L with R = L L^T (e.g. a diagonal block of a prior)."""
        return aslinearoperator(scipy.sparse.diags(np.sqrt(self.variance)))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return np.sqrt(self.variance) * rng.standard_normal(self.variance.size)


class BlockDiagonalCovariance(LinearOperator):
    """R with dense blocks on the diagonal (e.g. errors correlated in time within one site).

    Parameters
    ----------
    blocks : list of ndarray (k_i, k_i)
        Symmetric positive-definite blocks, in observation order.
    """

    def __init__(self, blocks: list[np.ndarray]):
        self.blocks = [np.asarray(b, dtype=float) for b in blocks]
        self._chol = []
        for i, block in enumerate(self.blocks):
            try:
                self._chol.append(scipy.linalg.cholesky(block, lower=True))
            except np.linalg.LinAlgError as err:
                raise ValueError(f"observation error block {i} is not positive definite") from err
        self._edges = np.cumsum([0] + [b.shape[0] for b in self.blocks])
        n = int(self._edges[-1])
        super().__init__(dtype=np.float64, shape=(n, n))

    def _apply(self, mats: list[np.ndarray], X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float).reshape(self.shape[0], -1)
        out = np.empty_like(X)
        for mat, lo, hi in zip(mats, self._edges[:-1], self._edges[1:], strict=True):
            out[lo:hi] = mat @ X[lo:hi]
        return out

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        return self._apply(self.blocks, X)

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(x.reshape(-1, 1)).ravel()

    def _adjoint(self) -> BlockDiagonalCovariance:
        return self

    def diagonal(self) -> np.ndarray:
        return np.concatenate([np.diag(b) for b in self.blocks])

    def todense(self) -> np.ndarray:
        return scipy.linalg.block_diag(*self.blocks)

    def whiten(self, X: np.ndarray) -> np.ndarray:
        """R^(-1/2) X with R^(1/2) the block Cholesky factor."""
        X = np.asarray(X, dtype=float)
        flat = X.reshape(self.shape[0], -1)
        out = np.empty_like(flat)
        for chol, lo, hi in zip(self._chol, self._edges[:-1], self._edges[1:], strict=True):
            out[lo:hi] = scipy.linalg.solve_triangular(chol, flat[lo:hi], lower=True)
        return out.reshape(X.shape)

    def solve(self, X: np.ndarray) -> np.ndarray:
        """R^-1 X (block Cholesky solves) for X of shape (m,) or (m, k)."""
        X = np.asarray(X, dtype=float)
        flat = X.reshape(self.shape[0], -1)
        out = np.empty_like(flat)
        for chol, lo, hi in zip(self._chol, self._edges[:-1], self._edges[1:], strict=True):
            out[lo:hi] = scipy.linalg.cho_solve((chol, True), flat[lo:hi])
        return out.reshape(X.shape)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal(self.shape[0])
        return np.concatenate(
            [chol @ z[lo:hi] for chol, lo, hi in zip(self._chol, self._edges[:-1], self._edges[1:], strict=True)]
        )


def to_dense(operator: LinearOperator | np.ndarray) -> np.ndarray:
    """A dense copy of an operator: its own ``todense()`` if it has one, else ``operator @ I``."""
    if isinstance(operator, np.ndarray):
        return operator
    if hasattr(operator, "todense"):
        return np.asarray(operator.todense())
    return np.asarray(operator.matmat(np.eye(operator.shape[1])))


def prior_covariance(
    state: StateVector,
    sd: np.ndarray,
    time_correlation: ExponentialCorrelation,
    region_correlation: ExponentialCorrelation,
) -> KroneckerCovariance:
    """B for a (time, region) state: ``sd`` (PgC/yr) x correlation in months (time) and km between centroids."""
    regions = state.regions
    return KroneckerCovariance(
        time_correlation.matrix(month_lags(state.time.size)),
        region_correlation.matrix(
            great_circle_km(regions["centroid_latitude"].values, regions["centroid_longitude"].values)
        ),
        sd,
    )


class StackedCovariance(LinearOperator):
    """Block-diagonal covariance of a state made of independent parts, e.g. [land flux, extras].

    Parameters
    ----------
    blocks : list of LinearOperator or ndarray
        Each block's covariance, in state order; each needs ``diagonal()`` and ``sqrt()`` (or is a
        dense array, factored by Cholesky).
    """

    def __init__(self, blocks: list[LinearOperator | np.ndarray]):
        self.blocks = list(blocks)
        self._edges = np.cumsum([0] + [b.shape[0] for b in self.blocks])
        n = int(self._edges[-1])
        super().__init__(dtype=np.float64, shape=(n, n))

    def __repr__(self) -> str:
        return f"StackedCovariance({', '.join(type(b).__name__ + str(b.shape) for b in self.blocks)})"

    def _parts(self) -> zip:
        return zip(self.blocks, self._edges[:-1], self._edges[1:], strict=True)

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float).reshape(self.shape[0], -1)
        return np.concatenate([block @ X[lo:hi] for block, lo, hi in self._parts()])

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(x.reshape(-1, 1)).ravel()

    def _adjoint(self) -> StackedCovariance:
        return self

    def diagonal(self) -> np.ndarray:
        return np.concatenate([np.diag(b) if isinstance(b, np.ndarray) else b.diagonal() for b in self.blocks])

    def todense(self) -> np.ndarray:
        return scipy.linalg.block_diag(*(to_dense(b) for b in self.blocks))

    def sqrt(self) -> LinearOperator:
        """Block-diagonal L with B = L L^T."""
        factors = [scipy.linalg.cholesky(b, lower=True) if isinstance(b, np.ndarray) else b.sqrt() for b in self.blocks]
        edges, n = self._edges, self.shape[0]

        def apply(Z: np.ndarray, adjoint: bool) -> np.ndarray:
            Z = np.asarray(Z, dtype=float).reshape(n, -1)
            return np.concatenate(
                [(f.T if adjoint else f) @ Z[lo:hi] for f, lo, hi in zip(factors, edges[:-1], edges[1:], strict=True)]
            )

        return LinearOperator(
            shape=(n, n),
            dtype=np.float64,
            matvec=lambda z: apply(z, False).ravel(),
            matmat=lambda Z: apply(Z, False),
            rmatvec=lambda z: apply(z, True).ravel(),
            rmatmat=lambda Z: apply(Z, True),
        )

    def sample(self, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
        """Draws from N(0, B): shape (n,) or (size, n)."""
        k = 1 if size is None else size
        draws = self.sqrt().matmat(rng.standard_normal((self.shape[0], k))).T
        return draws[0] if size is None else draws
