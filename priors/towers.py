"""Flux towers as a second teacher: monthly NEE at FLUXNET2015 sites from site meteorology.

:class:`TowerNEEEmulator` learns monthly NEE (gC m-2 d-1, positive to the atmosphere) from air
temperature, vapour pressure deficit, precipitation, incoming shortwave radiation, shallow
soil water, the season and the site's vegetation class (IGBP), with scikit-learn's
:class:`~sklearn.ensemble.HistGradientBoostingRegressor` (which handles the sites without soil
water natively). :func:`heldout_site_skill` scores it on sites it never saw (grouped K-fold by
site); :func:`heat_drought_response` reports, per vegetation group, how NEE changes under a
+2 K / +50 % VPD heatwave and under a drought (half the precipitation and soil water), the
check of the seed finding that semi-arid ecosystems lose more uptake than rainforests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import GroupKFold
from sklearn.utils.validation import check_is_fitted

from priors.drivers import FLUXNET_MET, read_fluxnet_monthly
from priors.teachers import fluxnet_sites, read_fluxnet_nee

__all__ = ["VEGETATION_GROUPS", "TowerNEEEmulator", "heat_drought_response", "heldout_site_skill", "tower_table"]

MET = [name for name, _, _ in FLUXNET_MET.values()]
#: Vegetation groups compared by :func:`heat_drought_response` (IGBP classes).
VEGETATION_GROUPS = {
    "savanna and grassland": ("SAV", "WSA", "GRA"),
    "evergreen broadleaf forest": ("EBF",),
}


def tower_table(data_dir: Path | None = None, min_months: int = 12) -> pd.DataFrame:
    """All site-months with valid NEE: site meteorology, vegetation class and NEE.

    Returns
    -------
    DataFrame
        Columns ``site``, ``igbp``, ``time``, ``month``, the met variables of
        :data:`priors.drivers.FLUXNET_MET` (``ta`` degC, ``vpd`` hPa, ``precip`` mm d-1,
        ``sw_in`` W m-2, ``swc`` %) and ``nee`` (gC m-2 d-1, positive to the atmosphere).
        Sites with fewer than ``min_months`` valid months are left out.
    """
    frames = []
    for site, row in fluxnet_sites(data_dir).iterrows():
        met = read_fluxnet_monthly(row["path"]).to_dataframe()
        met["nee"] = read_fluxnet_nee(row["path"]).to_series()
        met = met.dropna(subset=["nee", "ta", "vpd", "sw_in"])
        if len(met) >= min_months:
            frames.append(met.assign(site=site, igbp=row["igbp"]).reset_index())
    table = pd.concat(frames, ignore_index=True)
    table["month"] = pd.DatetimeIndex(table["time"]).month
    return table


class TowerNEEEmulator(RegressorMixin, BaseEstimator):
    """Gradient-boosted monthly NEE from site meteorology, season and vegetation class.

    Parameters
    ----------
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf
        Passed to :class:`~sklearn.ensemble.HistGradientBoostingRegressor`.
    random_state : int or None
    """

    def __init__(
        self,
        max_iter: int = 300,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 20,
        random_state: int | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    def _features(self, table: pd.DataFrame) -> pd.DataFrame:
        missing = sorted({*MET, "month", "igbp"} - set(table.columns))
        if missing:
            raise ValueError(f"tower table lacks columns {missing}; build it with priors.towers.tower_table")
        phase = 2 * np.pi * (table["month"].to_numpy() - 0.5) / 12
        return table[MET].assign(
            season_sin=np.sin(phase),
            season_cos=np.cos(phase),
            igbp=pd.Categorical(table["igbp"], categories=getattr(self, "igbp_classes_", None)),
        )

    def fit(self, table: pd.DataFrame) -> TowerNEEEmulator:
        """Fit on site-months (:func:`tower_table`); ``nee`` is the target."""
        self.igbp_classes_ = np.asarray(sorted(table["igbp"].unique()))
        self.model_ = HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            categorical_features="from_dtype",
            random_state=self.random_state,
        ).fit(self._features(table), table["nee"].to_numpy())
        return self

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """Monthly NEE (gC m-2 d-1, positive to the atmosphere) for each row of ``table``."""
        check_is_fitted(self)
        return self.model_.predict(self._features(table))


def heldout_site_skill(emulator: TowerNEEEmulator, table: pd.DataFrame, n_splits: int = 5) -> pd.DataFrame:
    """Grouped K-fold by site: NEE of every site-month predicted by a model that never saw the site.

    Returns
    -------
    DataFrame indexed by vegetation group (plus ``"all"``)
        ``r2`` and ``rmse`` (gC m-2 d-1) of the held-out predictions, ``sites``, ``months``.
    """
    predicted = np.empty(len(table))
    for train, test in GroupKFold(n_splits=n_splits).split(table, groups=table["site"]):
        predicted[test] = clone(emulator).fit(table.iloc[train]).predict(table.iloc[test])
    rows = {}
    groups = {"all": tuple(table["igbp"].unique()), **VEGETATION_GROUPS}
    for name, classes in groups.items():
        mask = table["igbp"].isin(classes).to_numpy()
        truth, error = table["nee"].to_numpy()[mask], predicted[mask] - table["nee"].to_numpy()[mask]
        rows[name] = {
            "r2": 1 - np.sum(error**2) / np.sum((truth - truth.mean()) ** 2),
            "rmse": float(np.sqrt(np.mean(error**2))),
            "sites": int(table.loc[mask, "site"].nunique()),
            "months": int(mask.sum()),
        }
    return pd.DataFrame(rows).T


def heat_drought_response(emulator: TowerNEEEmulator, table: pd.DataFrame) -> pd.DataFrame:
    """Mean change of NEE per vegetation group under a heatwave and under a drought.

    Heatwave: air temperature +2 K and VPD x 1.5. Drought: precipitation and soil water x 0.5.
    Changes are averaged over the group's observed growing-season site-months (months where the
    observed NEE is negative, i.e. uptake).

    Returns
    -------
    DataFrame indexed by vegetation group
        ``nee_mean`` and the changes ``heat_delta_nee`` and ``drought_delta_nee`` (gC m-2 d-1,
        positive = less uptake), and ``heat_delta_percent_of_uptake``.
    """
    base = emulator.predict(table)
    heat = emulator.predict(table.assign(ta=table["ta"] + 2.0, vpd=table["vpd"] * 1.5))
    drought = emulator.predict(table.assign(precip=table["precip"] * 0.5, swc=table["swc"] * 0.5))
    rows = {}
    for name, classes in VEGETATION_GROUPS.items():
        mask = (table["igbp"].isin(classes) & (table["nee"] < 0)).to_numpy()
        uptake = -base[mask].mean()
        rows[name] = {
            "nee_mean": float(base[mask].mean()),
            "heat_delta_nee": float((heat - base)[mask].mean()),
            "drought_delta_nee": float((drought - base)[mask].mean()),
            "heat_delta_percent_of_uptake": float(100 * (heat - base)[mask].mean() / uptake),
            "site_months": int(mask.sum()),
        }
    return pd.DataFrame(rows).T
