"""Variational solver: Lanczos-CG in the prior-preconditioned control space, low-rank posterior.

Control variable chi with x = x_b + L chi, B = L L^T. The cost

    J(chi) = 1/2 chi^T chi + 1/2 |R^-1/2 (H L chi - d)|^2,   d = y - H x_b,

has the Hessian I + G^T G (G = R^-1/2 H L) and the gradient chi - G^T (R^-1/2 d - G chi). The
minimiser solves (I + G^T G) chi = b with b = G^T R^-1/2 d; Lanczos with full
re-orthogonalisation builds the Krylov basis Q and tridiagonal T with Q^T (I + G^T G) Q = T,
whose CG iterate is chi_k = Q_k T_k^-1 |b| e_1 (Paige & Saunders 1975; Fisher & Courtier 1995,
ECMWF TM 220). Only ``H.matvec``, ``H.rmatvec``, ``R.solve`` and L, L^T are used.

The Ritz pairs (theta_i, V_i) of T give the posterior covariance as a low-rank update of B
(as in LUMIA and CIF):

    A_k = L (I - V diag(1 - 1/theta) V^T) L^T = B - U diag(1 - 1/theta) U^T,   U = L V.

If the kept Ritz vectors are exact eigenvectors of the k largest eigenvalues, the omitted part
is positive, A_k >= A, and 0 <= w^T (A_k - A) w <= (1 - 1/lambda_{k+1}) w^T B w for every
linear combination w: the reported ``truncation_bound`` is 1 - 1/theta* with theta* the largest
Ritz value not kept (0 when the Krylov space is exhausted and every Ritz pair is kept; the
bound then covers the directions the Krylov space reached, which is all of them for generic d).

Optional bounds ``lower <= x <= upper`` (PgC/yr): when the unbounded minimiser violates them, the
cost is minimised again with L-BFGS-B (Byrd et al. 1995) in the prior-sd-scaled variable
z = (x - x_b) / sd (a box stays a box), from the clipped unbounded solution. The posterior
covariance stays the unbounded Gaussian one (the Hessian of the quadratic cost, here its
low-rank Lanczos form) evaluated at the bounded optimum: it ignores the truncation of the
posterior at the bounds, so it overstates the spread next to an active bound.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator

from assim.covariance import to_dense
from assim.posterior import LowRankCovariance, Posterior
from assim.problem import Problem
from assim.solvers import solver


class ConvergenceError(RuntimeError):
    """The iteration stopped before its tolerance; ``result`` holds the last Posterior."""

    def __init__(self, message: str, result: Posterior):
        super().__init__(message)
        self.result = result


def prior_sqrt(B: LinearOperator) -> LinearOperator:
    """A factor L with B = L L^T: B's own ``sqrt()`` if it has one, else a dense Cholesky factor."""
    if hasattr(B, "sqrt"):
        return B.sqrt()
    dense = to_dense(B)
    try:
        factor = scipy.linalg.cholesky(0.5 * (dense + dense.T), lower=True)
    except np.linalg.LinAlgError as err:
        raise np.linalg.LinAlgError(f"prior covariance B is not positive definite: {err}") from err
    return LinearOperator(
        shape=dense.shape,
        dtype=np.float64,
        matvec=lambda z: factor @ z,
        rmatvec=lambda z: factor.T @ z,
        matmat=lambda Z: factor @ Z,
        rmatmat=lambda Z: factor.T @ Z,
    )


@solver("variational", exact=False)
def solve_variational(
    problem: Problem,
    gtol: float = 1e-10,
    cov_tol: float = 0.01,
    max_iter: int | None = None,
    rank: int | None = None,
    ritz_tol: float = 1e-6,
    bounds: tuple[np.ndarray | float | None, np.ndarray | float | None] | None = None,
) -> Posterior:
    """Lanczos-CG minimisation of the cost with a low-rank posterior covariance.

    Parameters
    ----------
    gtol : float
        The mean is converged when the gradient norm is reduced by this factor from its value
        at the prior.
    cov_tol : float
        The covariance is converged when every Ritz pair not kept has 1 - 1/theta <= cov_tol
        (its direction's variance is reduced by at most that share), or ``rank`` pairs are kept.
    max_iter : int, optional
        At most this many Lanczos iterations (default: n); raises :class:`ConvergenceError`
        (with the last result) if ``gtol`` is not reached.
    rank : int, optional
        Keep at most this many leading Ritz pairs, and stop iterating once they converged.
    ritz_tol : float
        A Ritz pair is kept only if its residual |beta_k s_ki| <= ritz_tol * theta_i.
    bounds : (lower, upper), optional
        Bounds on x in PgC/yr (positive to the atmosphere), each a scalar, an (n,) array or None
        (unbounded); +-inf allowed. See the module docstring for what the covariance then means.

    Returns
    -------
    Posterior
        ``covariance`` a :class:`~assim.posterior.LowRankCovariance`; ``info`` has
        ``iterations``, ``gradient_reduction``, ``rank`` (Ritz pairs kept), ``ritz_values``
        (kept), ``ritz_vectors`` (kept, control space) and ``truncation_bound`` (module docstring);
        with ``bounds`` also ``active_bounds`` (indices of x at a bound, empty if the unbounded
        solution already satisfies them) and ``bounded_iterations`` (L-BFGS-B iterations).
    """
    max_iter = problem.n if max_iter is None else min(max_iter, problem.n)
    if max_iter < 1:
        raise ValueError(f"variational: max_iter must be >= 1, got {max_iter}")
    L = prior_sqrt(problem.B)
    H, R = problem.H, problem.R

    def hessian(v: np.ndarray) -> np.ndarray:
        return v + L.rmatvec(H.rmatvec(R.solve(H.matvec(L.matvec(v)))))

    b = L.rmatvec(H.rmatvec(R.solve(problem.innovation())))
    lanczos = _Lanczos(hessian, b, max_iter)
    next_check = 0
    while True:
        exhausted = lanczos.step()
        reduction = lanczos.residual_norm() / lanczos.b_norm if lanczos.b_norm else 0.0
        if not exhausted and (reduction > gtol or lanczos.k < next_check):
            continue
        next_check = int(1.1 * lanczos.k) + 1  # Ritz pairs cost O(k^2): look at them geometrically often
        kept, bound = lanczos.ritz_pairs(ritz_tol, rank)
        done_cov = bound <= cov_tol or (rank is not None and kept[0].size >= rank)
        if exhausted or done_cov:
            break
    theta, vectors = kept
    result = _result(problem, L, lanczos.solution(), vectors, theta, lanczos.k, reduction, bound)
    if reduction > gtol:
        raise ConvergenceError(
            f"variational: gradient reduced only by {reduction:.2e} after {lanczos.k} iterations (gtol {gtol:.0e}); "
            "raise max_iter or gtol",
            result,
        )
    return result if bounds is None else _bounded(problem, result, bounds, gtol)


def _bounded(problem: Problem, unbounded: Posterior, bounds: tuple, gtol: float) -> Posterior:
    """The minimiser of the cost within ``bounds`` (L-BFGS-B in z = (x - x_b) / sd), same covariance."""
    from scipy.optimize import Bounds, minimize

    n = problem.n
    lower, upper = (
        np.broadcast_to(np.asarray(default if b is None else b, dtype=float), (n,))
        for b, default in zip(bounds, (-np.inf, np.inf), strict=True)
    )
    if np.any(lower > upper):
        first = int(np.flatnonzero(lower > upper)[0])
        raise ValueError(
            f"variational: bounds have lower > upper at state index {first} ({lower[first]} > {upper[first]}); "
            "give lower <= upper (PgC/yr)"
        )
    info = dict(unbounded.info, active_bounds=np.zeros(0, dtype=int), bounded_iterations=0)
    if np.all((unbounded.mean >= lower) & (unbounded.mean <= upper)):
        return Posterior(problem, unbounded.mean, unbounded.covariance, method="variational", info=info)
    x_b, H, R = problem.x_prior, problem.H, problem.R
    sd = np.sqrt(problem.B.diagonal())
    B_solve = _prior_solver(problem.B)

    def cost(z: np.ndarray) -> tuple[float, np.ndarray]:
        dx = sd * z
        Bi_dx = B_solve(dx)
        residual = H.matvec(x_b + dx) - problem.y
        Ri_residual = R.solve(residual)
        return 0.5 * (dx @ Bi_dx + residual @ Ri_residual), sd * (Bi_dx + H.rmatvec(Ri_residual))

    z_bounds = Bounds((lower - x_b) / sd, (upper - x_b) / sd)
    start = (np.clip(unbounded.mean, lower, upper) - x_b) / sd
    tolerance = gtol * np.abs(cost(np.zeros(n))[1]).max()  # as for the unbounded gradient reduction
    opt = minimize(
        cost,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=z_bounds,
        options={"gtol": tolerance, "ftol": 1e-15, "maxiter": 20 * n, "maxcor": 30},
    )
    mean = np.clip(x_b + sd * opt.x, lower, upper)
    info |= {
        "bounded_iterations": int(opt.nit),
        "active_bounds": np.flatnonzero((mean <= lower) | (mean >= upper)),
    }
    result = Posterior(problem, mean, unbounded.covariance, method="variational", info=info)
    if not opt.success:
        raise ConvergenceError(f"variational: bounded minimisation (L-BFGS-B) stopped: {opt.message}", result)
    return result


def _prior_solver(B: LinearOperator):
    """x -> B^-1 x: the operator's own ``solve`` if it has one, else a dense Cholesky."""
    if hasattr(B, "solve"):
        return B.solve
    factor = scipy.linalg.cho_factor(to_dense(B), lower=True)
    return lambda x: scipy.linalg.cho_solve(factor, x)


class _Lanczos:
    """Lanczos on a symmetric positive-definite operator, started from b, fully re-orthogonalised."""

    def __init__(self, operator, b: np.ndarray, max_iter: int):
        self.operator, self.max_iter = operator, max_iter
        self.b_norm = float(np.linalg.norm(b))
        self.Q = np.zeros((b.size, max_iter + 1))
        self.alpha: list[float] = []
        self.beta: list[float] = []
        self.k = 0
        if self.b_norm:
            self.Q[:, 0] = b / self.b_norm

    def step(self) -> bool:
        """One iteration; True when no further iteration is possible (invariant subspace or max_iter)."""
        if self.b_norm == 0.0:  # the prior already fits the data
            return True
        k, Q = self.k, self.Q
        w = self.operator(Q[:, k])
        self.alpha.append(float(Q[:, k] @ w))
        w -= self.alpha[-1] * Q[:, k] + (self.beta[-1] * Q[:, k - 1] if k else 0.0)
        for _ in range(2):  # full re-orthogonalisation; twice is enough (Parlett 1998, sec. 6.9)
            w -= Q[:, : k + 1] @ (Q[:, : k + 1].T @ w)
        self.beta.append(float(np.linalg.norm(w)))
        self.k += 1
        if self.beta[-1] <= 1e-12 * max(abs(a) for a in self.alpha) or self.k >= self.max_iter:
            return True
        Q[:, self.k] = w / self.beta[-1]
        return False

    def _coefficients(self) -> np.ndarray:
        """T^-1 |b| e_1: the CG iterate in the Lanczos basis."""
        if self.k == 0:
            return np.zeros(0)
        return _tridiagonal_solve(self.alpha, self.beta[:-1], self.b_norm)

    def residual_norm(self) -> float:
        """|b - A chi_k| = beta_k |e_k^T T^-1 |b| e_1| (the gradient norm of the cost)."""
        return self.beta[-1] * abs(self._coefficients()[-1]) if self.k else self.b_norm

    def solution(self) -> np.ndarray:
        return self.Q[:, : self.k] @ self._coefficients()

    def ritz_pairs(self, tol: float, rank: int | None) -> tuple[tuple[np.ndarray, np.ndarray], float]:
        """((theta, vectors) of the kept converged pairs, largest first; truncation bound)."""
        if self.k == 0:
            return (np.zeros(0), np.zeros((self.Q.shape[0], 0))), 0.0
        theta, S = scipy.linalg.eigh_tridiagonal(np.array(self.alpha), np.array(self.beta[:-1]))
        residual = np.abs(self.beta[-1] * S[-1, :])
        order = np.argsort(theta)[::-1]
        good = [i for i in order if residual[i] <= tol * theta[i] and theta[i] > 1.0]
        kept = good[:rank] if rank is not None else good
        dropped = [i for i in order if i not in kept]
        bound = 1.0 - 1.0 / max(1.0, theta[dropped].max()) if dropped else 0.0
        return (theta[kept], self.Q[:, : self.k] @ S[:, kept]), bound


def _tridiagonal_solve(alpha: list[float], beta: list[float], b_norm: float) -> np.ndarray:
    """T^-1 |b| e_1 for the symmetric tridiagonal T (diagonal alpha, off-diagonal beta)."""
    k = len(alpha)
    if k == 1:
        return np.array([b_norm / alpha[0]])
    banded = np.zeros((2, k))
    banded[0, 1:] = beta
    banded[1] = alpha
    rhs = np.zeros(k)
    rhs[0] = b_norm
    return scipy.linalg.solveh_banded(banded, rhs)


def _result(
    problem: Problem,
    L: LinearOperator,
    chi: np.ndarray,
    ritz_vectors: np.ndarray,
    ritz_values: np.ndarray,
    iterations: int,
    reduction: float,
    bound: float,
) -> Posterior:
    U = L.matmat(ritz_vectors) if ritz_vectors.shape[1] else np.zeros((problem.n, 0))
    covariance = LowRankCovariance(U, -(1.0 - 1.0 / ritz_values), base=problem.B)
    info = {
        "iterations": iterations,
        "gradient_reduction": reduction,
        "rank": int(ritz_values.size),
        "ritz_values": ritz_values,
        "ritz_vectors": ritz_vectors,
        "truncation_bound": bound,
        "dofs": float(np.sum(1.0 - 1.0 / ritz_values)),  # trace(I - A B^-1) in the kept directions: a lower bound
    }
    return Posterior(problem, problem.x_prior + L.matvec(chi), covariance, method="variational", info=info)
