"""Jacobians of transport operators: a dense LinearOperator, its on-disk cache, obs -> row mapping.

The surface Jacobian holds the response of the monthly-mean surface-box mole fraction
(ppm; rows ``month * 4 + band``, bands of :data:`assim.state.LATITUDE_BANDS`) to each state
element (a region-month flux in PgC/yr, spread over the bands by ``band_fraction``).
It is built by linearity from a model's band responses and cached as ``.npz`` (no pickle),
keyed by a sha256 of the transport, the region band fractions and the time axis.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse
import xarray as xr
from scipy.sparse.linalg import LinearOperator

from assim.state import LATITUDE_BANDS, StateVector

CACHE_ENV = "ASSIM_CACHE_DIR"
_CACHE_FORMAT = "assim.transport surface jacobian v1"


class Jacobian(LinearOperator):
    """H as a LinearOperator over a dense (m, n) matrix; m observations, n state elements.

    Parameters
    ----------
    matrix : array_like (m, n)
        d(observation) / d(state), e.g. ppm per PgC/yr. Held read-only.
    """

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.array(matrix, dtype=float)
        if self.matrix.ndim != 2:
            raise ValueError(f"Jacobian needs a 2-D matrix, got shape {self.matrix.shape}")
        self.matrix.setflags(write=False)
        super().__init__(dtype=self.matrix.dtype, shape=self.matrix.shape)

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self.matrix @ x

    def _rmatvec(self, y: np.ndarray) -> np.ndarray:
        return self.matrix.T @ y

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        return self.matrix @ X

    def _rmatmat(self, Y: np.ndarray) -> np.ndarray:
        return self.matrix.T @ Y

    def _adjoint(self) -> Jacobian:
        return Jacobian(self.matrix.T)

    def todense(self) -> np.ndarray:
        """The (m, n) matrix itself (read-only; copy it to modify)."""
        return self.matrix


class SurfaceResponseModel(Protocol):
    """What :func:`surface_jacobian` needs from a transport model."""

    def fingerprint(self) -> str:
        """Digest of everything that changes the model's response."""
        ...

    def band_response(self, time: np.ndarray) -> np.ndarray:
        """(time, band, source_time, source_band) ppm per PgC/yr."""
        ...


def cache_dir() -> Path:
    """``$ASSIM_CACHE_DIR`` if set, else ``~/.cache/assim``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "assim")


def cache_key(model: SurfaceResponseModel, state: StateVector) -> str:
    """sha256 hex digest of the model fingerprint, region band fractions and the time axis."""
    fractions = state.regions["band_fraction"].transpose("region", "band")
    digest = hashlib.sha256(_CACHE_FORMAT.encode())
    digest.update(model.fingerprint().encode())
    digest.update(repr(fractions["band"].values.tolist()).encode())
    digest.update(np.ascontiguousarray(fractions.values, dtype=float).tobytes())
    digest.update(np.ascontiguousarray(state.time.astype("datetime64[ns]").view(np.int64)).tobytes())
    return digest.hexdigest()


def surface_jacobian(model: SurfaceResponseModel, state: StateVector, cache: bool = True) -> np.ndarray:
    """Response of monthly-mean surface-box ppm to every state element, from the cache when valid.

    Returns
    -------
    ndarray (n_month * 4, state.size), ppm per PgC/yr
        Row ``t * 4 + b``: surface box of band ``b`` in month ``t``; columns in state order.
    """
    if not cache:
        return _build_surface_jacobian(model, state)
    key = cache_key(model, state)
    path = cache_dir() / f"surface_jacobian_{key}.npz"
    matrix = _load(path, key, (state.time.size * len(LATITUDE_BANDS), state.size))
    if matrix is None:
        matrix = _build_surface_jacobian(model, state)
        _save_atomic(path, key, matrix)
    return matrix


def _build_surface_jacobian(model: SurfaceResponseModel, state: StateVector) -> np.ndarray:
    fractions = state.regions["band_fraction"].transpose("region", "band")
    if fractions["band"].values.tolist() != list(LATITUDE_BANDS):
        raise ValueError(f"band_fraction bands must be {list(LATITUDE_BANDS)}, found {fractions['band'].values}")
    response = model.band_response(state.time)  # (t, b, s, c)
    n_time, n_band = response.shape[:2]
    matrix = np.einsum("tbsc,rc->tbsr", response, fractions.values, optimize=True)
    return matrix.reshape(n_time * n_band, state.size)


def _load(path: Path, key: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The cached matrix, or None when absent, unreadable, for another key or of another shape."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != key or stored["matrix"].shape != shape:
                return None
            return stored["matrix"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _save_atomic(path: Path, key: str, matrix: np.ndarray) -> None:
    """Write to a temporary file in the cache directory, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(key), matrix=matrix)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def band_index(latitude: np.ndarray) -> np.ndarray:
    """Index into :data:`LATITUDE_BANDS` for each latitude (degrees north; band = [lo, hi), 90 in the top band)."""
    latitude = np.asarray(latitude, dtype=float)
    index = np.full(latitude.shape, -1)
    for i, (lo, hi) in enumerate(LATITUDE_BANDS.values()):
        index[(latitude >= lo) & ((latitude < hi) | (hi == 90.0))] = i
    return index


def sampling_matrix(state: StateVector, obs: xr.Dataset) -> scipy.sparse.csr_matrix:
    """Weights (obs, month * 4 + band) of the monthly surface-box mole fractions each observation samples.

    A point observation samples the surface box of its latitude band; an observation of category
    ``"global"`` (NOAA's global marine-surface mean, which has no latitude) samples the mean of the
    four surface boxes, which span equal areas. In time, an observation samples its month, or,
    when it carries ``time_start``/``time_end`` coords (a monthly or annual mean), the average of
    the months in [time_start, time_end).

    Raises
    ------
    ValueError
        If an observation is not in ppm, or its time or window falls outside the state's months.
    """
    units = obs["value"].attrs.get("units")
    if units != "ppm":
        raise ValueError(f"surface-box transport needs observations in 'ppm', found value units {units!r}")
    first, last = _month_windows(state, obs)
    n_band = len(LATITUDE_BANDS)
    is_global = obs["category"].values.astype(str) == "global"
    band = band_index(obs["latitude"].values)
    bad = (band < 0) & ~is_global
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"obs {i} ({obs['site'].values[i]}): latitude {obs['latitude'].values[i]} is not in -90..90")
    rows, cols, weights = [], [], []
    for i in range(first.size):
        bands = range(n_band) if is_global[i] else (band[i],)
        months = range(first[i], last[i])
        for t in months:
            for b in bands:
                rows.append(i)
                cols.append(t * n_band + b)
                weights.append(1.0 / (len(bands) * len(months)))
    return scipy.sparse.csr_matrix((weights, (rows, cols)), shape=(first.size, state.time.size * n_band))


def _month_windows(state: StateVector, obs: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last state month each observation averages over."""
    end = (pd.Timestamp(state.time[-1]) + pd.offsets.MonthBegin(1)).to_datetime64()
    if "time_start" in obs.coords and "time_end" in obs.coords:
        start_t, end_t = (
            obs["time_start"].values.astype("datetime64[ns]"),
            obs["time_end"].values.astype("datetime64[ns]"),
        )
        first = np.searchsorted(state.time, start_t, side="right") - 1
        last = np.searchsorted(state.time, end_t, side="left")
        outside = (start_t < state.time[0]) | (end_t > end) | (last <= first)
    else:
        time = obs["time"].values.astype("datetime64[ns]")
        first = np.searchsorted(state.time, time, side="right") - 1
        last = first + 1
        outside = (first < 0) | (time >= end)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"obs {i} ({obs['site'].values[i]}, {np.datetime_as_string(obs['time'].values[i], unit='s')}) is outside "
            f"the state's months {np.datetime_as_string(state.time[0], unit='M')}.."
            f"{np.datetime_as_string(state.time[-1], unit='M')} ({int(outside.sum())} obs affected); "
            "drop those observations or extend the state's time axis"
        )
    return first, last
