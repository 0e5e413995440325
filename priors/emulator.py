"""LandFluxEmulator: a linear + boosted-stump emulator of DGVM land fluxes, driven by climate anomalies.

What it learns. For each TransCom-3 land region and month, the flux of the process models
(DGVMs) is the sum of three parts, each fitted on the residual of the one before:

* a **baseline** per region and calendar month, linear in atmospheric CO2 and in time (the
  seasonal cycle, the CO2-fertilised trend and the slow drift the CO2 term does not carry,
  e.g. land-use change in the S3-type teachers);
* a **linear anomaly**: ridge regression (scikit-learn :class:`~sklearn.linear_model.RidgeCV`,
  one penalty per region chosen by generalised cross-validation on the training months only)
  on the drivers: the ENSO index at 0-12 month lags, global, northern- and southern-hemisphere
  and tropical (24S-24N, annual means as a monthly step) temperature at a few lags, and CO2.
  This part extrapolates: it carries the emulator's temperature and ENSO sensitivities beyond
  the training range;
* a **nonlinear residual**: gradient-boosted decision stumps (:class:`~sklearn.ensemble.
  HistGradientBoostingRegressor`, ``max_depth=1``) on the same drivers plus the season (sin/cos
  of the month), with the number of stumps per region chosen on the out-of-bag years (early
  stopping).

The anomaly targets are smoothed with a centred running mean of ``smoothing_months`` (the
monthly weather noise that global indices cannot explain is not fitted).

An ensemble of ``n_members`` such models is trained, each on a bootstrap resample of years
and of DGVMs (its target is the mean of the DGVMs it drew). Boosted stumps are additive in
the features, so after fitting each member is compiled into one lookup table per feature
(bins x member x region); the linear parts of all members are one (feature, member x region)
matrix. Prediction is a matrix product, a ``searchsorted`` and a gather per feature, in
float32 and in chunks of months shared between threads.

Uncertainty. ``flux_sd`` combines (in quadrature) the between-DGVM spread (per region and
calendar month), the emulator's own error (RMS of out-of-bag residuals against the DGVM
mean, per region and calendar month) and the spread of the ensemble members at the queried
drivers; one factor, fitted on the out-of-bag years so that 68.3 % of the individual DGVM
values fall within 1 sd, calibrates it.

Sign and units: fluxes are PgC yr-1, **positive to the atmosphere** (negative = uptake).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import xarray as xr
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from priors.teachers import FLUX_SIGN, FLUX_UNITS

__all__ = [
    "CO2_DRIVER",
    "ENSO_DRIVER",
    "REQUIRED_DRIVERS",
    "TEMPERATURE_DRIVER",
    "TEMPERATURE_DRIVERS",
    "EmulatorError",
    "LandFluxEmulator",
    "StaleEmulatorError",
]

ENSO_DRIVER = "oni"
#: The global temperature driver (the linear baseline of :mod:`priors.skill` uses it alone).
TEMPERATURE_DRIVER = "gistemp_global"
#: Default temperature drivers: global, northern and southern hemisphere land-ocean anomalies (monthly) and
#: the tropical band 24S-24N (annual means as a monthly step, :func:`priors.drivers.read_gistemp_zonal_monthly`).
TEMPERATURE_DRIVERS = (TEMPERATURE_DRIVER, "gistemp_nh", "gistemp_sh", "gistemp_tropics")
CO2_DRIVER = "co2"
#: Driver variables the default emulator reads (names of :data:`priors.drivers.DRIVERS`).
REQUIRED_DRIVERS = (*TEMPERATURE_DRIVERS, ENSO_DRIVER, CO2_DRIVER)
SEASON_FEATURES = ("season_sin", "season_cos")
#: Origin (decimal year) of the baseline's time term.
TREND_ORIGIN_YEAR = 2000.0
#: Share of a normal distribution within 1 sd.
ONE_SIGMA = 0.6826894921370859
FORMAT = "priors.LandFluxEmulator/2"


class EmulatorError(ValueError):
    """Drivers or teacher fluxes that the emulator cannot use, or a file it cannot load."""


class StaleEmulatorError(EmulatorError):
    """A saved emulator written by another version of the file format (re-train it)."""


def _version() -> str:
    try:
        return importlib.metadata.version("assim")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def feature_names(
    enso_lags: tuple[int, ...],
    temperature_lags: tuple[int, ...],
    temperature_drivers: tuple[str, ...] = TEMPERATURE_DRIVERS,
) -> list[str]:
    """Column names of the driver features of :func:`design_matrix` (the stumps also see the season)."""
    return (
        [f"{ENSO_DRIVER}_lag{k}" for k in enso_lags]
        + [f"{name}_lag{k}" for name in temperature_drivers for k in temperature_lags]
        + [CO2_DRIVER]
    )


class Design(NamedTuple):
    """What the emulator needs of each queried month (see :func:`design_matrix`)."""

    features: np.ndarray  # (time, feature): lagged drivers and CO2
    season: np.ndarray  # (time, 2): sin, cos of the month
    trend: np.ndarray  # (time, 3): 1, CO2 (ppm), years since TREND_ORIGIN_YEAR
    month: np.ndarray  # (time,): 1..12
    year: np.ndarray  # (time,): calendar year


def design_matrix(
    drivers: xr.Dataset,
    time: np.ndarray,
    enso_lags: tuple[int, ...],
    temperature_lags: tuple[int, ...],
    temperature_drivers: tuple[str, ...] = TEMPERATURE_DRIVERS,
) -> Design:
    """Features of each month: lagged ENSO and temperature anomalies, CO2, season and trend terms.

    Parameters
    ----------
    drivers : Dataset (time)
        Monthly ``oni`` (K), the ``temperature_drivers`` (K) and ``co2`` (ppm) on a gap-free
        month axis starting at least ``max(lags)`` months before ``time[0]``.
    time : ndarray of datetime64
        Month starts to build features for.
    enso_lags, temperature_lags : tuple of int
        Lags in months.
    temperature_drivers : tuple of str
        Temperature variables of ``drivers``.

    Returns
    -------
    Design
        ``features`` (time, feature) as :func:`feature_names`; ``season`` (time, 2); ``trend``
        (time, 3) = 1, CO2 (ppm), years since 2000; ``month`` and ``year`` (time,).
    """
    required = (*temperature_drivers, ENSO_DRIVER, CO2_DRIVER)
    missing = [name for name in required if name not in drivers]
    if missing:
        raise EmulatorError(f"drivers lack {missing} (have {sorted(drivers.data_vars)}); use priors.load_drivers")
    axis = pd.DatetimeIndex(drivers["time"].values)
    wanted = pd.DatetimeIndex(time)
    pos = axis.get_indexer(wanted)
    max_lag = max((*enso_lags, *temperature_lags))
    if (pos < 0).any() or pos.min() < max_lag:
        raise EmulatorError(
            f"drivers cover {axis[0]:%Y-%m}..{axis[-1]:%Y-%m}; months {wanted[0]:%Y-%m}..{wanted[-1]:%Y-%m} need "
            f"them from {wanted[0] - pd.DateOffset(months=max_lag):%Y-%m} (driver lags up to {max_lag} months)"
        )
    if len(axis) > 1 and not (np.diff(axis.values).astype("timedelta64[D]").astype(int) <= 31).all():
        raise EmulatorError("drivers must be on a gap-free monthly axis (priors.load_drivers gives one)")
    co2 = drivers[CO2_DRIVER].values[pos].astype(float)
    columns = [drivers[ENSO_DRIVER].values[pos - k] for k in enso_lags]
    columns += [drivers[name].values[pos - k] for name in temperature_drivers for k in temperature_lags]
    features = np.column_stack([*columns, co2]).astype(float)
    if not np.isfinite(features).all():
        raise EmulatorError("drivers contain NaN in the months asked for; check the driver files' coverage")
    month = wanted.month.to_numpy()
    phase = 2 * np.pi * (month - 0.5) / 12
    years = wanted.year.to_numpy() + (month - 0.5) / 12 - TREND_ORIGIN_YEAR
    return Design(
        features,
        np.column_stack([np.sin(phase), np.cos(phase)]),
        np.column_stack([np.ones(month.size), co2, years]),
        month,
        wanted.year.to_numpy(),
    )


def _baseline_coefficients(trend: np.ndarray, month: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least squares ``target = trend @ c`` per calendar month and region -> (12, region, 3)."""
    coef = np.empty((12, target.shape[1], trend.shape[1]))
    for m in range(12):
        rows = month == m + 1
        coef[m] = np.linalg.lstsq(trend[rows], target[rows], rcond=None)[0].T
    return coef


def _smooth(anomaly: np.ndarray, months: int) -> np.ndarray:
    """Centred running mean over ``months`` along axis 0 (1 = unchanged)."""
    if months <= 1:
        return anomaly
    return pd.DataFrame(anomaly).rolling(months, center=True, min_periods=1).mean().to_numpy()


def annual_mean_sd(sd: np.ndarray, time_correlation_months: float) -> np.ndarray:
    """Sd of the annual mean of monthly errors with sd ``sd`` and correlation ``exp(-|lag| / length)``.

    Parameters
    ----------
    sd : ndarray (year, 12, ...)
        Monthly 1-sigma, any units.
    time_correlation_months : float
        e-folding length of the exponential correlation in months (as
        ``assim.covariance.ExponentialCorrelation``).

    Returns
    -------
    ndarray (year, ...)
        Same units as ``sd``.
    """
    lag = np.abs(np.subtract.outer(np.arange(12), np.arange(12)))
    correlation = np.exp(-lag / time_correlation_months)
    return np.sqrt(np.einsum("yi...,ij,yj...->y...", sd, correlation, sd)) / 12


def interannual_error(residual: np.ndarray, member_var: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The part of held-out residuals an inversion of annual-scale signals needs: sd and time correlation.

    Held-out residuals of the DGVMs against the emulator are dominated by each DGVM's own
    seasonal cycle (a periodic error with zero annual mean that repeats every year: lag-12
    autocorrelation ~0.9, lag-6 ~-0.5 on TRENDY-v9). No exponential time correlation describes
    it, and with the full monthly sd an exponential B overstates annual-mean errors several
    times. So the residual is split into that persistent seasonal shape (each model's mean
    residual per calendar month minus its annual mean) and the rest, the *interannual* error;
    its monthly RMS (plus the ensemble variance), its lag-1 autocorrelation within years (->
    e-folding length) and one factor calibrating its annual means give the interannual sd.

    Parameters
    ----------
    residual : ndarray (model, year, 12, region)
        Held-out residuals (teacher minus prediction), PgC/yr; NaN where a model has no value.
    member_var : ndarray (year, 12, region)
        Variance of the ensemble members at those months, (PgC/yr)^2.

    Returns
    -------
    rms : ndarray (12, region)
        RMS of the interannual residual per calendar month, PgC/yr (before calibration).
    scale : float
        Factor on ``sqrt(rms^2 + member_var)`` so that 68.3 % of the annual means of the
        residuals fall within the annual sd (:func:`annual_mean_sd`) it implies.
    time_correlation_months : float
        e-folding length (months) of the exponential correlation, from the pooled lag-1
        autocorrelation r of the interannual residual: ``-1 / ln r`` (r clipped to 0.01..0.99).
    """
    seasonal = np.nanmean(residual, axis=1, keepdims=True)
    interannual = residual - (seasonal - seasonal.mean(axis=2, keepdims=True))
    rms = np.sqrt(np.nanmean(interannual**2, axis=(0, 1)))
    centred = interannual - np.nanmean(interannual, axis=(1, 2), keepdims=True)
    lag1 = np.nansum(centred[:, :, 1:] * centred[:, :, :-1]) / np.nansum(centred[:, :, :-1] ** 2)
    length = float(-1 / np.log(np.clip(lag1, 0.01, 0.99)))
    annual_sd = annual_mean_sd(np.sqrt(rms[None] ** 2 + member_var), length)
    scale = float(np.nanquantile(np.abs(interannual.mean(axis=2)) / annual_sd[None], ONE_SIGMA))
    return rms, scale, length


def _stump_tables(
    models: list[list[HistGradientBoostingRegressor]], n_features: int, n_stumps: np.ndarray | None = None
) -> tuple[list, list, np.ndarray]:
    """Compile boosted stumps (member x region) into per-feature step tables.

    ``n_stumps`` (region,) keeps only the first ``n_stumps[r]`` boosting iterations of region
    ``r`` (early stopping); default all.

    Returns thresholds[f] (sorted, n_f), tables[f] (n_f + 1, member, region) and the
    intercept (member, region). A stump sends ``x <= threshold`` to its left leaf, so with
    ``i = searchsorted(thresholds, x, side="left")`` it contributes its left value iff
    ``i <= k`` (its threshold's index ``k``).
    """
    n_members, n_regions = len(models), len(models[0])
    stumps: list[list[tuple[int, int, float, float, float]]] = [[] for _ in range(n_features)]
    intercept = np.zeros((n_members, n_regions))
    for i, member in enumerate(models):
        for r, model in enumerate(member):
            intercept[i, r] += float(np.ravel(model._baseline_prediction)[0])
            kept = model._predictors if n_stumps is None else model._predictors[: n_stumps[r]]
            for (predictor,) in kept:
                nodes = predictor.nodes
                root = nodes[0]
                if root["is_leaf"]:
                    intercept[i, r] += root["value"]
                    continue
                if nodes["depth"].max() > 1:
                    raise EmulatorError("only depth-1 trees (stumps) compile into lookup tables")
                left, right = nodes[root["left"]]["value"], nodes[root["right"]]["value"]
                stumps[root["feature_idx"]].append((i, r, float(root["num_threshold"]), left, right))
    thresholds, tables = [], []
    for feature in range(n_features):
        thr = np.unique([s[2] for s in stumps[feature]])
        table = np.zeros((thr.size + 1, n_members, n_regions))
        for i, r, t, left, right in stumps[feature]:
            k = np.searchsorted(thr, t)
            table[: k + 1, i, r] += left
            table[k + 1 :, i, r] += right
        thresholds.append(thr)
        tables.append(table)
    return thresholds, tables, intercept


def _member_moments(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance over the member axis of (month, member, region): a loop over the few
    members is 3x faster than numpy's strided reduction over that short axis."""
    n_members = block.shape[1]
    mean = block[:, 0].copy()
    for m in range(1, n_members):
        mean += block[:, m]
    mean /= n_members
    var = np.zeros_like(mean)
    for m in range(n_members):
        deviation = block[:, m] - mean
        var += deviation * deviation
    return mean, var / n_members


class LandFluxEmulator(RegressorMixin, BaseEstimator):
    """Bagged linear + boosted-stump emulator of monthly DGVM land flux per region.

    Parameters
    ----------
    n_members : int
        Ensemble size (bootstrap resamples of years and DGVMs).
    max_iter : int
        Boosting iterations (stumps) per member and region, before early stopping.
    learning_rate : float
        Shrinkage of each stump.
    min_samples_leaf : int
        Minimum months in a stump's leaf.
    smoothing_months : int
        Width of the centred running mean applied to each member's target anomaly (1 = none).
    enso_lags, temperature_lags : tuple of int
        Lags (months) of the ENSO index and of the temperature drivers used as features.
    temperature_drivers : tuple of str
        Temperature variables (names of :data:`priors.drivers.DRIVERS`); the default needs the
        GISTEMP hemispheric files (to 2025-02) and the zonal annual file (tropics, to 2025-12);
        ``("gistemp_global",)`` reaches the present.
    ridge_alphas : tuple of float
        Candidate penalties of the linear part (on standardised features); one per region is
        chosen by generalised cross-validation on the training months.
    n_jobs : int
        Threads used by prediction (-1 = every core).
    random_state : int, RandomState or None
        Seed of the bootstrap and of the boosting.

    Attributes
    ----------
    regions_ : ndarray of str
    feature_names_in_ : ndarray of str
        Driver features of the linear part; the stumps also see ``season_sin``, ``season_cos``.
    teacher_models_ : ndarray of str
        DGVMs it learnt from.
    training_years_ : ndarray of int
    baseline_coef_ : ndarray (member, 12, region, 3)
        Per calendar month: intercept (PgC/yr), CO2 slope (PgC/yr per ppm) and time slope
        (PgC/yr per year since 2000) of the baseline.
    linear_coef_ : ndarray (feature, member, region)
        Linear response to each driver feature, PgC/yr per unit of the feature.
    ridge_alpha_ : ndarray (member, region)
        Penalty chosen for each member and region.
    thresholds_, tables_, intercept_
        Compiled stumps (see :func:`_stump_tables`); ``intercept_`` (member, region) also holds
        the linear part's intercept.
    dgvm_spread_, model_error_ : ndarray (12, region), PgC/yr
        Between-DGVM sd and out-of-bag RMS error, per calendar month.
    n_stumps_ : ndarray (region,) of int
        Boosting iterations kept per region: the number minimising the out-of-bag error summed
        over members (early stopping on the years each member did not draw).
    sd_scale_ : float
        Calibration factor of ``flux_sd`` (fitted on out-of-bag years).
    interannual_rms_ : ndarray (12, region), PgC/yr
    interannual_scale_ : float
    time_correlation_months_ : float
        The interannual error model fitted on the out-of-bag years (:func:`interannual_error`):
        ``flux_sd_interannual = interannual_scale_ * sqrt(interannual_rms_^2 + member variance)``
        with an exponential time correlation of e-folding ``time_correlation_months_``.
    """

    def __init__(
        self,
        n_members: int = 8,
        max_iter: int = 200,
        learning_rate: float = 0.05,
        min_samples_leaf: int = 20,
        smoothing_months: int = 6,
        enso_lags: tuple[int, ...] = tuple(range(13)),
        temperature_lags: tuple[int, ...] = (0, 3, 6),
        temperature_drivers: tuple[str, ...] = TEMPERATURE_DRIVERS,
        ridge_alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0),
        n_jobs: int = -1,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_members = n_members
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.min_samples_leaf = min_samples_leaf
        self.smoothing_months = smoothing_months
        self.enso_lags = enso_lags
        self.temperature_lags = temperature_lags
        self.temperature_drivers = temperature_drivers
        self.ridge_alphas = ridge_alphas
        self.n_jobs = n_jobs
        self.random_state = random_state

    def driver_names(self) -> tuple[str, ...]:
        """Driver variables :meth:`fit` and :meth:`predict` read (names for :func:`priors.load_drivers`)."""
        return (*self.temperature_drivers, ENSO_DRIVER, CO2_DRIVER)

    def max_lag(self) -> int:
        """Months of driver history needed before the first predicted month."""
        return max((*self.enso_lags, *self.temperature_lags))

    # ------------------------------------------------------------------ fit
    def fit(self, drivers: xr.Dataset, flux: xr.DataArray) -> LandFluxEmulator:
        """Learn the flux of each region and month from the drivers.

        Parameters
        ----------
        drivers : Dataset (time)
            :meth:`driver_names` (K, ppm), covering the training months and :meth:`max_lag`
            months before them (:func:`priors.load_drivers`).
        flux : DataArray (model, time, region), PgC yr-1, positive to the atmosphere
            Teacher fluxes (:func:`priors.read_trendy_monthly`); NaN where a model has no data.

        Returns
        -------
        self
        """
        flux = self._check_teachers(flux)
        time = flux["time"].values
        design = self._design(drivers, time)
        X, month = design.features, design.month
        X_trees = np.column_stack([X, design.season])
        mean, scale = X.mean(axis=0), X.std(axis=0)
        scale[scale == 0] = 1.0
        Z = (X - mean) / scale
        Y = flux.transpose("model", "time", "region").values
        years = pd.DatetimeIndex(time).year.to_numpy()
        rng = check_random_state(self.random_state)
        unique_years = np.unique(years)
        n_models, n_time, n_regions = Y.shape

        baseline_coefs, linear_coefs, linear_intercepts, alphas, members, oob = [], [], [], [], [], []
        oob_sse = np.zeros((n_regions, self.max_iter + 1))
        for _ in range(self.n_members):
            drawn = rng.randint(n_models, size=n_models)
            target = np.nanmean(Y[drawn], axis=0)
            chosen = rng.choice(unique_years, size=unique_years.size, replace=True)
            rows = np.concatenate([np.flatnonzero(years == y) for y in chosen])
            coef = _baseline_coefficients(design.trend[rows], month[rows], target[rows])
            anomaly = _smooth(target - np.einsum("tk,trk->tr", design.trend, coef[month - 1]), self.smoothing_months)
            counts = np.bincount(rows, minlength=n_time)
            drew = counts > 0
            ridge = RidgeCV(alphas=self.ridge_alphas, alpha_per_target=True)
            ridge.fit(Z[drew], anomaly[drew], sample_weight=counts[drew])
            weights = ridge.coef_.T / scale[:, None]  # feature, region
            intercept = ridge.intercept_ - mean @ weights
            residual = anomaly - (X @ weights + intercept)
            seed = rng.randint(np.iinfo(np.int32).max)
            boosters = [self._booster(seed).fit(X_trees[rows], residual[rows, r]) for r in range(n_regions)]
            out_of_bag = ~np.isin(years, chosen)
            if out_of_bag.any():
                oob_sse += self._staged_oob_errors(boosters, X_trees[out_of_bag], residual[out_of_bag])
            baseline_coefs.append(coef)
            linear_coefs.append(weights)
            linear_intercepts.append(intercept)
            alphas.append(np.broadcast_to(ridge.alpha_, (n_regions,)))
            members.append(boosters)
            oob.append(out_of_bag)

        self.baseline_coef_ = np.stack(baseline_coefs)
        self.linear_coef_ = np.stack(linear_coefs, axis=1)
        self.ridge_alpha_ = np.stack(alphas)
        self.n_stumps_ = oob_sse.argmin(axis=1)
        self.thresholds_, self.tables_, stump_intercept = _stump_tables(members, X_trees.shape[1], self.n_stumps_)
        self.intercept_ = stump_intercept + np.stack(linear_intercepts)
        self.feature_names_in_ = np.asarray(
            feature_names(tuple(self.enso_lags), tuple(self.temperature_lags), tuple(self.temperature_drivers))
        )
        self.regions_ = flux["region"].values.astype(str)
        self.teacher_models_ = flux["model"].values.astype(str)
        self.training_years_ = unique_years
        self._compile()
        self._fit_uncertainty(design, Y, np.stack(oob, axis=1))
        return self

    def _booster(self, seed: int) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            max_depth=1,
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            min_samples_leaf=self.min_samples_leaf,
            early_stopping=False,
            random_state=seed,
        )

    @staticmethod
    def _staged_oob_errors(
        boosters: list[HistGradientBoostingRegressor], X: np.ndarray, residual: np.ndarray
    ) -> np.ndarray:
        """(region, iteration) squared error on out-of-bag months after 0, 1, ... boosting iterations."""
        errors = np.zeros((len(boosters), boosters[0].max_iter + 1))
        for r, booster in enumerate(boosters):
            errors[r, 0] = np.sum((residual[:, r] - np.ravel(booster._baseline_prediction)[0]) ** 2)
            i = 0
            for i, staged in enumerate(booster.staged_predict(X), start=1):
                errors[r, i] = np.sum((residual[:, r] - staged) ** 2)
            errors[r, i + 1 :] = errors[r, i]  # boosting stopped early: later iterations change nothing
        return errors

    @staticmethod
    def _check_teachers(flux: xr.DataArray) -> xr.DataArray:
        if "model" not in flux.dims:
            flux = flux.expand_dims(model=["teacher"])
        if set(flux.dims) != {"model", "time", "region"}:
            raise EmulatorError(f"teacher flux must have dims (model, time, region), got {flux.dims}")
        units = flux.attrs.get("units")
        if units != FLUX_UNITS:
            raise EmulatorError(f"teacher flux units must be {FLUX_UNITS!r}, got {units!r}; see priors.teachers")
        if np.isnan(flux.values).all(axis=0).any():
            raise EmulatorError("some (time, region) have no teacher value in any model; trim the period")
        return flux

    def _design(self, drivers: xr.Dataset, time: np.ndarray) -> Design:
        return design_matrix(
            drivers, time, tuple(self.enso_lags), tuple(self.temperature_lags), tuple(self.temperature_drivers)
        )

    def _fit_uncertainty(self, design: Design, Y: np.ndarray, oob: np.ndarray) -> None:
        """DGVM spread, out-of-bag error and the calibration factor of flux_sd."""
        month = design.month
        dgvm_mean = np.nanmean(Y, axis=0)
        by_month = pd.Series(np.arange(month.size)).groupby(month).indices
        spread = np.nanvar(Y, axis=0, ddof=1 if Y.shape[0] > 1 else 0)
        self.dgvm_spread_ = np.sqrt(np.stack([spread[by_month[m]].mean(axis=0) for m in range(1, 13)]))
        draws = self._draws(design)  # time, member, region
        n_oob = oob.sum(axis=1)
        usable = n_oob > 0
        mu_oob = np.einsum("tm,tmr->tr", oob[usable], draws[usable]) / n_oob[usable, None]
        residual = dgvm_mean[usable] - mu_oob
        m_usable = month[usable]
        self.model_error_ = np.sqrt(np.stack([np.mean(residual[m_usable == m] ** 2, axis=0) for m in range(1, 13)]))
        self.sd_scale_ = 1.0
        sd = self._raw_sd(draws[usable].var(axis=1), m_usable)
        held_out = Y[:, usable] - mu_oob[None]
        self.sd_scale_ = float(np.nanquantile(np.abs(held_out) / sd[None], ONE_SIGMA))
        whole = np.flatnonzero(pd.Series(m_usable).groupby(design.year[usable]).transform("size").to_numpy() == 12)
        shape = (whole.size // 12, 12, Y.shape[2])
        self.interannual_rms_, self.interannual_scale_, self.time_correlation_months_ = interannual_error(
            held_out[:, whole].reshape(Y.shape[0], *shape), draws[usable][whole].var(axis=1).reshape(shape)
        )

    # -------------------------------------------------------------- predict
    def _member_block(self, design: Design, rows: slice) -> np.ndarray:
        """(month, member x region) float32 member predictions of ``rows`` from the compiled model."""
        X = design.features[rows]
        n_features = X.shape[1]
        inputs = np.zeros((X.shape[0], n_features + 12 * 3), dtype=np.float32)
        inputs[:, :n_features] = X
        trend_by_month = inputs[:, n_features:].reshape(-1, 12, 3)  # the baseline as one matrix product
        trend_by_month[np.arange(X.shape[0]), design.month[rows] - 1] = design.trend[rows]
        out = inputs @ self._compiled["linear"] + self._compiled["intercept"]
        gathered = np.empty_like(out)
        for f, table in self._compiled["tables"]:
            column = X[:, f] if f < n_features else design.season[rows, f - n_features]
            np.take(table, np.searchsorted(self.thresholds_[f], column, side="left"), axis=0, out=gathered)
            out += gathered
        return out

    def _compile(self) -> None:
        """float32 (member x region)-major copies of the fitted arrays for :meth:`_member_block`."""
        n_members, n_regions = self.intercept_.shape
        flat = n_members * n_regions
        self._compiled = {
            "linear": np.concatenate(  # (feature + 12 months x 3 trend terms, member x region)
                [self.linear_coef_.reshape(-1, flat), self.baseline_coef_.transpose(1, 3, 0, 2).reshape(-1, flat)]
            ).astype(np.float32),
            "intercept": self.intercept_.reshape(flat).astype(np.float32),
            "tables": [
                (f, table.reshape(table.shape[0], flat).astype(np.float32))
                for f, table in enumerate(self.tables_)
                if self.thresholds_[f].size
            ],
        }

    def _run_chunks(self, design: Design, consume: Callable[[slice, np.ndarray], None], chunk: int = 2048) -> None:
        """Compute the members of every month in chunks (threads when ``n_jobs`` allows) and hand them on.

        ``consume(rows, draws)`` gets each chunk's (month, member, region) float32 draws; chunks
        keep the gathered table rows in cache, and numpy releases the GIL in the gathers and
        sums, so threads share the work (BLAS is held to one thread: 3x faster on these small products).
        """
        n_members, n_regions = self.intercept_.shape
        n = design.month.size
        slices = [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]

        def work(rows: slice) -> None:
            consume(rows, self._member_block(design, rows).reshape(-1, n_members, n_regions))

        n_jobs = (os.cpu_count() or 1) if self.n_jobs in (-1, None) else self.n_jobs
        with threadpool_limits(limits=1, user_api="blas"):  # small products: BLAS threads only add overhead
            if n_jobs == 1 or len(slices) == 1:
                for rows in slices:
                    work(rows)
                return
            with ThreadPoolExecutor(min(n_jobs, len(slices))) as pool:
                list(pool.map(work, slices))

    def _draws(self, design: Design) -> np.ndarray:
        """(time, member, region) member predictions, float64."""
        n_members, n_regions = self.intercept_.shape
        draws = np.empty((design.month.size, n_members, n_regions))

        def keep(rows: slice, block: np.ndarray) -> None:
            draws[rows] = block

        self._run_chunks(design, keep)
        return draws

    def _raw_sd(self, member_var: np.ndarray, month: np.ndarray) -> np.ndarray:
        var = self.dgvm_spread_[month - 1] ** 2 + self.model_error_[month - 1] ** 2 + member_var
        return self.sd_scale_ * np.sqrt(var)

    def _query(self, drivers: xr.Dataset, time: np.ndarray | None) -> tuple[np.ndarray, Design]:
        check_is_fitted(self)
        if time is None:
            time = drivers["time"].values[self.max_lag() :]
        time = np.asarray(time, dtype="datetime64[ns]")
        return time, self._design(drivers, time)

    def predict_ensemble(self, drivers: xr.Dataset, time: np.ndarray | None = None) -> xr.DataArray:
        """Each member's flux.

        Parameters
        ----------
        drivers : Dataset (time)
            As for :meth:`fit`.
        time : array of datetime64, optional
            Month starts to predict; default every driver month with the full lag history.

        Returns
        -------
        DataArray (member, time, region), PgC yr-1, positive to the atmosphere
        """
        time, design = self._query(drivers, time)
        draws = self._draws(design)
        return xr.DataArray(
            np.moveaxis(draws, 1, 0),
            dims=("member", "time", "region"),
            coords={"member": np.arange(draws.shape[1]), "time": time, "region": self.regions_},
            name="flux",
            attrs=self._flux_attrs("land flux of one emulator ensemble member"),
        )

    def predict(self, drivers: xr.Dataset, return_std: bool = True, time: np.ndarray | None = None) -> xr.Dataset:
        """Prior land flux: ensemble mean and (if ``return_std``) its calibrated 1-sigma.

        Parameters
        ----------
        drivers : Dataset (time)
            As for :meth:`fit`.
        return_std : bool
            Include ``flux_sd``.
        time : array of datetime64, optional
            As for :meth:`predict_ensemble`.

        Returns
        -------
        Dataset (time, region)
            ``flux`` and ``flux_sd``, PgC yr-1, positive to the atmosphere; provenance attrs.
        """
        time, design = self._query(drivers, time)
        shape = (time.size, self.regions_.size)
        mean, member_var = np.empty(shape), np.empty(shape)

        def reduce(rows: slice, block: np.ndarray) -> None:
            mean[rows], member_var[rows] = _member_moments(block)

        self._run_chunks(design, reduce)
        coords = {"time": time, "region": self.regions_}
        data = {"flux": (("time", "region"), mean, self._flux_attrs("prior land flux (emulator mean)"))}
        if return_std:
            sd_attrs = self._flux_attrs("prior land flux 1-sigma (DGVM spread, emulator error, calibrated)")
            sd_attrs["comment"] = (
                "monthly 1-sigma including each DGVM's persistent seasonal-cycle error; annual means have much "
                "smaller errors, see flux_sd_interannual"
            )
            data["flux_sd"] = (("time", "region"), self._raw_sd(member_var, design.month), sd_attrs)
            interannual = self.interannual_scale_ * np.sqrt(self.interannual_rms_[design.month - 1] ** 2 + member_var)
            interannual_attrs = self._flux_attrs("prior land flux 1-sigma without the seasonal-cycle error")
            interannual_attrs["time_correlation_months"] = self.time_correlation_months_
            interannual_attrs["comment"] = (
                "for an inversion of annual-scale signals: with errors correlated as exp(-|lag| / "
                "time_correlation_months) it covers 68 % of held-out annual means (priors.emulator.interannual_error)"
            )
            data["flux_sd_interannual"] = (("time", "region"), interannual, interannual_attrs)
        return xr.Dataset(data, coords=coords, attrs=self.provenance())

    def _flux_attrs(self, long_name: str) -> dict:
        return {"units": FLUX_UNITS, "sign": FLUX_SIGN, "long_name": long_name}

    def provenance(self) -> dict[str, str]:
        """Attributes naming what the prior was learnt from (written into every prediction)."""
        check_is_fitted(self)
        return {
            "prior_source": "priors.LandFluxEmulator (CO2/time baseline + ridge + bagged boosted stumps on drivers)",
            "training_years": f"{self.training_years_[0]}-{self.training_years_[-1]}",
            "teacher_models": " ".join(self.teacher_models_),
            "drivers": " ".join(self.driver_names()),
            "software_version": f"assim {_version()}",
            "Conventions": "CF-1.8",
        }

    # ------------------------------------------------------------ save/load
    _ARRAYS = (
        "baseline_coef",
        "linear_coef",
        "ridge_alpha",
        "intercept",
        "dgvm_spread",
        "model_error",
        "n_stumps",
        "interannual_rms",
    )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted emulator to an ``.npz`` file (arrays + JSON metadata; no pickle), atomically.

        Missing parent folders are created (a cache folder such as ``$ASSIM_CACHE_DIR`` may not exist yet).
        """
        check_is_fitted(self)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "software_version": _version(),
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.get_params().items()},
            "feature_names": self.feature_names_in_.tolist(),
            "regions": self.regions_.tolist(),
            "teacher_models": self.teacher_models_.tolist(),
            "training_years": self.training_years_.tolist(),
            "sd_scale": self.sd_scale_,
            "time_correlation_months": self.time_correlation_months_,
            "interannual_scale": self.interannual_scale_,
        }
        meta["params"]["random_state"] = None if not isinstance(self.random_state, int) else self.random_state
        arrays = {name: getattr(self, f"{name}_") for name in self._ARRAYS}
        for f, (thr, table) in enumerate(zip(self.thresholds_, self.tables_, strict=True)):
            arrays[f"thresholds_{f}"], arrays[f"table_{f}"] = thr, table
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".npz")
        os.close(fd)
        try:
            np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LandFluxEmulator:
        """Read an emulator written by :meth:`save`; raise :class:`EmulatorError` if it is not one."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                files = dict(npz.items())
        except (OSError, ValueError) as err:
            raise EmulatorError(f"{path}: not a readable .npz emulator file ({err})") from err
        meta = json.loads(str(files.pop("meta"))) if "meta" in files else {}
        if meta.get("format") != FORMAT:
            raise StaleEmulatorError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}; re-train and save")
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items()}
        emulator = cls(**params)
        n_tables = len(meta["feature_names"]) + len(SEASON_FEATURES)
        emulator.thresholds_ = [files[f"thresholds_{f}"] for f in range(n_tables)]
        emulator.tables_ = [files[f"table_{f}"] for f in range(n_tables)]
        for name in cls._ARRAYS:
            setattr(emulator, f"{name}_", files[name])
        emulator.feature_names_in_ = np.asarray(meta["feature_names"])
        emulator.regions_ = np.asarray(meta["regions"])
        emulator.teacher_models_ = np.asarray(meta["teacher_models"])
        emulator.training_years_ = np.asarray(meta["training_years"])
        emulator.sd_scale_ = float(meta["sd_scale"])
        emulator.time_correlation_months_ = float(meta["time_correlation_months"])
        emulator.interannual_scale_ = float(meta["interannual_scale"])
        emulator._compile()
        return emulator
