"""Ensemble square-root Kalman smoother (EnSRF) and the monthly nowcast built on it.

The posterior is carried as an ensemble: a mean (n,) and perturbations Z (n, N) with
Z Z^T = A (flux PgC/yr, positive to the atmosphere). The prior ensemble is x_b with
Z = L (B = L L^T, N = n: the deterministic full-rank square root, which makes every update
exact for linear-Gaussian problems) or Z = L E / sqrt(N - 1) for N random members.

Observations are whitened once (G = R^-1/2 H, d_w = R^-1/2 d) and assimilated in batches,
by default one per observation month, as in CarbonTracker/CTDAS. Without localisation each
batch is a symmetric square-root (ETKF) update in ensemble space: with Y = G_b Z = U S V^T,

    mean += Z V diag(s / (1 + s^2)) U^T d_b,    Z <- Z T,   T = I - V diag(1 - (1 + s^2)^-1/2) V^T

(Tippett et al. 2003, MWR 131, 1485), and the rows of G Z not yet assimilated follow by the
same right-multiplication, so H is applied only once. With localisation (Gaspari-Cohn in the
distance from the site to each region's centroid) or a lag window (an observation updates
only the fluxes of the ``lag_months`` months up to its own, as CTDAS does), observations go
one at a time through the serial EnSRF of Whitaker & Hamill (2002, MWR 130, 1913).

Nowcast: :func:`nowcast` appends new months to a carried ensemble (their prior conditioned on
the old months through the Kronecker prior covariance, with new members for the innovation
part) and assimilates only the new observations; the past is never re-solved, and for a
linear-Gaussian problem with the full-rank ensemble the result equals the batch solution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
import xarray as xr
from scipy.sparse.linalg import LinearOperator

from assim.covariance import KroneckerCovariance, great_circle_km, to_dense
from assim.posterior import LowRankCovariance, Posterior
from assim.problem import Problem
from assim.solvers import solver
from assim.solvers.variational import prior_sqrt
from assim.state import StateVector
from observations import observation_dataset


@dataclass(frozen=True, eq=False)
class Ensemble:
    """A Gaussian carried as mean + perturbations over a state.

    Attributes
    ----------
    state : StateVector
    x_prior : ndarray (n,), PgC/yr
        Prior mean of the same state (needed to extend it by new months).
    mean : ndarray (n,), PgC/yr, positive to the atmosphere
    perturbations : ndarray (n, members), PgC/yr
        Z with Z Z^T the covariance (no 1/(N-1): it is folded into Z).
    """

    state: StateVector
    x_prior: np.ndarray
    mean: np.ndarray
    perturbations: np.ndarray

    @property
    def members(self) -> int:
        return self.perturbations.shape[1]

    def covariance(self) -> LowRankCovariance:
        return LowRankCovariance(self.perturbations, np.ones(self.members))

    def posterior(self, problem: Problem, info: dict | None = None) -> Posterior:
        """The :class:`Posterior` of ``problem`` this ensemble represents (covariance Z Z^T)."""
        if problem.n != self.mean.size:
            raise ValueError(f"ensemble has {self.mean.size} state elements but the problem has {problem.n}")
        return Posterior(problem, self.mean, self.covariance(), method="ensemble", info=info or {})


def prior_ensemble(
    state: StateVector, x_prior: np.ndarray, B: LinearOperator, members: int | None = None, seed: int = 0
) -> Ensemble:
    """x_b with Z = L (``members=None``: deterministic, exact) or Z = L E / sqrt(N - 1), E centred N(0, 1)."""
    L = prior_sqrt(B)
    n = x_prior.size
    if members is None:
        Z = L.matmat(np.eye(n))
    else:
        if members < 2:
            raise ValueError(f"ensemble: members must be >= 2 (or None for the full-rank square root), got {members}")
        E = np.random.default_rng(seed).standard_normal((n, members))
        Z = L.matmat(E - E.mean(axis=1, keepdims=True)) / np.sqrt(members - 1)
    return Ensemble(state, np.asarray(x_prior, dtype=float), np.asarray(x_prior, dtype=float).copy(), Z)


@solver("ensemble", exact=False)
def solve_ensemble(
    problem: Problem,
    members: int | None = None,
    localisation_km: float | None = None,
    lag_months: int | None = None,
    seed: int = 0,
) -> Posterior:
    """EnSRF smoother over the whole state, observations assimilated month by month.

    Parameters
    ----------
    members : int, optional
        Ensemble size N; ``None`` uses the full-rank square root of B (N = n), exact for
        linear-Gaussian problems.
    localisation_km : float, optional
        Gaspari-Cohn half-width c (km) between an observation's site and a region's centroid
        (no update beyond 2c); needs ``problem.obs``.
    lag_months : int, optional
        An observation updates only the fluxes of its own month and the ``lag_months`` before
        it; needs ``problem.obs``.
    seed : int
        Seed of the random members.

    Returns
    -------
    Posterior
        ``covariance`` Z Z^T as a :class:`~assim.posterior.LowRankCovariance` (``factor`` = Z);
        ``info`` has ``members``, ``batches`` and ``serial``.
    """
    ensemble = prior_ensemble(problem.state, problem.x_prior, problem.B, members, seed)
    taper = None
    if localisation_km is not None or lag_months is not None:
        taper = localisation(problem, localisation_km, lag_months)
    ensemble, batches = assimilate(ensemble, problem.H, problem.y, problem.R, problem.obs, taper, overwrite=True)
    info = {"members": ensemble.members, "batches": batches, "serial": taper is not None}
    return ensemble.posterior(problem, info)


def assimilate(
    ensemble: Ensemble,
    H: LinearOperator,
    y: np.ndarray,
    R: LinearOperator,
    obs: xr.Dataset | None = None,
    taper: np.ndarray | None = None,
    overwrite: bool = False,
) -> tuple[Ensemble, int]:
    """Update ``ensemble`` with observations y = H x + e, e ~ N(0, R) (R must offer ``whiten``).

    Batches are observation months when ``obs`` has ``time``, else one batch. ``taper``
    (m, n) in [0, 1] switches to the serial, localised EnSRF. ``overwrite=True`` updates the
    ensemble's mean and perturbations in place (as scipy's ``overwrite_a``: for an ensemble
    nobody else holds; a full-rank copy is n x n). Returns (ensemble, batches).
    """
    G = R.whiten(to_dense(H))  # (m, n), whitened rows: errors now N(0, I)
    Y = G @ ensemble.perturbations
    d = R.whiten(y - H.matvec(ensemble.mean))
    mean, Z = ensemble.mean, ensemble.perturbations  # updated in place below
    if not overwrite:
        mean, Z = mean.copy(), Z.copy()
    if taper is not None:
        mean, Z = _serial(mean, Z, G, Y, d, taper)
        return Ensemble(ensemble.state, ensemble.x_prior, mean, Z), y.size
    batches = _month_batches(obs, y.size)
    for rows in batches:
        U, s, Vt = np.linalg.svd(Y[rows], full_matrices=False)
        c = s / (1 + s**2) * (U.T @ d[rows])  # mean increment Z Vt^T c, in the batch's ensemble directions
        ZV = Z @ Vt.T  # the one product with Z that both updates need
        mean += ZV @ c
        d -= Y @ (Vt.T @ c)
        shrink = 1 - 1 / np.sqrt(1 + s**2)
        _subtract_product(Z, ZV * shrink, Vt)
        _subtract_product(Y, (Y @ Vt.T) * shrink, Vt)  # Y = G Z stays the image of the updated Z
    return Ensemble(ensemble.state, ensemble.x_prior, mean, Z), len(batches)


def _subtract_product(Z: np.ndarray, A: np.ndarray, Bt: np.ndarray) -> None:
    """Z -= A @ Bt in place; one BLAS dgemm on Z's memory, without an (n, members) temporary.

    For the full-rank ensemble of a nowcast Z is (n, n): a temporary of its size and a second
    pass over it cost more than the product itself.
    """
    if Z.dtype == np.float64 and Z.flags.f_contiguous:
        scipy.linalg.blas.dgemm(-1.0, A, Bt, beta=1.0, c=Z, overwrite_c=True)
    elif Z.dtype == np.float64 and Z.flags.c_contiguous:  # Z^T is Fortran-ordered: BLAS updates it in place
        scipy.linalg.blas.dgemm(-1.0, Bt.T, A.T, beta=1.0, c=Z.T, overwrite_c=True)
    else:
        Z -= A @ Bt


def _month_batches(obs: xr.Dataset | None, m: int) -> list[np.ndarray]:
    if obs is None or "time" not in obs:
        return [np.arange(m)]
    month = pd.DatetimeIndex(obs["time"].values).to_period("M").asi8
    return [np.flatnonzero(month == k) for k in np.unique(month)]


def _serial(
    mean: np.ndarray, Z: np.ndarray, G: np.ndarray, Y: np.ndarray, d: np.ndarray, taper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Whitaker & Hamill serial EnSRF with a localised gain, one whitened observation at a time."""
    for i in range(d.size):
        y_i = Y[i].copy()
        s = 1.0 + y_i @ y_i
        gain = taper[i] * (Z @ y_i) / s
        alpha = 1.0 / (1.0 + np.sqrt(1.0 / s))
        GK = G @ gain
        mean += gain * d[i]
        d -= GK * d[i]
        Z -= alpha * np.outer(gain, y_i)
        Y -= alpha * np.outer(GK, y_i)
    return mean, Z


def gaspari_cohn(r: np.ndarray) -> np.ndarray:
    """Gaspari & Cohn (1999, QJRMS 125, eq. 4.10) compact 5th-order taper of r = distance / c; 0 for r >= 2."""
    r = np.abs(np.asarray(r, dtype=float))
    out = np.zeros_like(r)
    near, far = r <= 1, (r > 1) & (r < 2)
    x = r[near]
    out[near] = -0.25 * x**5 + 0.5 * x**4 + 0.625 * x**3 - 5 / 3 * x**2 + 1
    x = r[far]
    out[far] = x**5 / 12 - 0.5 * x**4 + 0.625 * x**3 + 5 / 3 * x**2 - 5 * x + 4 - 2 / (3 * x)
    return out


def localisation(problem: Problem, length_km: float | None, lag_months: int | None) -> np.ndarray:
    """Taper (m, n): Gaspari-Cohn in site-to-centroid distance times a lag window in months."""
    if problem.obs is None:
        raise ValueError("ensemble localisation needs problem.obs (latitude, longitude, time of each observation)")
    obs, state = problem.obs, problem.state
    regions = state.regions
    n_time, n_region = state.shape
    taper = np.ones((problem.m, n_time, n_region))
    if length_km is not None:
        lat = np.r_[obs["latitude"].values, regions["centroid_latitude"].values]
        lon = np.r_[obs["longitude"].values, regions["centroid_longitude"].values]
        dist = great_circle_km(lat, lon)[: problem.m, problem.m :]
        taper *= gaspari_cohn(dist / length_km)[:, None, :]
    if lag_months is not None:
        obs_month = pd.DatetimeIndex(obs["time"].values).to_period("M").asi8
        state_month = pd.DatetimeIndex(state.time).to_period("M").asi8
        lag = obs_month[:, None] - state_month[None, :]
        taper *= ((lag >= 0) & (lag <= lag_months))[:, :, None]
    extras = np.ones((problem.m, state.n_extra))  # scalar parameters (if any) are not localised
    return np.hstack([taper.reshape(problem.m, -1), extras])


def extend(ensemble: Ensemble, state: StateVector, x_prior: np.ndarray, B: KroneckerCovariance) -> Ensemble:
    """Append months to a carried ensemble: their prior, conditioned on the old months.

    Parameters
    ----------
    ensemble : Ensemble over the first T months of ``state``
    state : StateVector
        The extended state (T + k months, same regions).
    x_prior : ndarray (n_new,)
        Prior mean over the extended state (its first T months must be the ensemble's).
    B : KroneckerCovariance over the extended state
        Prior covariance; its first T months must be the one the ensemble started from.

    Returns
    -------
    Ensemble
        With x_new = x_b,new + S_new (a^T (x) I) S_old^-1 (x_old - x_b,old) + noise,
        a = C_oo^-1 C_on (time correlation), noise ~ N(0, S (kappa (x) C_region) S),
        kappa = C_nn - C_no a: the old perturbations are carried into the new rows and
        k x R new members (the deterministic square root of the noise) are added.
    """
    if state.n_extra or ensemble.state.n_extra:
        raise ValueError("extend: a nowcast state must hold monthly fluxes only (no extra parameters)")
    n_old = ensemble.mean.size
    n_region = state.regions.sizes["region"]
    T = n_old // n_region
    k = state.time.size - T
    if k < 1 or not np.array_equal(state.time[:T], ensemble.state.time):
        raise ValueError(
            f"extend: the new state must start with the ensemble's {T} months and add at least one; "
            f"got {state.time.size} months starting {state.time[0]}"
        )
    if not np.allclose(x_prior[:n_old], ensemble.x_prior):
        raise ValueError("extend: x_prior over the old months differs from the prior the ensemble was built from")
    ct, sd = B.time_correlation, B.sd.reshape(T + k, n_region)
    a = scipy.linalg.solve(ct[:T, :T], ct[:T, T:], assume_a="pos")  # (T, k)
    kappa = ct[T:, T:] - ct[T:, :T] @ a
    old_sd = sd[:T]
    if not (old_sd > 0).all():
        raise ValueError("extend: the prior sd must be > 0 for every old state element")

    # only months with a non-zero weight enter (for an exponential, i.e. Markov, time correlation: the last)
    months = np.flatnonzero(np.abs(a).max(axis=1) > 1e-12 * np.abs(a).max())

    def regress(values: np.ndarray) -> np.ndarray:  # (T*R, c) -> (k*R, c)
        white = values.reshape(T, n_region, -1)[months] / old_sd[months, :, None]
        return (sd[T:, :, None] * np.einsum("tj,trc->jrc", a[months], white)).reshape(k * n_region, -1)

    noise = np.kron(scipy.linalg.cholesky(kappa, lower=True), scipy.linalg.cholesky(B.region_correlation, lower=True))
    noise *= sd[T:].ravel()[:, None]
    old_Z = ensemble.perturbations
    # [[Z_old, 0], [regress(Z_old), noise]] in Z_old's memory order: a transposing copy of a
    # full-rank (n, n) ensemble would cost more than the whole update
    Z = np.zeros((n_old + k * n_region, old_Z.shape[1] + k * n_region), order="F" if old_Z.flags.f_contiguous else "C")
    Z[:n_old, : old_Z.shape[1]] = old_Z
    Z[n_old:, : old_Z.shape[1]] = regress(old_Z)
    Z[n_old:, old_Z.shape[1] :] = noise
    mean = np.r_[ensemble.mean, x_prior[n_old:] + regress(ensemble.mean - ensemble.x_prior).ravel()]
    return Ensemble(state, np.asarray(x_prior, dtype=float), mean, Z)


def nowcast(
    ensemble: Ensemble,
    state: StateVector,
    x_prior: np.ndarray,
    B: KroneckerCovariance,
    H: LinearOperator,
    y: np.ndarray,
    R: LinearOperator,
) -> Ensemble:
    """Add new months and their observations to a carried ensemble without re-solving the past.

    ``state``, ``x_prior`` and ``B`` cover the extended period (see :func:`extend`); ``H``
    (m_new, n_new), ``y`` (m_new,) ppm and ``R`` are the new observations only. For a
    linear-Gaussian problem and the full-rank ensemble the result equals the batch posterior
    of all months and all observations.
    """
    return assimilate(extend(ensemble, state, x_prior, B), H, y, R, overwrite=True)[0]


#: Run-file variables a nowcast carries (docs/outputs.md, "Nowcast state").
CARRIED_OBS_COORDS = ("longitude", "altitude", "category", "platform")


def carried_variables(ensemble: Ensemble, obs: xr.Dataset) -> xr.Dataset:
    """What ``assim nowcast`` needs in a run file beyond docs/outputs.md's required variables.

    Returns
    -------
    Dataset
        ``nowcast_perturbation`` (member, time, region), PgC yr-1: Z with Z Z^T the posterior
        covariance of the monthly fluxes (``flux_posterior`` is the mean, ``flux_prior`` the
        prior the ensemble was built on), and the observation coords the run lacks
        (``obs_longitude``, ``obs_altitude``, ``obs_category``, ``obs_platform``) so the
        observations can be rebuilt.
    """
    state = ensemble.state
    Z = ensemble.perturbations.T.reshape(ensemble.members, *state.shape)
    perturbation = xr.DataArray(
        Z,
        dims=("member", "time", "region"),
        coords=state.coords(),
        attrs={
            "units": "PgC yr-1",
            "long_name": "posterior ensemble perturbations Z (Z Z^T = posterior covariance of the monthly fluxes)",
        },
    )
    coords = {f"obs_{name}": ("obs", obs[name].values) for name in CARRIED_OBS_COORDS}
    return xr.Dataset({"nowcast_perturbation": perturbation}, coords=coords)


def ensemble_from_run(run: xr.Dataset, regions: xr.Dataset, source: str = "run") -> Ensemble:
    """The carried ensemble of a run Dataset (see :func:`carried_variables`)."""
    if "nowcast_perturbation" not in run:
        raise ValueError(
            f"{source} has no nowcast_perturbation: it was not written by an ensemble run or an earlier nowcast; "
            "see docs/outputs.md (Nowcast state)"
        )
    state = StateVector(run["time"].values, regions.sel(region=run["region"].values))
    perturbation = run["nowcast_perturbation"].transpose("member", "time", "region").values
    return Ensemble(
        state,
        run["flux_prior"].transpose("time", "region").values.ravel(),
        run["flux_posterior"].transpose("time", "region").values.ravel(),
        perturbation.reshape(perturbation.shape[0], -1).T.copy(),
    )


def observations_from_run(run: xr.Dataset, source: str = "run") -> xr.Dataset:
    """The Observation Dataset of a run (value = obs_value + obs_background, ppm), with ``background``."""
    missing = [f"obs_{name}" for name in CARRIED_OBS_COORDS if f"obs_{name}" not in run.variables]
    if missing:
        raise ValueError(f"{source} lacks {missing}; it was not written with the nowcast state (docs/outputs.md)")
    background = run["obs_background"].values
    obs = observation_dataset(
        run["obs_value"].values + background,
        run["obs_uncertainty"].values,
        units="ppm",
        time=run["obs_time"].values,
        latitude=run["obs_latitude"].values,
        longitude=run["obs_longitude"].values,
        altitude=run["obs_altitude"].values,
        site=run["obs_site"].values,
        platform=run["obs_platform"].values,
        category=run["obs_category"].values,
        attrs={"source_file": source},
    )
    return obs.assign(background=("obs", background, {"units": "ppm", "long_name": "fixed background"}))
