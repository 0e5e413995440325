"""Flux towers: eddy-covariance NEE observes the land flux of the region (or grid cell) holding the tower.

A state element is a region's mean flux over a month (PgC/yr, spread uniformly over its area
A_r, positive to the atmosphere), so a tower in region r observes, in month t, the flux density

    NEE = F_{t,r} / A_r      (converted to the observation's units, e.g. gC m-2 d-1)

and its Jacobian row has one entry. Regions come from any integer mask on a lat/lon grid: a
region mask, a grid whose every cell is its own code (the tower then sees its cell), or a
vegetation-class map (the tower sees its class). FLUXNET NEE (``observations.read(...,
kind="fluxnet")``) is positive to the atmosphere, like the state.

The tower sees a footprint of ~1 km2, the state a region of ~1e6 km2: the representation error
(:class:`RepresentationError`) is the spread between the footprint mean and the cell mean of a
field with standard deviation ``sd`` at a point and correlation length ``correlation_km``. With
n_eff(a) = 1 + a / l^2 independent patches in an area a, the mean over a has variance
sd^2 / n_eff(a); for a footprint a inside a cell A (nested means, Cov = Var of the larger mean)

    sigma_rep^2 = sd^2 (1 / n_eff(a) - 1 / n_eff(A)),

which vanishes as the footprint grows to the cell and tends to sd^2 / n_eff(a) for a large cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import xarray as xr
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from assim.state import StateVector
from assim.transport.footprints import mask_codes, month_index, region_index
from observations.units import convert


@dataclass(frozen=True)
class RepresentationError:
    """Footprint-to-cell representation error of tower NEE (see the module docstring).

    Parameters
    ----------
    sd : float
        Point-scale standard deviation of monthly NEE between sites of one cell, in ``units``.
    correlation_km : float
        Correlation length l of that spatial variability (km).
    footprint_km2 : float
        Area a a tower's flux footprint averages over (km2).
    units : str
        Units of ``sd``.
    """

    sd: float = 1.0
    correlation_km: float = 10.0
    footprint_km2: float = 1.0
    units: str = "gC m-2 d-1"

    def __post_init__(self) -> None:
        if not (self.sd >= 0 and self.correlation_km > 0 and self.footprint_km2 > 0):
            raise ValueError(f"RepresentationError needs sd >= 0, correlation_km > 0, footprint_km2 > 0; got {self}")

    def __call__(self, cell_km2: np.ndarray, units: str | None = None) -> np.ndarray:
        """sigma_rep for cells of area ``cell_km2`` (clipped below at the footprint), in ``units`` (default own)."""
        length2 = self.correlation_km**2
        cell = np.maximum(np.asarray(cell_km2, dtype=float), self.footprint_km2)
        variance = self.sd**2 * (length2 / (length2 + self.footprint_km2) - length2 / (length2 + cell))
        return convert(np.sqrt(variance), self.units, units or self.units)


def tower_regions(state: StateVector, obs: xr.Dataset, mask: xr.DataArray) -> np.ndarray:
    """Index of the state region holding each tower (obs,); raise naming a tower outside every region."""
    index = region_index(
        mask_codes(mask, obs["latitude"].values, obs["longitude"].values), state.regions["region_id"].values
    )
    outside = index < 0
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"flux tower obs {i} ({obs['site'].values[i]} at {obs['latitude'].values[i]:.2f}N "
            f"{obs['longitude'].values[i]:.2f}E) lies in no state region of the mask ({int(outside.sum())} obs); "
            "drop those sites or use a mask that covers them"
        )
    return index


def tower_jacobian(state: StateVector, obs: xr.Dataset, mask: xr.DataArray) -> LinearOperator:
    """H (obs, state), sparse: d(tower NEE, in ``obs.value`` units) / d(state PgC/yr), one entry a row."""
    region = tower_regions(state, obs, mask)
    month = month_index(state, obs["time"].values, "flux towers")
    per_area = convert(1.0 / state.regions["area"].values, "PgC yr-1 m-2", obs["value"].attrs["units"])
    m = obs.sizes["obs"]
    matrix = scipy.sparse.csr_matrix(
        (per_area[region], (np.arange(m), month * state.region.size + region)), shape=(m, state.size)
    )
    return aslinearoperator(matrix)


def tower_uncertainty(
    state: StateVector, obs: xr.Dataset, mask: xr.DataArray, representation: RepresentationError
) -> np.ndarray:
    """Total 1-sigma (obs,) in ``obs.value`` units: measurement and representation error in quadrature."""
    region = tower_regions(state, obs, mask)
    cell_km2 = convert(state.regions["area"].values[region], "m2", "km2")
    sigma_rep = representation(cell_km2, obs["value"].attrs["units"])
    return np.hypot(obs["uncertainty"].values, sigma_rep)
