"""Exact Gaussian posterior by Cholesky factorisation, never an explicit inverse.

State space (n <= m):  A = L (I + G^T G)^-1 L^T,  G = R^-1/2 H L,  B = L L^T
Observation space (m < n, Woodbury):  S = H B H^T + R,  A = B - (B H^T) S^-1 (H B)
Mean:  x = x_b + A H^T R^-1 (y - H x_b)  (state)  or  x_b + B H^T S^-1 (y - H x_b)  (obs).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from assim.covariance import to_dense
from assim.posterior import Posterior
from assim.problem import Problem
from assim.solvers import solver


@solver("analytic", exact=True)
def solve_analytic(problem: Problem, form: str = "auto") -> Posterior:
    """Exact posterior mean and full covariance.

    Parameters
    ----------
    form : {"auto", "state", "observation"}
        ``auto`` picks the cheaper: observation space when m < n.
    """
    if form not in ("auto", "state", "observation"):
        raise ValueError(f"analytic solver: form must be 'auto', 'state' or 'observation', got {form!r}")
    if form == "auto":
        form = "observation" if problem.m < problem.n else "state"
    B = to_dense(problem.B)
    H = to_dense(problem.H)
    d = problem.innovation()
    if form == "state":
        mean, cov = _state_space(B, H, problem.R, d)
    else:
        mean, cov = _observation_space(B, H, to_dense(problem.R), d)
    return Posterior(problem, problem.x_prior + mean, cov, method="analytic", info={"form": form})


def _state_space(B: np.ndarray, H: np.ndarray, R, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    L = _cholesky(B, "B")
    G = R.whiten(H @ L)
    M = G.T @ G
    M[np.diag_indices_from(M)] += 1.0
    K = _cholesky(M, "I + G^T G")
    LKinvT = scipy.linalg.solve_triangular(K, L.T, lower=True).T  # L K^-T
    cov = LKinvT @ LKinvT.T
    increment = LKinvT @ (LKinvT.T @ (H.T @ R.solve(d)))
    return increment, cov


def _observation_space(B: np.ndarray, H: np.ndarray, R: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    HB = H @ B
    S = HB @ H.T + R
    factor = scipy.linalg.cho_factor(0.5 * (S + S.T), lower=True)
    increment = HB.T @ scipy.linalg.cho_solve(factor, d)
    Linv_HB = scipy.linalg.solve_triangular(factor[0], HB, lower=True)
    cov = B - Linv_HB.T @ Linv_HB
    return increment, 0.5 * (cov + cov.T)


def _cholesky(matrix: np.ndarray, name: str) -> np.ndarray:
    try:
        return scipy.linalg.cholesky(matrix, lower=True)
    except np.linalg.LinAlgError as err:
        raise np.linalg.LinAlgError(f"{name} is not positive definite: {err}") from err
