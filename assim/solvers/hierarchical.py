"""Hierarchical Bayesian solver: hyperpriors on error scales, sampled with PyMC + nutpie.

Hyperparameters theta: a prior-scale factor per group of state elements (B(theta) = S B S,
S = diag(prior_scale of each element's group)), a model-data-mismatch factor per site
category (R(theta) = diag(r_i mismatch_scale_c(i)^2)) and, optionally, an offset per site
(ppm, y - offset = H x + e). Each factor has a LogNormal(0, sigma) hyperprior (median 1: the
given B and R are the best guess), offsets Normal(0, offset_sd_ppm).

``scaling="gaussian"`` (default): given theta the state is linear-Gaussian, so it is
marginalised analytically,

    y | theta ~ N(H x_b + offset, H B(theta) H^T + R(theta)),

only theta is sampled, and x | theta is then drawn exactly (this is the speed edge over
openghg_inversions, which samples every flux element). The log evidence uses matrices
precomputed once: in state form (n <= m) the precision B^-1 and per-category H_c^T R_c^-1 H_c
(one n x n Cholesky per evaluation), in observation form (m < n) the blocks H_g B_gh H_h^T
(one m x m Cholesky). nutpie samples this density through :class:`MarginalDensity`, a numpy
log density with its analytic gradient (no numba compilation); :func:`build_model` is the same
model in PyMC. ``scaling="lognormal"`` or ``"truncated_normal"``: x = x_b * f with
non-negative scaling factors f (mean 1, sd sqrt(B_ii)/|x_b,i|, independent, as in
openghg_inversions) sampled with the hyperparameters; the state is then not marginalised.

The result keeps every chain as ArviZ InferenceData (``info["idata"]``: groups ``posterior``
with the hyperparameters and one exact state draw per theta draw, ``flux`` (chain, draw, time,
region); ``sample_stats``), with
R-hat and bulk ESS in ``info``. The posterior covariance is the mixture over theta,
E[A(theta)] + Cov[mean(theta)] (gaussian; E[A(theta)] over at most
:data:`MIXTURE_DRAWS` evenly spaced theta draws) or the sample covariance of the draws (otherwise).
``checkpoint=PATH`` saves every completed chain to a netCDF file so an interrupted run resumes.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.optimize
import scipy.stats
import xarray as xr
from threadpoolctl import threadpool_limits

from assim.covariance import DiagonalCovariance, to_dense
from assim.posterior import LowRankCovariance, Posterior
from assim.problem import Problem
from assim.report import atomic_path
from assim.solvers import solver

SCALINGS = ("gaussian", "lognormal", "truncated_normal")
FORMS = ("auto", "eigen", "state", "observation")
PRIOR_GROUPS = ("global", "region")
CHECKPOINT_GROUPS = ("posterior", "sample_stats")
FINGERPRINT_ATTR = "assim_fingerprint"
# E[A(theta)] of the posterior covariance is averaged over at most this many theta draws, evenly
# spaced (each costs an n x n inverse): its Monte Carlo error is then a fraction of the draws' own
MIXTURE_DRAWS = 200
# the trace model is used only if its gradient error 2 Laplace sd from the mode would move a
# Gaussian's mode by less than this many posterior sd (MarginalDensity._surrogate_error)
SURROGATE_TOLERANCE = 0.25


@dataclass(frozen=True)
class HierarchicalConfig:
    """Options of :func:`solve_hierarchical` (sampler sizes, hyperpriors, model variant).

    prior_scale_sigma, mismatch_scale_sigma : log-sd of the LogNormal(0, sigma) hyperpriors;
        0 fixes the factor at 1.
    prior_groups : "global" (one prior-scale factor) or "region" (one per region).
    offset_sd_ppm : > 0 adds one offset per site with a Normal(0, offset_sd_ppm) prior.
    scaling : one of :data:`SCALINGS` (see the module docstring).
    trace_surrogate : state form: the gradient's n x n inverse replaced by a linear model at the
        mode (exact sampling; see :meth:`MarginalDensity._fit_laplace`). False: exact gradients.
    """

    draws: int = 500
    tune: int = 500
    chains: int = 2
    seed: int = 0
    prior_scale_sigma: float = 0.5
    mismatch_scale_sigma: float = 0.5
    prior_groups: str = "global"
    offset_sd_ppm: float = 0.0
    scaling: str = "gaussian"
    trace_surrogate: bool = True

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"hierarchical: scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.prior_groups not in PRIOR_GROUPS:
            raise ValueError(f"hierarchical: prior_groups must be one of {PRIOR_GROUPS}, got {self.prior_groups!r}")
        for name in ("prior_scale_sigma", "mismatch_scale_sigma", "offset_sd_ppm"):
            if getattr(self, name) < 0:
                raise ValueError(f"hierarchical: {name} must be >= 0, got {getattr(self, name)}")
        for name in ("draws", "tune", "chains"):
            if getattr(self, name) < 1:
                raise ValueError(f"hierarchical: {name} must be >= 1, got {getattr(self, name)}")


def _backend(lib, cholesky, solve_lower) -> SimpleNamespace:
    """The array operations the evidence needs, from numpy or pytensor.tensor (same names in both)."""
    names = ("exp", "log", "sum", "diagonal", "diag", "outer", "tensordot", "concatenate")
    return SimpleNamespace(**{name: getattr(lib, name) for name in names}, cholesky=cholesky, solve_lower=solve_lower)


def _numpy_backend() -> SimpleNamespace:
    return _backend(
        np,
        lambda a: scipy.linalg.cholesky(a, lower=True),
        lambda a, b: scipy.linalg.solve_triangular(a, b, lower=True),
    )


def _pytensor_backend() -> SimpleNamespace:
    import pytensor.tensor as pt

    return _backend(
        pt,
        lambda a: pt.linalg.cholesky(a, lower=True),
        lambda a, b: pt.linalg.solve_triangular(a, b, lower=True),
    )


class MarginalEvidence:
    """log p(y | theta) with the state marginalised, from matrices precomputed once.

    Parameters
    ----------
    problem : Problem
        R must be diagonal (``R.diagonal()``); categories from ``problem.obs["category"]``,
        sites from ``problem.obs["site"]`` (one of each when ``obs`` is None).
    prior_groups : {"global", "region"}
    offsets : bool
        Whether theta carries one offset per site.
    form : {"auto", "eigen", "state", "observation"}
        ``auto``: ``eigen`` with one prior-scale group and one mismatch category (the generalised
        eigenpairs F v = lambda B^-1 v, F = H^T R^-1 H, make each evaluation O(n)), else the
        state form when n <= m, else the observation form.

    Attributes
    ----------
    categories, sites, groups : ndarray of str
        Labels of the mismatch factors, offsets and prior-scale factors.
    """

    def __init__(self, problem: Problem, prior_groups: str = "global", offsets: bool = False, form: str = "auto"):
        if form not in FORMS:
            raise ValueError(f"hierarchical: form must be one of {FORMS}, got {form!r}")
        self.problem = problem
        obs = problem.obs
        category = obs["category"].values.astype(str) if obs is not None else np.full(problem.m, "all")
        site = obs["site"].values.astype(str) if obs is not None else np.full(problem.m, "all")
        self.categories, self.category_index = np.unique(category, return_inverse=True)
        self.sites, site_index = np.unique(site, return_inverse=True)
        state = problem.state
        if prior_groups == "region":  # extra (non-flux) parameters, if any, share one more group
            regions = state.regions["region"].values.astype(str)
            self.groups = np.r_[regions, ["extras"]] if state.n_extra else regions
            self.group_index = np.r_[
                np.tile(np.arange(regions.size), state.time.size), np.full(state.n_extra, regions.size)
            ]
        else:
            self.groups, self.group_index = np.array(["global"]), np.zeros(problem.n, dtype=int)
        self.offsets = offsets
        if not isinstance(problem.R, DiagonalCovariance):
            raise ValueError(
                f"hierarchical: R must be a DiagonalCovariance (independent errors), got {type(problem.R).__name__}; "
                "scaling a correlated R by category is not implemented - use method 'analytic' or 'variational'"
            )
        self.r0 = np.asarray(problem.R.diagonal(), dtype=float)
        self.H = to_dense(problem.H)
        self.B0 = to_dense(problem.B)
        # D a = innovation minus offsets, with a = [1, -offset]
        columns = [problem.innovation()[:, None]]
        if offsets:
            columns.append(np.eye(self.sites.size)[site_index])
        self.D = np.hstack(columns)
        self.B0_chol = scipy.linalg.cholesky(self.B0, lower=True)
        self.m_c = np.bincount(self.category_index, minlength=self.categories.size)
        single = self.groups.size == 1 and self.categories.size == 1
        if form == "eigen" and not single:
            raise ValueError("hierarchical: form 'eigen' needs one prior-scale group and one mismatch category")
        self.basis, self.work_index = None, self.group_index  # group of each working state element
        if self.groups.size == 1 and form != "observation":
            self._reduce()
        self.n = self.H.shape[1]
        self.group_sizes = np.bincount(self.work_index, minlength=self.groups.size)
        self._one = np.ones(1)
        if form == "auto":
            form = "eigen" if single else "state" if self.n <= problem.m else "observation"
        self.form = form
        if self.form == "observation":
            self._precompute_observation()
        else:
            self._precompute_state()
        if self.form == "eigen":  # V^T B^-1 V = I, V^T F V = diag(lambda)
            self.lam, self.V = scipy.linalg.eigh(self.F[0], self.P0)
            self.VE = self.V.T @ self.E[0]
            self.logdet_B0 = 2 * np.log(np.diagonal(self.B0_chol)).sum()

    def _reduce(self) -> None:
        """Work in the row space of H when rank(H) = r < n (one prior-scale factor only).

        With Q (n, r) an orthonormal basis of that space, H = (H Q) Q^T, so y depends on x only
        through z = Q^T x: the evidence is that of the r-dimensional problem (H Q, Q^T B Q),
        and x | z, y = x | z is the prior conditional, x - x_b = T (z - z_b) + residual with
        T = B Q (Q^T B Q)^-1 and residual ~ N(0, s^2 (B - T Q^T B Q T^T)). Exact: only singular
        values below 1e-12 of the largest are dropped (a transport model that sees band totals
        only, say, has r far below n).
        """
        _, singular, vt = np.linalg.svd(self.H, full_matrices=False)
        rank = int((singular > 1e-12 * singular[0]).sum()) if singular.size and singular[0] > 0 else 0
        if rank >= self.problem.n or rank == 0:
            return
        self.basis = vt[:rank].T
        B_reduced = self.basis.T @ self.B0 @ self.basis
        self.lift = scipy.linalg.solve(B_reduced, self.basis.T @ self.B0, assume_a="pos").T
        self.residual_cov = self.B0 - self.lift @ B_reduced @ self.lift.T
        self.full_chol = self.B0_chol
        self.H, self.B0 = self.H @ self.basis, B_reduced
        self.B0_chol = scipy.linalg.cholesky(B_reduced, lower=True)
        self.work_index = np.zeros(rank, dtype=int)

    def _precompute_state(self) -> None:
        eye = np.eye(self.n)
        self.P0 = scipy.linalg.cho_solve((self.B0_chol, True), eye)
        self.P0 = 0.5 * (self.P0 + self.P0.T)
        F, E, Q = [], [], []
        for c in range(self.categories.size):
            rows = self.category_index == c
            WH = self.H[rows] / self.r0[rows, None]
            F.append(self.H[rows].T @ WH)
            E.append(WH.T @ self.D[rows])
            Q.append(self.D[rows].T @ (self.D[rows] / self.r0[rows, None]))
        # B^-1 and the F_c in one array: with one prior-scale group M is one matrix-vector product
        self.PF = np.concatenate([self.P0[None], np.array(F)])
        self.P0, self.F, self.E, self.Q = self.PF[0], self.PF[1:], np.array(E), np.array(Q)
        self.const = -0.5 * (
            self.problem.m * np.log(2 * np.pi) + np.log(self.r0).sum() + 2 * np.log(np.diagonal(self.B0_chol)).sum()
        )

    def _precompute_observation(self) -> None:
        G = self.groups.size
        HB = {}
        for g in range(G):
            cols = self.group_index == g
            HB[g] = self.H[:, cols]
        self.K = np.array(
            [
                [HB[g] @ self.B0[np.ix_(self.group_index == g, self.group_index == h)] @ HB[h].T for h in range(G)]
                for g in range(G)
            ]
        )  # (G, G, m, m)
        self.const = -0.5 * self.problem.m * np.log(2 * np.pi)

    def _a(self, xp, offset):
        return xp.concatenate([self._one, -offset]) if self.offsets else self._one

    def log_evidence(self, log_prior_scale, log_mismatch, offset=None, xp=None):
        """log p(y | theta); array arguments may be numpy (default backend) or PyTensor tensors.

        log_prior_scale : (groups,); log_mismatch : (categories,); offset : (sites,) ppm.
        """
        xp = xp or _numpy_backend()
        a = self._a(xp, offset)
        if self.form == "eigen":  # M = V^-T diag(d) V^-1, d = 1/s^2 + lambda/t^2; logdet M = sum log d - logdet B
            log_s, log_t = xp.sum(log_prior_scale), xp.sum(log_mismatch)  # one of each: scalars broadcast
            w = xp.exp(-2 * log_t)
            d = xp.exp(-2 * log_s) + self.lam * w
            u = xp.tensordot(self.VE, a, axes=1) * w
            q = w * xp.sum(xp.tensordot(xp.tensordot(self.Q, a, axes=1), a, axes=1))
            logdet = 2 * self.problem.m * log_t + 2 * self.n * log_s + xp.sum(xp.log(d)) - self.logdet_B0
            return self.const - 0.5 * (logdet + q - xp.sum(u * u / d))
        if self.form == "state":
            w = xp.exp(-2 * log_mismatch)
            inv_s = xp.exp(-log_prior_scale)[self.work_index]
            M = self.P0 * xp.outer(inv_s, inv_s) + xp.tensordot(w, self.F, axes=1)
            g = xp.tensordot(w, xp.tensordot(self.E, a, axes=1), axes=1)
            q = xp.sum(w * xp.tensordot(xp.tensordot(self.Q, a, axes=1), a, axes=1))
            chol = xp.cholesky(M)
            v = xp.solve_lower(chol, g)
            logdet = xp.sum(self.m_c * 2 * log_mismatch) + 2 * xp.sum(log_prior_scale[self.work_index])
            logdet = logdet + 2 * xp.sum(xp.log(xp.diagonal(chol)))
            return self.const - 0.5 * (logdet + q - xp.sum(v * v))
        s = xp.exp(log_prior_scale)
        K = xp.tensordot(xp.outer(s, s), self.K, axes=2)
        K = K + xp.diag(self.r0 * xp.exp(2 * log_mismatch)[self.category_index])
        chol = xp.cholesky(K)
        v = xp.solve_lower(chol, xp.tensordot(self.D, a, axes=1))
        return self.const - xp.sum(xp.log(xp.diagonal(chol))) - 0.5 * xp.sum(v * v)

    def log_evidence_and_gradient(
        self,
        log_prior_scale: np.ndarray,
        log_mismatch: np.ndarray,
        offset: np.ndarray | None = None,
        traces: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """log p(y | theta) and its gradient (d/d log_prior_scale, d/d log_mismatch, d/d offset), numpy.

        The gradient is analytic (one n x n Cholesky and inverse per call in the state form, O(n)
        in the eigen form, one m x m in the observation form); the offset gradient is empty
        without offsets. ``traces`` (state form only): given, they replace
        :meth:`precision_traces` in the gradient and the call needs no inverse (a Cholesky only);
        the value stays exact.
        """
        a = self._a(np, offset)
        if traces is not None and self.form != "state":
            raise ValueError(f"hierarchical: traces are given to the state form only, this evidence is {self.form!r}")
        if self.form == "eigen":
            value, g_s, g_t, g_a = self._eigen_gradient(float(log_prior_scale[0]), float(log_mismatch[0]), a)
        elif self.form == "state":
            value, g_s, g_t, g_a = self._state_gradient(log_prior_scale, log_mismatch, a, traces)
        else:
            value, g_s, g_t, g_a = self._observation_gradient(log_prior_scale, log_mismatch, a)
        return value, g_s, g_t, -g_a[1:]  # a = [1, -offset]

    def precision_traces(self, log_prior_scale: np.ndarray, log_mismatch: np.ndarray) -> np.ndarray:
        """-1/2 d log det M / d(log prior_scale, log mismatch_scale), state form: (groups + categories,).

        M = S^-1 B^-1 S^-1 + sum_c F_c / t_c^2 is the posterior precision given theta; the entries
        are sum_(i in g) (M^-1 S^-1 B^-1 S^-1)_ii and tr(M^-1 F_c) / t_c^2. They are the part of the
        gradient that needs M^-1 (three quarters of the cost of an exact call).
        """
        w = np.exp(-2 * log_mismatch)
        M_inv = _cholesky_and_inverse(self._state_precision(log_prior_scale, w))[1]
        return self._traces(M_inv, log_prior_scale, w)

    def _traces(self, M_inv: np.ndarray, log_s: np.ndarray, w: np.ndarray) -> np.ndarray:
        inv_s = np.exp(-log_s)[self.work_index]
        diagonal = inv_s * ((M_inv * self.P0) @ inv_s)  # of M^-1 S^-1 B^-1 S^-1
        trace_P = np.bincount(self.work_index, diagonal, minlength=self.groups.size)
        return np.r_[trace_P, w * (self.F.reshape(w.size, -1) @ M_inv.ravel())]

    def _eigen_gradient(self, log_s: float, log_t: float, a: np.ndarray) -> tuple:
        w, p = np.exp(-2 * log_t), np.exp(-2 * log_s)
        d = p + self.lam * w
        c = self.VE @ a
        Qa = self.Q[0] @ a
        c2d = c * c / d
        logdet = 2 * self.problem.m * log_t + 2 * self.n * log_s + np.log(d).sum() - self.logdet_B0
        value = self.const - 0.5 * (logdet + w * (a @ Qa) - w * w * c2d.sum())
        g_t = -self.problem.m + w * (self.lam / d).sum() + w * (a @ Qa) - 2 * w * w * c2d.sum()
        g_t += w**3 * (c2d * self.lam / d).sum()
        g_s = -self.n + p * (1 / d).sum() + w * w * p * (c2d / d).sum()
        g_a = -w * Qa + w * w * self.VE.T @ (c / d)
        return value, np.array([g_s]), np.array([g_t]), g_a

    def _state_precision(self, log_s: np.ndarray, w: np.ndarray) -> np.ndarray:
        """M = S^-1 B^-1 S^-1 + sum_c w_c F_c, the posterior precision of the state given theta."""
        if self.groups.size == 1:
            weights = np.concatenate([np.exp(-2 * log_s), w])
            return (weights @ self.PF.reshape(weights.size, -1)).reshape(self.n, self.n)
        inv_s = np.exp(-log_s)[self.work_index]
        M = (w @ self.F.reshape(w.size, -1)).reshape(self.n, self.n)
        M += self.P0 * np.outer(inv_s, inv_s)
        return M

    def _state_gradient(self, log_s: np.ndarray, log_t: np.ndarray, a: np.ndarray, traces: np.ndarray | None) -> tuple:
        w = np.exp(-2 * log_t)
        M = self._state_precision(log_s, w)
        Ea = self.E @ a  # (categories, n)
        Qa = self.Q @ a  # (categories, 1 + offsets)
        g = w @ Ea
        if traces is None:
            chol, M_inv = _cholesky_and_inverse(M)
            u = M_inv @ g
            traces = self._traces(M_inv, log_s, w)
        else:
            chol = _cholesky_in_place(M)
            u = scipy.linalg.lapack.dpotrs(chol, g, lower=1)[0]
        logdet = 2 * (self.m_c @ log_t + self.group_sizes @ log_s + np.log(np.diagonal(chol)).sum())
        Qaa = Qa @ a
        value = self.const - 0.5 * (logdet + w @ Qaa - g @ u)
        G = self.groups.size
        g_t = traces[G:] - self.m_c + w * (Qaa - 2 * Ea @ u + (self.F @ u) @ u)
        inv_s_u = np.exp(-log_s)[self.work_index] * u
        prior_term = inv_s_u * (self.P0 @ inv_s_u)  # u_i (S^-1 B^-1 S^-1 u)_i
        by_group = prior_term.sum(keepdims=True) if G == 1 else np.bincount(self.work_index, prior_term, minlength=G)
        g_s = traces[:G] - self.group_sizes + by_group
        g_a = w @ (u @ self.E - Qa)
        return value, g_s, g_t, g_a

    def _observation_gradient(self, log_s: np.ndarray, log_t: np.ndarray, a: np.ndarray) -> tuple:
        s = np.exp(log_s)
        rho = self.r0 * np.exp(2 * log_t)[self.category_index]
        K = np.tensordot(np.outer(s, s), self.K, axes=2) + np.diag(rho)
        chol, K_inv = _cholesky_and_inverse(K)
        r = self.D @ a
        alpha = scipy.linalg.lapack.dpotrs(chol, r, lower=1)[0]
        value = self.const - np.log(np.diagonal(chol)).sum() - 0.5 * r @ alpha
        W = K_inv - np.outer(alpha, alpha)
        g_t = np.bincount(self.category_index, -rho * np.diagonal(W), minlength=self.categories.size)
        g_s = -s * (np.einsum("ij,ghij->gh", W, self.K) @ s)
        return value, g_s, g_t, -self.D.T @ alpha

    def conditional(
        self,
        log_prior_scale: np.ndarray,
        log_mismatch: np.ndarray,
        offset: np.ndarray | None,
        rng: np.random.Generator,
        covariance: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(mean, covariance, one exact draw) of x | theta, PgC/yr; covariance None unless asked.

        The covariance is the costly part (an n x n inverse, or an n x n product in the eigen form).
        """
        a = self._a(np, offset)
        s = np.exp(log_prior_scale)[self.work_index]
        cov = None
        if self.form == "eigen":
            w = np.exp(-2 * log_mismatch)
            d_inv = 1 / (np.exp(-2 * log_prior_scale) + self.lam * w)
            delta = self.V @ (d_inv * (self.VE @ a) * w)
            if covariance:
                cov = (self.V * d_inv) @ self.V.T
            draw = delta + self.V @ (np.sqrt(d_inv) * rng.standard_normal(delta.size))
        elif self.form == "state":
            w = np.exp(-2 * log_mismatch)
            M = self._state_precision(log_prior_scale, w)
            g = w @ (self.E @ a)  # H^T R(theta)^-1 (innovation - offsets)
            if covariance:
                chol, cov = _cholesky_and_inverse(M)
                delta = cov @ g
            else:
                chol = _cholesky_in_place(M)
                delta = scipy.linalg.lapack.dpotrs(chol, g, lower=1)[0]
            draw = delta + scipy.linalg.lapack.dtrtrs(chol, rng.standard_normal(delta.size), lower=1, trans=1)[0]
        else:
            r = self.r0 * np.exp(2 * log_mismatch)[self.category_index]
            d = self.D @ a
            Bt = self.B0 * np.outer(s, s)
            HB = self.H @ Bt
            factor = scipy.linalg.cho_factor(HB @ self.H.T + np.diag(r), lower=True)
            delta = HB.T @ scipy.linalg.cho_solve(factor, d)
            if covariance:
                half = scipy.linalg.solve_triangular(factor[0], HB, lower=True)
                cov = Bt - half.T @ half
            u = s * (self.B0_chol @ rng.standard_normal(delta.size))  # Matheron: exact draw
            e = np.sqrt(r) * rng.standard_normal(d.size)
            draw = u + HB.T @ scipy.linalg.cho_solve(factor, d - self.H @ u - e)
        if self.basis is not None:  # back from z = Q^T x to x (see _reduce)
            s2 = np.exp(2 * log_prior_scale[0])
            u = self.full_chol @ rng.standard_normal(self.problem.n)
            draw = self.lift @ draw + np.sqrt(s2) * (u - self.lift @ (self.basis.T @ u))
            delta = self.lift @ delta
            if covariance:
                cov = self.lift @ cov @ self.lift.T + s2 * self.residual_cov
        x_b = self.problem.x_prior
        return x_b + delta, None if cov is None else 0.5 * (cov + cov.T), x_b + draw


def _cholesky_in_place(matrix: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of the symmetric C-ordered ``matrix``, in its memory (Fortran order).

    Only the lower triangle is the factor (the upper one keeps ``matrix``); LinAlgError if not SPD.
    """
    chol, info = scipy.linalg.lapack.dpotrf(matrix.T, lower=1, clean=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"hierarchical: matrix not positive definite (potrf info {info})")
    return chol


def _cholesky_and_inverse(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower Cholesky factor, full symmetric inverse) by LAPACK potrf/potri; LinAlgError if not SPD."""
    chol, info = scipy.linalg.lapack.dpotrf(matrix, lower=1, clean=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"hierarchical: matrix not positive definite (potrf info {info})")
    inverse, info = scipy.linalg.lapack.dpotri(chol, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"hierarchical: singular Cholesky factor (potri info {info})")
    full = inverse + inverse.T  # potri wrote the lower triangle; the upper one is the zeros potrf cleaned
    full[np.diag_indices_from(full)] *= 0.5
    return chol, full


def build_model(problem: Problem, config: HierarchicalConfig, evidence: MarginalEvidence | None = None):
    """The PyMC model of ``config.scaling`` (see the module docstring); returns (model, evidence or None)."""
    import pymc as pm
    import pytensor.tensor as pt

    obs = problem.obs
    sites = np.unique(obs["site"].values.astype(str)) if obs is not None else np.array(["all"])
    coords = {"site": sites}
    if config.scaling == "gaussian":
        evidence = evidence or MarginalEvidence(problem, config.prior_groups, offsets=config.offset_sd_ppm > 0)
        coords |= {"category": evidence.categories, "prior_group": evidence.groups}
    else:
        categories = obs["category"].values.astype(str) if obs is not None else np.full(problem.m, "all")
        coords |= {"category": np.unique(categories), "state": np.arange(problem.n)}
    with pm.Model(coords=coords) as model:

        def scale(name: str, sigma: float, dims: str):
            if sigma == 0:
                return pt.zeros(len(coords[dims]))
            return pt.log(pm.LogNormal(name, mu=0.0, sigma=sigma, dims=dims))

        log_mismatch = scale("mismatch_scale", config.mismatch_scale_sigma, "category")
        offset = (
            pm.Normal("offset", mu=0.0, sigma=config.offset_sd_ppm, dims="site") if config.offset_sd_ppm > 0 else None
        )
        if config.scaling == "gaussian":
            log_prior_scale = scale("prior_scale", config.prior_scale_sigma, "prior_group")
            pm.Potential(
                "log_evidence", evidence.log_evidence(log_prior_scale, log_mismatch, offset, xp=_pytensor_backend())
            )
            return model, evidence
        _scaling_likelihood(problem, config, coords, log_mismatch, offset)
    return model, None


def _scaling_likelihood(problem: Problem, config: HierarchicalConfig, coords: dict, log_mismatch, offset) -> None:
    """x = x_b * f, f >= 0 with mean 1 and sd sqrt(B_ii) / |x_b,i|; y ~ N(H x + offset, R(theta))."""
    import pymc as pm
    import pytensor.tensor as pt

    x_b = problem.x_prior
    if np.any(x_b == 0):
        raise ValueError(f"hierarchical scaling={config.scaling!r} needs x_prior != 0 (it scales the prior flux)")
    rel_sd = np.sqrt(problem.B.diagonal()) / np.abs(x_b)
    if config.scaling == "lognormal":  # non-centred, as openghg_inversions' reparameterise=True
        sigma = np.sqrt(np.log1p(rel_sd**2))
        latent = pm.Normal("scaling_latent", 0.0, 1.0, dims="state")
        f = pm.Deterministic("scaling", pt.exp(-0.5 * sigma**2 + sigma * latent), dims="state")
    else:
        f = pm.TruncatedNormal("scaling", mu=1.0, sigma=rel_sd, lower=0.0, dims="state")
    obs = problem.obs
    category = obs["category"].values.astype(str) if obs is not None else np.full(problem.m, "all")
    cat_index = np.searchsorted(coords["category"], category)
    mu = pt.dot(to_dense(problem.H), x_b * f)
    if offset is not None:
        mu = mu + offset[np.searchsorted(coords["site"], obs["site"].values.astype(str))]
    sigma_obs = np.sqrt(problem.R.diagonal()) * pt.exp(log_mismatch)[cat_index]
    pm.Normal("y", mu=mu, sigma=sigma_obs, observed=problem.y)


@solver("hierarchical", exact=False)
def solve_hierarchical(
    problem: Problem,
    config: HierarchicalConfig | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    on_chain: Callable[[int, Path], None] | None = None,
    **options,
) -> Posterior:
    """Sample hyperparameters (and the state, for non-Gaussian scaling) with nutpie.

    Chains run side by side, one per core (forked processes on Linux, else threads), each its
    own nutpie run seeded from ``config.seed`` and the chain number.

    Parameters
    ----------
    config : HierarchicalConfig, optional
        All options; or give them as keywords (``draws=200, scaling="lognormal"``).
    checkpoint : path-like, optional
        netCDF file (ArviZ layout: groups ``posterior`` and ``sample_stats``) holding the sampler
        output of every completed chain, rewritten atomically as each chain completes (every
        chain is its own nutpie run seeded from ``config.seed`` and the chain number, so a
        resumed run gives the same draws as an uninterrupted one). A rerun with the same path
        skips the chains already in it; the file records a SHA-256 of the problem and the
        options and a different problem or options is an error.
        nutpie cannot be restarted from a saved step size and mass matrix, so the unit of
        checkpointing is a whole chain (tuning included).
    on_chain : callable, optional
        Called as ``on_chain(chain, checkpoint)`` after each chain is saved (progress reporting;
        an exception raised there stops the run with the completed chains on disk).

    Returns
    -------
    Posterior
        Mean, covariance (dense mixture moments for ``gaussian``, low-rank sample covariance
        otherwise); ``info`` has ``idata`` (all chains), ``rhat_max``, ``ess_bulk_min``,
        ``converged`` (R-hat <= 1.01 and ESS >= 100 per chain), ``sampling_seconds`` (this run
        only), ``chains_resumed`` (chains read from ``checkpoint``), ``form``, ``trace_surrogate``
        (whether the state-form gradient used the trace model).
    """
    if config is None:
        config = HierarchicalConfig(**options)
    elif options:
        raise TypeError(f"hierarchical: give either config or keyword options, not both ({sorted(options)})")
    # chains run side by side (processes or threads) on small matrices: threaded BLAS would only oversubscribe the cores
    # (on a loaded 2-core machine a threaded SVD of a 2000 x 200 matrix took 10 s instead of 0.1 s)
    with threadpool_limits(limits=1, user_api="blas"):
        evidence, surrogate = None, False
        if config.scaling == "gaussian":
            evidence = MarginalEvidence(problem, config.prior_groups, offsets=config.offset_sd_ppm > 0)
            density = MarginalDensity(evidence, config)
            compiled, sampled, surrogate = density.compile, density.ndim > 0, density.trace_surrogate
        else:
            compiled, sampled = functools.partial(_compile_pymc, problem, config), True
        resumed, idata, seconds = 0, None, 0.0
        if sampled and checkpoint is None:
            idata, seconds = _sample(compiled, config)
        elif sampled:
            resumed, idata, seconds = _sample_with_checkpoint(
                compiled, config, Path(checkpoint), fingerprint(problem, config), on_chain
            )
        result = _posterior(problem, config, evidence, idata)
    result.info.update(sampling_seconds=seconds, chains_resumed=resumed, trace_surrogate=surrogate)
    return result


class MarginalDensity:
    """The marginalised model's log density over unconstrained theta, for nutpie (no compilation).

    theta = [log prior_scale (groups), log mismatch_scale (categories), offset (sites)], each
    block present only when its hyperprior width is > 0. A LogNormal(0, sigma) factor is a
    Normal(0, sigma) log factor (the Jacobian of exp cancels the 1/x of the density), so the
    density is ``log p(y | theta)`` (:meth:`MarginalEvidence.log_evidence_and_gradient`) plus
    independent Normal log densities, with its analytic gradient. It equals the PyMC model of
    :func:`build_model` on the log scale; evaluated in numpy it needs no numba compilation
    (20-50 s on the 2-core test machine), which dominated the run time of small problems.
    """

    def __init__(self, evidence: MarginalEvidence, config: HierarchicalConfig):
        self.evidence = evidence
        blocks = [
            ("prior_scale", "prior_group", evidence.groups, config.prior_scale_sigma),
            ("mismatch_scale", "category", evidence.categories, config.mismatch_scale_sigma),
            ("offset", "site", evidence.sites, config.offset_sd_ppm),
        ]
        self.blocks = [(name, dim, labels, sd) for name, dim, labels, sd in blocks if sd > 0]
        self.sd = np.concatenate([np.full(labels.size, sd) for _, _, labels, sd in self.blocks] or [np.empty(0)])
        self.ndim = self.sd.size
        names, sizes = [name for name, *_ in self.blocks], [labels.size for _, _, labels, _ in self.blocks]
        ends = np.cumsum(sizes, dtype=int)
        self._slices = {name: slice(end - size, end) for name, size, end in zip(names, sizes, ends, strict=True)}
        self._log_normaliser = -np.log(self.sd).sum() - 0.5 * self.ndim * np.log(2 * np.pi)
        self.mode = self.mode_precision = self.traces_at_mode = self.traces_jacobian = None
        if self.ndim:
            self._fit_laplace(config.trace_surrogate and evidence.form == "state")

    def split(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """The blocks of ``theta`` by variable name (log scales for the two scale factors)."""
        return {name: theta[where] for name, where in self._slices.items()}

    def _evidence_args(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(log prior_scale, log mismatch_scale, offset) of ``theta``, zeros for the fixed factors."""
        ev, parts = self.evidence, self.split(theta)
        log_s = parts.get("prior_scale", np.zeros(ev.groups.size))
        return log_s, parts.get("mismatch_scale", np.zeros(ev.categories.size)), parts.get("offset")

    @property
    def trace_surrogate(self) -> bool:
        """Whether the gradient uses the linear model of the precision traces (see :meth:`_fit_laplace`)."""
        return self.traces_jacobian is not None

    def logp(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(log density, gradient) at unconstrained ``theta`` (-inf if the Cholesky fails).

        The value is always exact; with :attr:`trace_surrogate` the gradient inside the Laplace
        ellipsoid uses the linear model of the precision traces.
        """
        traces = None
        if self.trace_surrogate:
            step = theta - self.mode
            if step @ self.mode_precision @ step <= self.surrogate_radius2:
                traces = self.traces_at_mode + self.traces_jacobian @ step
        return self._logp(theta, traces)

    def _logp(self, theta: np.ndarray, traces: np.ndarray | None) -> tuple[float, np.ndarray]:
        try:
            value, *grads = self.evidence.log_evidence_and_gradient(*self._evidence_args(theta), traces)
        except np.linalg.LinAlgError:
            return -np.inf, np.zeros(self.ndim)
        by_name = dict(zip(("prior_scale", "mismatch_scale", "offset"), grads, strict=True))
        prior_gradient = -theta / self.sd**2  # independent Normal(0, sd) hyperpriors
        value += 0.5 * (theta @ prior_gradient) + self._log_normaliser
        gradient = np.concatenate([by_name[name] for name in self._slices]) + prior_gradient
        return float(value), gradient

    def _fit_laplace(self, surrogate: bool) -> None:
        """Posterior mode and Laplace precision of theta; with ``surrogate``, the trace model there.

        The mode (BFGS from theta = 0, exact gradients) and minus the Hessian (central
        differences of the exact gradient) start the chains. The surrogate replaces the
        precision traces (:meth:`MarginalEvidence.precision_traces`, the only part of the
        gradient that needs an n x n inverse) by their first-order Taylor expansion about the
        mode, within the Laplace ellipsoid holding all but 1e-9 of the Laplace mass, exact
        outside it. NUTS stays exact: the value (log det from the Cholesky factor) is exact,
        and the leapfrog map is volume-preserving and reversible for any force field that is a
        fixed function of theta, so the acceptance corrects any error in the gradient; the
        surrogate only changes how far a trajectory travels. A call then needs one Cholesky and
        no inverse (about 2.5 times faster at n = 204). Without a positive-definite Hessian the
        chains start near theta = 0 with exact gradients.
        """

        def negative(theta: np.ndarray) -> tuple[float, np.ndarray]:
            value, gradient = self._logp(theta, None)
            return -value, -gradient

        mode = scipy.optimize.minimize(negative, np.zeros(self.ndim), jac=True, method="BFGS").x
        steps = 1e-4 * self.sd
        n_scale = sum(labels.size for name, _, labels, _ in self.blocks if name != "offset")
        hessian = np.empty((self.ndim, self.ndim))
        jacobian = np.zeros((self.evidence.groups.size + self.evidence.categories.size, self.ndim))
        for k, step in enumerate(steps):
            ahead, behind = mode.copy(), mode.copy()
            ahead[k] += step
            behind[k] -= step
            hessian[:, k] = (self._logp(ahead, None)[1] - self._logp(behind, None)[1]) / (2 * step)
            if surrogate and k < n_scale:  # offsets do not enter the precision
                traces = [self.evidence.precision_traces(*self._evidence_args(t)[:2]) for t in (ahead, behind)]
                jacobian[:, k] = (traces[0] - traces[1]) / (2 * step)
        precision = -0.5 * (hessian + hessian.T)
        if not np.all(np.isfinite(precision)) or np.any(np.linalg.eigvalsh(precision) <= 0):
            return
        self.mode, self.mode_precision = mode, precision
        if surrogate:
            self.traces_at_mode = self.evidence.precision_traces(*self._evidence_args(mode)[:2])
            self.traces_jacobian = jacobian
            self.surrogate_radius2 = float(scipy.stats.chi2.isf(1e-9, self.ndim))
            if self._surrogate_error() > SURROGATE_TOLERANCE:
                self.traces_at_mode = self.traces_jacobian = None

    def _surrogate_error(self) -> float:
        """Largest gradient error of the trace model 2 Laplace sd from the mode, in posterior sd.

        At +-2 sd along each axis of the Laplace ellipsoid: ||L^-1 e||, with e the gradient error
        and L L^T the Laplace precision, is how far (in sd) a force off by e would move a
        Gaussian's mode. NUTS's step-size adaptation answers an energy error that does not shrink
        with the step by ever smaller steps (a constant error of 0.7 sd made a 3-parameter run
        take minutes instead of seconds), so a poor model is not used. Measured: 0.01 on the
        peer benchmark, 0.03 on a 3-parameter test problem, 0.15 with 16 parameters (weakly
        constrained regional scales and site offsets; 1.1 at 5 sd), which sampled with the same
        steps per draw as exact gradients.
        """
        chol = np.linalg.cholesky(self.mode_precision)
        radius = 2.0
        worst = 0.0
        for axis in np.eye(self.ndim):
            for sign in (1, -1):
                theta = self.mode + scipy.linalg.solve_triangular(chol, sign * radius * axis, lower=True, trans=1)
                error = self.logp(theta)[1] - self._logp(theta, None)[1]
                worst = max(worst, float(np.linalg.norm(scipy.linalg.solve_triangular(chol, error, lower=True))))
        return worst

    def initial_point(self, seed: int) -> np.ndarray:
        """A chain's start: a draw from the Laplace approximation, else near theta = 0."""
        rng = np.random.default_rng(seed)
        if self.mode is None:
            return rng.normal(0.0, 0.1 * self.sd)
        chol = np.linalg.cholesky(self.mode_precision)
        return self.mode + scipy.linalg.solve_triangular(chol, rng.standard_normal(self.ndim), lower=True, trans=1)

    def expand(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """The sampled variables on their natural scale (scale factors, offsets in ppm)."""
        parts = self.split(theta)
        return {name: np.exp(part) if name != "offset" else part.copy() for name, part in parts.items()}

    def compile(self):
        """A nutpie model (``nutpie.compiled_pyfunc.from_pyfunc``); chains start at :meth:`initial_point`."""
        from nutpie.compiled_pyfunc import from_pyfunc

        return from_pyfunc(
            ndim=self.ndim,
            make_logp_fn=lambda: self.logp,
            make_expand_fn=lambda *seeds: self.expand,
            expanded_dtypes=[np.dtype("float64")] * len(self.blocks),
            expanded_shapes=[(labels.size,) for _, _, labels, _ in self.blocks],
            expanded_names=[name for name, *_ in self.blocks],
            coords={dim: pd.Index(labels) for _, dim, labels, _ in self.blocks},
            dims={name: (dim,) for name, dim, *_ in self.blocks},
            make_initial_point_fn=self.initial_point,
        )


def _compile_pymc(problem: Problem, config: HierarchicalConfig):
    """nutpie's numba compilation of the PyMC model of :func:`build_model`."""
    import nutpie  # imported here: PyMC, PyTensor and numba take seconds to import

    model, _ = build_model(problem, config)
    return nutpie.compile_pymc_model(model)


def fingerprint(problem: Problem, config: HierarchicalConfig) -> str:
    """SHA-256 (hex) of everything the sampled posterior depends on: problem arrays, labels, options."""
    digest = hashlib.sha256(repr(sorted(asdict(config).items())).encode())
    obs = problem.obs
    labels = [obs[name].values.astype(str) for name in ("site", "category") if obs is not None and name in obs.coords]
    arrays = [problem.x_prior, to_dense(problem.B), to_dense(problem.H), problem.y, problem.R.diagonal(), *labels]
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _nutpie_run(compiled, config: HierarchicalConfig, chains: int, seed: int):
    import nutpie  # imported here: PyMC, PyTensor and numba take seconds to import

    settings = {"draws": config.draws, "tune": config.tune, "progress_bar": False, "save_warmup": False}
    return nutpie.sample(compiled, chains=chains, seed=seed, **settings)


def _one_chain(compiled, config: HierarchicalConfig, chain: int):
    """Chain ``chain`` alone (seed from ``config.seed`` and the chain number): InferenceData of CHECKPOINT_GROUPS."""
    import arviz as az

    seed = int(np.random.SeedSequence([config.seed, chain]).generate_state(1)[0])
    one = _nutpie_run(compiled, config, 1, seed)
    return az.InferenceData(**{g: one[g].assign_coords(chain=[chain]) for g in CHECKPOINT_GROUPS})


def _chain_process(compiled, config: HierarchicalConfig, chain: int, connection) -> None:
    """Body of a forked chain process: send ("ok", InferenceData) or ("error", traceback text)."""
    try:
        connection.send(("ok", _one_chain(compiled, config, chain)))
    except BaseException:  # the parent re-raises it with the chain number
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def _chains(compiled, config: HierarchicalConfig, chains: range) -> Iterator:
    """Each chain's InferenceData in chain order, sampled up to one chain per core at a time.

    Where the platform can fork (Linux), every chain runs in its own forked process: the numpy
    density holds the GIL between its LAPACK calls, so chains in threads of one process (nutpie's
    own way) overlap only partly. Elsewhere, threads. A chain's result travels back through a
    pipe between these processes only (nothing is read from a file).
    """
    workers = max(1, min(len(chains), os.cpu_count() or 1))
    if workers == 1 or "fork" not in multiprocessing.get_all_start_methods():
        with ThreadPoolExecutor(workers) as pool:
            yield from pool.map(functools.partial(_one_chain, compiled, config), chains)
        return
    context = multiprocessing.get_context("fork")
    for batch in (chains[k : k + workers] for k in range(0, len(chains), workers)):
        running = []
        try:
            for chain in batch:
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_chain_process, args=(compiled, config, chain, send), daemon=True)
                process.start()
                send.close()
                running.append((chain, process, receive))
            for chain, process, receive in running:
                try:
                    status, result = receive.recv()
                except EOFError:
                    process.join()
                    raise RuntimeError(
                        f"hierarchical: the process sampling chain {chain} died (exit code {process.exitcode})"
                    ) from None
                process.join()
                if status != "ok":
                    raise RuntimeError(f"hierarchical: sampling chain {chain} failed:\n{result}")
                yield result
        finally:
            for _, process, receive in running:
                receive.close()
                if process.is_alive():
                    process.terminate()


def _sample(compile_model: Callable, config: HierarchicalConfig) -> tuple:
    """nutpie NUTS, chains side by side (:func:`_chains`): (InferenceData, seconds including compilation)."""
    import arviz as az

    start = time.perf_counter()
    idata = az.concat(list(_chains(compile_model(), config, range(config.chains))), dim="chain")
    return idata, time.perf_counter() - start


def _sample_with_checkpoint(
    compile_model: Callable,
    config: HierarchicalConfig,
    path: Path,
    expected: str,
    on_chain: Callable[[int, Path], None] | None,
) -> tuple:
    """Saving after each chain: (chains read from ``path``, InferenceData, seconds)."""
    import arviz as az

    start = time.perf_counter()
    done = _read_checkpoint(path, expected)
    resumed = 0 if done is None else done.posterior.sizes["chain"]
    if resumed < config.chains:
        for chain, one in enumerate(_chains(compile_model(), config, range(resumed, config.chains)), start=resumed):
            done = one if done is None else az.concat(done, one, dim="chain")
            done.posterior.attrs[FINGERPRINT_ATTR] = expected
            with atomic_path(path) as tmp:
                done.to_netcdf(str(tmp))
            if on_chain is not None:
                on_chain(chain, path)
    return resumed, done, time.perf_counter() - start


def _read_checkpoint(path: Path, expected: str):
    """The InferenceData saved at ``path`` (None if there is no file), after checking its fingerprint."""
    import arviz as az

    if not path.exists():
        return None
    try:
        idata = az.from_netcdf(str(path))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"hierarchical: checkpoint {path} is not a readable ArviZ netCDF file ({error}); "
            "delete it or choose another checkpoint path"
        ) from error
    found = idata.posterior.attrs.get(FINGERPRINT_ATTR) if "posterior" in idata.groups() else None
    if found != expected:
        raise ValueError(
            f"hierarchical: checkpoint {path} was written for a different problem or options "
            f"({FINGERPRINT_ATTR} {found!r}, this run {expected!r}); delete it to start afresh "
            "or choose another checkpoint path"
        )
    return az.InferenceData(**{g: idata[g].load() for g in CHECKPOINT_GROUPS})


def _posterior(problem: Problem, config: HierarchicalConfig, evidence: MarginalEvidence | None, idata) -> Posterior:
    """State moments and draws from the sampled (or, with every factor fixed, the given) hyperparameters."""
    import arviz as az  # imported on use: slow, and it warns on import (every `assim` command would)

    posterior = (
        idata.posterior
        if idata is not None  # else every hyperparameter is fixed: nothing was sampled
        else xr.Dataset(coords={"chain": np.arange(config.chains), "draw": np.arange(config.draws)})
    )
    rng = np.random.default_rng(config.seed)
    if evidence is not None:
        mean, covariance, flux = _marginal_state(problem, evidence, posterior, rng)
    else:
        flux = posterior["scaling"].values * problem.x_prior
        flat = flux.reshape(-1, problem.n)
        mean = flat.mean(axis=0)
        covariance = LowRankCovariance((flat - mean).T / np.sqrt(flat.shape[0] - 1), np.ones(flat.shape[0]))
    flux_da = xr.DataArray(
        flux[..., : problem.state.n_flux].reshape(*flux.shape[:2], *problem.state.shape),
        dims=("chain", "draw", "time", "region"),
        coords={"chain": posterior["chain"].values, "draw": posterior["draw"].values, **problem.state.coords()},
        attrs={"units": "PgC yr-1", "long_name": "land flux drawn from the posterior (positive to the atmosphere)"},
    )
    if idata is None:
        idata = az.InferenceData(posterior=xr.Dataset({"flux": flux_da}))
    else:
        idata.posterior["flux"] = flux_da
    info = {"idata": idata, "scaling": config.scaling, **_diagnostics(idata, config)}
    if evidence is not None:
        info["form"] = evidence.form
    return Posterior(problem, mean, covariance, method="hierarchical", info=info)


def _marginal_state(
    problem: Problem, evidence: MarginalEvidence, posterior: xr.Dataset, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixture moments over the theta draws and one exact x | theta draw per theta (chain, draw, n)."""
    shape = (posterior.sizes["chain"], posterior.sizes["draw"])

    def draws_of(name: str, size: int) -> np.ndarray:
        if name in posterior:
            return np.log(posterior[name].values).reshape(-1, size)
        return np.zeros((int(np.prod(shape)), size))

    log_prior = draws_of("prior_scale", evidence.groups.size)
    log_mismatch = draws_of("mismatch_scale", evidence.categories.size)
    offsets = posterior["offset"].values.reshape(-1, evidence.sites.size) if "offset" in posterior else None
    total = log_prior.shape[0]
    means, flux = np.empty((total, problem.n)), np.empty((total, problem.n))
    with_covariance = np.zeros(total, dtype=bool)
    with_covariance[np.linspace(0, total - 1, min(total, MIXTURE_DRAWS)).round().astype(int)] = True
    covariance = np.zeros((problem.n, problem.n))
    for k in range(total):
        offset = offsets[k] if offsets is not None else None
        means[k], cov_k, flux[k] = evidence.conditional(
            log_prior[k], log_mismatch[k], offset, rng, covariance=with_covariance[k]
        )
        if cov_k is not None:
            covariance += cov_k
    mean = means.mean(axis=0)
    spread = means - mean
    covariance = covariance / with_covariance.sum() + spread.T @ spread / total
    return mean, covariance, flux.reshape(*shape, problem.n)


def _diagnostics(idata, config: HierarchicalConfig) -> dict:
    import arviz as az

    names = [v for v in ("prior_scale", "mismatch_scale", "offset", "scaling") if v in idata.posterior]
    if not names:
        return {"rhat_max": 1.0, "ess_bulk_min": float(config.draws * config.chains), "converged": True}
    rhat = az.rhat(idata, var_names=names)
    ess = az.ess(idata, var_names=names)
    rhat_max = float(max(np.nanmax(rhat[v].values) for v in names))
    ess_min = float(min(np.nanmin(ess[v].values) for v in names))
    converged = rhat_max <= 1.01 and ess_min >= 100 * config.chains
    if not converged:
        warnings.warn(
            f"hierarchical: sampler not converged (max R-hat {rhat_max:.3f}, min bulk ESS {ess_min:.0f}); "
            "raise tune/draws or check the hyperpriors",
            RuntimeWarning,
            stacklevel=3,
        )
    return {"rhat_max": rhat_max, "ess_bulk_min": ess_min, "converged": converged}
