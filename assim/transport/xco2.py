"""Satellite XCO2: each sounding's averaging kernel and pressure weights applied to a modelled CO2 profile.

For sounding i with pressure weights w_ik (summing to 1), normalised column averaging kernel
a_ik and a priori profile ca_ik (ppm) on its levels k (Connor et al. 2008, JGR 113, D05305;
OCO-2 L2 Lite user guide), a modelled profile c_ik is seen as

    xco2_i = xa_i + sum_k w_ik a_ik (c_ik - ca_ik),    xa_i = sum_k w_ik ca_ik.

A transport gives the profile as c = c_bg + J x, with J the profile Jacobian (rows sounding-major,
level-minor: row i * L + k, ppm per PgC/yr) and c_bg the background profile, so

    xco2 = offset + K J x,   offset_i = xa_i + sum_k w_ik a_ik (c_bg_ik - ca_ik),   K_i,(i,k) = w_ik a_ik.

:class:`XCO2Operator` is K J as a LinearOperator, J being any LinearOperator (a dense
:class:`~assim.transport.Jacobian` or a :class:`~assim.transport.chunked.ChunkedJacobian`).
The observations come from ``observations.read(path, kind="oco2")``, which keeps
``xco2_averaging_kernel``, ``pressure_weight`` and ``co2_profile_apriori`` over (obs, level).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.sparse.linalg import LinearOperator

KERNEL, WEIGHT, APRIORI = "xco2_averaging_kernel", "pressure_weight", "co2_profile_apriori"


def _profiles(obs: xr.Dataset) -> dict[str, np.ndarray]:
    """Kernel, weights and a priori (obs, level) of a satellite Observation Dataset; raise naming what is missing."""
    missing = [name for name in (KERNEL, WEIGHT, APRIORI) if name not in obs]
    if missing:
        raise ValueError(
            f"{obs.attrs.get('source_file', 'observations')}: XCO2 needs {missing} over (obs, level); "
            'read the soundings with observations.read(path, kind="oco2")'
        )
    out = {name: obs[name].transpose("obs", ...).values.astype(float) for name in (KERNEL, WEIGHT, APRIORI)}
    shapes = {name: value.shape for name, value in out.items()}
    if len(set(shapes.values())) != 1 or out[KERNEL].ndim != 2:
        raise ValueError(f"XCO2 kernel, weights and a priori need one (obs, level) shape, found {shapes}")
    return out


def column_weights(obs: xr.Dataset) -> np.ndarray:
    """w_ik a_ik (obs, level): the sensitivity of each sounding's XCO2 to its modelled profile."""
    p = _profiles(obs)
    return p[WEIGHT] * p[KERNEL]


def apriori_xco2(obs: xr.Dataset) -> np.ndarray:
    """xa_i = sum_k w_ik ca_ik (obs,), ppm: the retrieval's a priori column."""
    p = _profiles(obs)
    return (p[WEIGHT] * p[APRIORI]).sum(axis=1)


def xco2_from_profile(obs: xr.Dataset, profile: np.ndarray) -> np.ndarray:
    """XCO2 (obs,), ppm, a sounding would report for a modelled profile (obs, level) in ppm on its levels."""
    p = _profiles(obs)
    profile = np.asarray(profile, dtype=float)
    if profile.shape != p[KERNEL].shape:
        raise ValueError(
            f"profile has shape {profile.shape}; the soundings' levels are (obs, level) = {p[KERNEL].shape}"
        )
    return (p[WEIGHT] * p[APRIORI]).sum(axis=1) + (p[WEIGHT] * p[KERNEL] * (profile - p[APRIORI])).sum(axis=1)


class XCO2Operator(LinearOperator):
    """H = K J: XCO2 (ppm) per state element, from a profile Jacobian J (obs * level, n).

    Parameters
    ----------
    profile_jacobian : LinearOperator (obs * level, n)
        d(profile ppm) / d(state PgC/yr); row ``i * level + k`` is level k of sounding i.
    obs : Observation Dataset with kernel, weights and a priori over (obs, level)
        As from ``observations.read(path, kind="oco2")``.
    """

    def __init__(self, profile_jacobian: LinearOperator, obs: xr.Dataset) -> None:
        self.profile_jacobian = profile_jacobian
        self.weights = column_weights(obs)
        m, levels = self.weights.shape
        if profile_jacobian.shape[0] != m * levels:
            raise ValueError(
                f"profile Jacobian has {profile_jacobian.shape[0]} rows; {m} soundings x {levels} levels "
                f"= {m * levels} expected (rows sounding-major)"
            )
        super().__init__(dtype=np.float64, shape=(m, profile_jacobian.shape[1]))

    def offset(self, obs: xr.Dataset, background_profile: np.ndarray) -> np.ndarray:
        """offset_i = xa_i + sum_k w_ik a_ik (c_bg_ik - ca_ik) (obs,), ppm: XCO2 of the background alone."""
        return xco2_from_profile(obs, background_profile)

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        m, levels = self.weights.shape
        profile = np.asarray(self.profile_jacobian.matmat(np.reshape(X, (self.shape[1], -1))))
        return np.einsum("il,ilk->ik", self.weights, profile.reshape(m, levels, -1))

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.reshape(x, (-1, 1)))[:, 0]

    def _rmatmat(self, Y: np.ndarray) -> np.ndarray:
        Y = np.reshape(Y, (self.shape[0], -1))
        spread = (self.weights[:, :, None] * Y[:, None, :]).reshape(self.weights.size, -1)
        return np.asarray(self.profile_jacobian.rmatmat(spread))

    def _rmatvec(self, y: np.ndarray) -> np.ndarray:
        return self._rmatmat(np.reshape(y, (-1, 1)))[:, 0]
