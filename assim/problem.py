"""The linear-Gaussian inversion problem every solver takes.

y = H x + e,  x ~ N(x_prior, B),  e ~ N(0, R).

x : state vector (n,), monthly regional land flux in PgC/yr, positive to the atmosphere,
    ordered as :class:`assim.state.StateVector`.
y : observations (m,) in ppm, minus any fixed background the state does not carry.
H : (m, n) LinearOperator, ppm per (PgC/yr); B : (n, n) and R : (m, m) LinearOperators.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy.sparse.linalg import LinearOperator

from assim.covariance import DiagonalCovariance, ExponentialCorrelation, prior_covariance
from assim.state import StateVector
from assim.transport import Transport
from observations import validate as validate_observations
from observations.units import convert


class ProblemError(ValueError):
    """The pieces of a Problem do not fit together; the message says which and how."""


@dataclass(frozen=True, eq=False)
class Problem:
    """Prior, observations, operators and their labels; see the module docstring for units."""

    state: StateVector
    x_prior: np.ndarray
    B: LinearOperator
    H: LinearOperator
    y: np.ndarray
    R: LinearOperator
    obs: xr.Dataset | None = None

    @property
    def n(self) -> int:
        return self.x_prior.size

    @property
    def m(self) -> int:
        return self.y.size

    def validate(self) -> Problem:
        """Check shapes and values once, before any solver runs; raise :class:`ProblemError`."""
        n, m = self.state.size, np.size(self.y)
        checks = [
            ("x_prior", np.shape(self.x_prior), (n,)),
            ("B", self.B.shape, (n, n)),
            ("H", self.H.shape, (m, n)),
            ("R", self.R.shape, (m, m)),
        ]
        for name, found, expected in checks:
            if tuple(found) != expected:
                raise ProblemError(
                    f"{name} has shape {tuple(found)}, expected {expected} "
                    f"(state {self.state.shape} = {n}, {m} observations)"
                )
        if not np.isfinite(self.x_prior).all():
            raise ProblemError("x_prior has non-finite values")
        bad = ~np.isfinite(self.y)
        if bad.any():
            raise ProblemError(f"y is not finite at obs {int(np.flatnonzero(bad)[0])} ({int(bad.sum())} in all)")
        r_diag = self.R.diagonal() if hasattr(self.R, "diagonal") else None
        if r_diag is not None and not (r_diag > 0).all():
            raise ProblemError(f"R must have a positive diagonal; obs {int(np.argmin(r_diag))} has {r_diag.min()!r}")
        if self.obs is not None and self.obs.sizes.get("obs") != m:
            raise ProblemError(f"obs Dataset has {self.obs.sizes.get('obs')} observations but y has {m}")
        return self

    def innovation(self) -> np.ndarray:
        """d = y - H x_prior (ppm)."""
        return self.y - self.H.matvec(self.x_prior)

    @classmethod
    def from_datasets(
        cls,
        prior: xr.Dataset,
        obs: xr.Dataset,
        transport: Transport,
        regions: xr.Dataset,
        time_correlation: ExponentialCorrelation,
        region_correlation: ExponentialCorrelation,
        background_ppm: float | np.ndarray = 0.0,
    ) -> Problem:
        """Assemble a Problem from a Prior Dataset and an Observation Dataset.

        Parameters
        ----------
        prior : Dataset with ``flux`` and ``flux_sd`` over (time, region)
            Prior land flux and its 1-sigma, positive to the atmosphere; any pint-readable flux
            unit (converted to PgC/yr). ``flux_sd`` scales B.
        obs : Observation Dataset
            ``value`` and ``uncertainty`` in ppm; ``uncertainty`` is the total 1-sigma error
            (measurement and model-data mismatch), giving a diagonal R.
        transport : object with ``jacobian(state, obs)``
            e.g. ``assim.transport.make_transport("box12")``.
        regions : Dataset (region)
            Region table (centroids for the spatial correlation).
        time_correlation : ExponentialCorrelation
            Length in months.
        region_correlation : ExponentialCorrelation
            Length in km.
        background_ppm : float or ndarray (obs,)
            Fixed mole fraction the state does not explain (initial condition, fixed fossil and
            ocean fluxes), subtracted from ``obs.value``; kept as ``obs["background"]``.
        """
        for name in ("flux", "flux_sd"):
            if name not in prior:
                raise ProblemError(f"prior Dataset lacks {name!r} (has {sorted(prior.data_vars)})")
        obs = validate_observations(obs)
        if "flag" in obs.coords and (obs["flag"] != 0).any():
            raise ProblemError(
                f"{int((obs['flag'] != 0).sum())} observations are flagged (flag != 0); drop them explicitly with "
                "observations.errors.usable(obs) before building the Problem"
            )
        if obs["value"].attrs["units"] != "ppm":
            raise ProblemError(
                f"observation values must be in ppm for this transport, got {obs['value'].attrs['units']!r}"
            )
        missing = set(prior["region"].values) - set(regions["region"].values)
        if missing:
            raise ProblemError(f"prior regions {sorted(missing)} are not in the region table")
        regions = regions.sel(region=prior["region"].values)
        state = StateVector(prior["time"].values, regions)
        flux = {
            name: convert(
                prior[name].transpose("time", "region").values, prior[name].attrs.get("units", "PgC yr-1"), "PgC/yr"
            )
            for name in ("flux", "flux_sd")
        }
        B = prior_covariance(state, flux["flux_sd"], time_correlation, region_correlation)
        background = np.broadcast_to(np.asarray(background_ppm, dtype=float), obs["value"].shape)
        return cls(
            state=state,
            x_prior=flux["flux"].ravel(),
            B=B,
            H=transport.jacobian(state, obs),
            y=obs["value"].values - background,
            R=DiagonalCovariance(obs["uncertainty"].values ** 2),
            obs=obs.assign(background=("obs", background.copy(), {"units": "ppm", "long_name": "fixed background"})),
        ).validate()
