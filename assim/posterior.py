"""The posterior every solver returns, and analysis that propagates its covariance.

Totals over regions and periods are linear maps w of the state, so their covariance is
W A W^T (never a sum of variances). Land sink = -flux (positive uptake), PgC/yr.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr
from scipy.sparse.linalg import LinearOperator

from assim.covariance import to_dense
from assim.problem import Problem
from assim.state import StateVector


@dataclass(frozen=True, eq=False)
class Posterior:
    """Gaussian posterior of a :class:`~assim.problem.Problem`.

    Attributes
    ----------
    problem : Problem
    mean : ndarray (n,), PgC/yr, positive to the atmosphere
    covariance : ndarray (n, n) or LinearOperator
        Posterior covariance A, (PgC/yr)^2.
    method : str
        Name of the solver that produced it.
    info : dict
        Solver facts (form used, iterations, ...).
    """

    problem: Problem
    mean: np.ndarray
    covariance: np.ndarray | LinearOperator
    method: str
    info: dict = field(default_factory=dict)

    @property
    def state(self) -> StateVector:
        return self.problem.state

    @property
    def variance(self) -> np.ndarray:
        if isinstance(self.covariance, np.ndarray):
            return np.diag(self.covariance).copy()
        return self.covariance.diagonal()

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(self.variance)

    def flux(self) -> xr.Dataset:
        """Prior and posterior flux with marginal sd over (time, region), PgC/yr, positive to the atmosphere."""
        prior_sd = np.sqrt(self.problem.B.diagonal())
        to_da = self.state.to_dataarray
        return xr.Dataset(
            {
                "flux_prior": to_da(self.problem.x_prior, "flux_prior", {"long_name": "prior land flux"}),
                "flux_prior_sd": to_da(prior_sd, "flux_prior_sd", {"long_name": "prior land flux 1-sigma"}),
                "flux_posterior": to_da(self.mean, "flux_posterior", {"long_name": "posterior land flux"}),
                "flux_posterior_sd": to_da(self.sd, "flux_posterior_sd", {"long_name": "posterior land flux 1-sigma"}),
            }
        )

    def simulated(self) -> tuple[np.ndarray, np.ndarray]:
        """(H x_prior, H x_posterior) in ppm."""
        return self.problem.H.matvec(self.problem.x_prior), self.problem.H.matvec(self.mean)

    def aggregate(self, weights: xr.DataArray) -> xr.Dataset:
        """Posterior mean, sd and covariance of the linear combinations in ``weights``."""
        return aggregate(weights, self.state, self.mean, self.covariance)

    def aggregate_prior(self, weights: xr.DataArray) -> xr.Dataset:
        """The same for the prior (covariance B)."""
        return aggregate(weights, self.state, self.problem.x_prior, self.problem.B)

    def whitened_jacobian(self) -> np.ndarray:
        """G = R^(-1/2) H, dense (m, n); R must offer ``whiten``."""
        return self.problem.R.whiten(to_dense(self.problem.H))

    def dofs(self) -> float:
        """Degrees of freedom for signal, trace(I - A B^-1) = trace(R^-1/2 H A H^T R^-1/2).

        A solver that knows it without forming H densely puts it in ``info["dofs"]`` (variational:
        sum of 1 - 1/lambda over the kept Hessian eigenvalues, a lower bound when truncated).
        """
        if "dofs" in self.info:
            return float(self.info["dofs"])
        G = self.whitened_jacobian()
        GA = G @ to_dense(self.covariance)
        return float(np.einsum("ij,ij->", GA, G))

    def chi2_reduced(self) -> float:
        """d^T (H B H^T + R)^-1 d / m with d the innovation: about 1 for consistent error statistics.

        Equals 2 J(x_posterior) / m (Tarantola 2005, eq. 6.31); evaluated via Woodbury as
        |R^-1/2 d|^2 - g^T A g with g = H^T R^-1 d (R must offer ``whiten`` and ``solve``).
        """
        p = self.problem
        d = p.innovation()
        d_white = p.R.whiten(d)
        g = p.H.rmatvec(p.R.solve(d))
        A = self.covariance
        Ag = A @ g if isinstance(A, np.ndarray) else A.matvec(g)
        return float((d_white @ d_white - g @ Ag) / p.m)


class LowRankCovariance(LinearOperator):
    """A = base + U diag(weights) U^T as a LinearOperator: a covariance that is never formed.

    Solvers that do not build the dense posterior covariance return it in this form:
    ``variational`` as B - U diag(1 - 1/lambda) U^T (U = L V from the Lanczos Ritz vectors V of
    the prior-preconditioned Hessian, B = L L^T), ``ensemble`` as Z Z^T (``base=None``,
    ``factor`` the (n, members) perturbation matrix, ``weights`` ones).

    Parameters
    ----------
    factor : ndarray (n, k)
        U, in state units (PgC/yr).
    weights : ndarray (k,)
        Diagonal of the rank-k middle factor (negative for a reduction of ``base``).
    base : LinearOperator (n, n) with ``diagonal()``, optional
        The full-rank part (e.g. the prior covariance B); ``None`` for zero.
    """

    def __init__(self, factor: np.ndarray, weights: np.ndarray, base: LinearOperator | None = None):
        self.factor = np.asarray(factor, dtype=float)
        self.weights = np.asarray(weights, dtype=float).ravel()
        self.base = base
        if self.factor.ndim != 2 or self.factor.shape[1] != self.weights.size:
            raise ValueError(
                f"LowRankCovariance: factor has shape {self.factor.shape} but weights has {self.weights.size} "
                "entries; expected factor (n, k) and weights (k,)"
            )
        n = self.factor.shape[0]
        if base is not None and tuple(base.shape) != (n, n):
            raise ValueError(f"LowRankCovariance: base has shape {base.shape}, expected {(n, n)}")
        super().__init__(dtype=np.float64, shape=(n, n))

    def __repr__(self) -> str:
        base = "0" if self.base is None else type(self.base).__name__
        return f"LowRankCovariance(n={self.shape[0]}, rank={self.weights.size}, base={base})"

    @property
    def rank(self) -> int:
        return self.weights.size

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float).reshape(self.shape[1], -1)
        low = self.factor @ (self.weights[:, None] * (self.factor.T @ X))
        return low if self.base is None else self.base.matmat(X) + low

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.reshape(x, (-1, 1))).ravel()

    def _adjoint(self) -> LowRankCovariance:
        return self

    def diagonal(self) -> np.ndarray:
        """Variances, (PgC/yr)^2, without forming A."""
        low = (self.factor**2) @ self.weights
        return low if self.base is None else self.base.diagonal() + low

    def todense(self) -> np.ndarray:
        """The full (n, n) matrix: for small problems, DOFS and tests."""
        low = (self.factor * self.weights) @ self.factor.T
        return low if self.base is None else to_dense(self.base) + low


def aggregate(
    weights: xr.DataArray, state: StateVector, mean: np.ndarray, covariance: np.ndarray | LinearOperator
) -> xr.Dataset:
    """Mean, sd and covariance of ``weights . x`` for x ~ N(mean, covariance).

    Parameters
    ----------
    weights : DataArray (..., time, region)
        One linear combination of the state per label of the leading dims (e.g. year, aggregate).
    state : StateVector
    mean : ndarray (n,)
    covariance : ndarray or LinearOperator (n, n)

    Returns
    -------
    Dataset
        ``mean``, ``sd`` over the leading dims and ``covariance`` over (dims, dims_b) with
        ``_b`` copies of each leading dim.
    """
    out_dims = [d for d in weights.dims if d not in ("time", "region")]
    flat = state.to_vector(weights.transpose("time", "region", *out_dims))  # (n_flux, *out)
    W = state.pad(flat.reshape(state.n_flux, -1)).T
    WA = (covariance @ W.T).T if isinstance(covariance, np.ndarray) else covariance.matmat(W.T).T
    cov = WA @ W.T
    cov = 0.5 * (cov + cov.T)
    shape = [weights.sizes[d] for d in out_dims]
    coords = {d: weights[d].values for d in out_dims}
    coords_b = {f"{d}_b": weights[d].values for d in out_dims}
    return xr.Dataset(
        {
            "mean": (out_dims, (W @ mean).reshape(shape)),
            "sd": (out_dims, np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(shape)),
            "covariance": ([*out_dims, *coords_b], cov.reshape(shape + shape)),
        },
        coords={**coords, **coords_b},
    )


def land_aggregates(regions: xr.Dataset) -> xr.DataArray:
    """Weights (aggregate, region): each region, global land and three latitude bands.

    A latitude-band total takes each region's flux times the fraction of its area in the band
    (flux assumed uniform within a region).
    """
    names = list(regions["region"].values)
    frac = regions["band_fraction"]
    bands = {
        "Global land": xr.ones_like(frac.isel(band=0)),
        "Northern extratropics (30N-90N)": frac.sel(band="90N-30N"),
        "Tropics (30S-30N)": frac.sel(band="30N-0") + frac.sel(band="0-30S"),
        "Southern extratropics (90S-30S)": frac.sel(band="30S-90S"),
    }
    rows = [xr.DataArray(np.eye(len(names))[i], dims="region", coords={"region": names}) for i in range(len(names))]
    rows += [b.drop_vars("band", errors="ignore") for b in bands.values()]
    return xr.concat(rows, dim="aggregate").assign_coords(aggregate=names + list(bands))


def annual_mean_weights(state: StateVector, aggregates: xr.DataArray, partial_years: bool = False) -> xr.DataArray:
    """Weights (year, aggregate, time, region) for day-weighted annual means of each aggregate.

    Only calendar years fully inside the state are included, unless ``partial_years``: then
    every year the state touches is, as the mean over its months in the state (a regional
    campaign of a few months). The mean flux of a year is sum over its months of
    flux * days_in_month / days in those months (PgC/yr).
    """
    index = pd.DatetimeIndex(state.time)
    years = [y for y in np.unique(index.year) if partial_years or (index.year == y).sum() == 12]
    if not years:
        raise ValueError(f"the state ({index[0]:%Y-%m} to {index[-1]:%Y-%m}) covers no complete calendar year")
    days = state.days_in_month
    by_year = np.zeros((len(years), state.time.size))
    for i, year in enumerate(years):
        in_year = index.year == year
        by_year[i, in_year] = days[in_year] / days[in_year].sum()
    time_w = xr.DataArray(by_year, dims=("year", "time"), coords={"year": years, "time": state.time})
    return (time_w * aggregates).transpose("year", "aggregate", "time", "region")


def anomaly(totals: xr.Dataset, reference: tuple[int, int]) -> xr.Dataset:
    """Each year minus the mean over the ``reference`` years (inclusive), with covariance propagated.

    ``totals`` is the output of :func:`aggregate` over (year, aggregate).
    """
    years = totals["year"].values
    in_ref = (years >= reference[0]) & (years <= reference[1])
    if not in_ref.any():
        raise ValueError(f"reference period {reference} has no years in {years.min()}..{years.max()}")
    D = np.eye(years.size) - np.outer(np.ones(years.size), in_ref / in_ref.sum())
    mean = np.einsum("yz,za->ya", D, totals["mean"].values)
    cov = totals["covariance"].values  # (year, aggregate, year_b, aggregate_b)
    cov_aa = np.einsum("yaza->ayz", cov)  # per aggregate: (year, year)
    var = np.einsum("yz,azw,yw->ya", D, cov_aa, D)
    return xr.Dataset(
        {"mean": (("year", "aggregate"), mean), "sd": (("year", "aggregate"), np.sqrt(np.clip(var, 0, None)))},
        coords={"year": years, "aggregate": totals["aggregate"].values},
        attrs={"reference_period": f"{reference[0]}-{reference[1]}"},
    )


def monthly_aggregate(
    aggregates: xr.DataArray, state: StateVector, mean: np.ndarray, covariance: np.ndarray | LinearOperator
) -> xr.Dataset:
    """Monthly totals of each aggregate with their marginal sd, over (time, aggregate).

    Only the (region x region) diagonal blocks of the covariance are needed, so this never
    forms the (months x aggregates) weight matrix of :func:`aggregate`.

    Parameters
    ----------
    aggregates : DataArray (aggregate, region)
        e.g. :func:`land_aggregates`.
    """
    G = aggregates.transpose("aggregate", "region").sel(region=state.region).values  # (k, R)
    T, R = state.shape
    if isinstance(covariance, np.ndarray):
        flux_block = covariance[: state.n_flux, : state.n_flux]
        blocks = np.einsum("trtq->trq", flux_block.reshape(T, R, T, R))
    else:
        blocks = np.empty((T, R, R))
        for t in range(T):
            columns = np.zeros((state.size, R))  # unit vectors of month t's regions
            columns[t * R : (t + 1) * R] = np.eye(R)
            blocks[t] = covariance.matmat(columns)[t * R : (t + 1) * R]
    variance = np.einsum("kr,trq,kq->tk", G, blocks, G)
    coords = {"time": state.time, "aggregate": aggregates["aggregate"].values}
    return xr.Dataset(
        {
            "mean": (("time", "aggregate"), mean[: state.n_flux].reshape(T, R) @ G.T),
            "sd": (("time", "aggregate"), np.sqrt(np.clip(variance, 0, None))),
        },
        coords=coords,
    )
