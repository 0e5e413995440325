"""The run Dataset of docs/outputs.md from a Posterior: fluxes, annual land sinks with covariance, obs fit."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import xarray as xr

from assim import __version__
from assim.posterior import Posterior, annual_mean_weights, anomaly, land_aggregates, monthly_aggregate
from assim.state import FLUX_SIGN, FLUX_UNITS

SINK_ATTRS = {"units": FLUX_UNITS, "sign": "positive = uptake by land (land_sink = -flux)"}


def summarize(
    posterior: Posterior,
    reference: tuple[int, int],
    truth: xr.DataArray | None = None,
    attrs: dict | None = None,
    aggregates: xr.DataArray | None = None,
    partial_years: bool = False,
) -> xr.Dataset:
    """The run Dataset of docs/outputs.md: fluxes, annual land sinks with covariance, obs fit, diagnostics.

    ``aggregates`` (aggregate, region) are the totals reported (default :func:`land_aggregates`:
    each region, global land and three latitude bands); ``partial_years`` reports years the
    state covers only in part, as the mean over their months (see :func:`annual_mean_weights`).
    """
    state = posterior.state
    aggregates = land_aggregates(state.regions) if aggregates is None else aggregates
    weights = annual_mean_weights(state, aggregates, partial_years)
    post = posterior.aggregate(weights)
    prior = posterior.aggregate_prior(weights)
    anom = anomaly(post, reference)

    def sink(values: xr.DataArray, long_name: str) -> xr.DataArray:
        return values.assign_attrs(SINK_ATTRS, long_name=long_name)

    run = posterior.flux()
    run["land_sink_prior"] = sink(-prior["mean"], "prior annual-mean land sink")
    run["land_sink_prior_sd"] = sink(prior["sd"], "prior land sink 1-sigma")
    run["land_sink_posterior"] = sink(-post["mean"], "posterior annual-mean land sink")
    run["land_sink_posterior_sd"] = sink(post["sd"], "posterior land sink 1-sigma")
    run["land_sink_posterior_covariance"] = post["covariance"].assign_attrs(
        units="PgC2 yr-2", long_name="posterior covariance of annual land sinks"
    )
    run["land_sink_anomaly_posterior"] = sink(-anom["mean"], "posterior land sink minus its reference-period mean")
    run["land_sink_anomaly_posterior_sd"] = sink(anom["sd"], "1-sigma of the posterior land sink anomaly")
    run["land_sink_anomaly_posterior"].attrs["reference_period"] = anom.attrs["reference_period"]
    run["uncertainty_reduction"] = (1 - post["sd"] / prior["sd"]).assign_attrs(
        units="1", long_name="1 - posterior sd / prior sd"
    )
    for which, mean, cov in (
        ("prior", posterior.problem.x_prior, posterior.problem.B),
        ("posterior", posterior.mean, posterior.covariance),
    ):
        monthly = monthly_aggregate(aggregates, state, mean, cov)
        flux_attrs = {"units": FLUX_UNITS, "sign": FLUX_SIGN}
        run[f"flux_aggregate_{which}"] = monthly["mean"].assign_attrs(
            flux_attrs, long_name=f"{which} monthly total flux"
        )
        run[f"flux_aggregate_{which}_sd"] = monthly["sd"].assign_attrs(
            flux_attrs, long_name=f"{which} monthly total 1-sigma"
        )
    if truth is not None:
        run["flux_truth"] = truth.assign_attrs(long_name="synthetic true land flux")
        truth_totals = (weights * truth).sum(("time", "region"))
        run["land_sink_truth"] = sink(-truth_totals, "true annual-mean land sink (OSSE)")
    if state.extras is not None:
        run = run.merge(_extras(posterior))
    run = run.assign_coords(region_id=("region", state.regions["region_id"].values))
    run = xr.merge([run, _observation_fit(posterior)])
    run["dofs"] = xr.DataArray(posterior.dofs(), attrs={"units": "1", "long_name": "degrees of freedom for signal"})
    run["chi2_reduced"] = xr.DataArray(
        posterior.chi2_reduced(), attrs={"units": "1", "long_name": "innovation chi-square per observation"}
    )
    return run.assign_attrs(
        Conventions="CF-1.8",
        software_version=__version__,
        method=posterior.method,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        **(attrs or {}),
    )


def _observation_fit(posterior: Posterior) -> xr.Dataset:
    problem = posterior.problem
    obs = problem.obs
    prior_sim, post_sim = posterior.simulated()
    background = obs["background"].values if "background" in obs else 0.0
    ppm = {"units": "ppm"}
    return xr.Dataset(
        {
            "obs_value": ("obs", problem.y, {**ppm, "long_name": "observation minus fixed background"}),
            "obs_uncertainty": (
                "obs",
                np.sqrt(problem.R.diagonal()),
                {**ppm, "long_name": "observation error 1-sigma"},
            ),
            "obs_prior_simulated": ("obs", prior_sim, {**ppm, "long_name": "H x_prior"}),
            "obs_posterior_simulated": ("obs", post_sim, {**ppm, "long_name": "H x_posterior"}),
            "obs_background": ("obs", np.broadcast_to(background, problem.y.shape).copy(), {**ppm}),
        },
        coords={
            "obs_time": ("obs", obs["time"].values),
            "obs_site": ("obs", obs["site"].values.astype(str)),
            "obs_latitude": ("obs", obs["latitude"].values, {"units": "degrees_north"}),
        },
    )


def _extras(posterior: Posterior) -> xr.Dataset:
    """Prior and posterior of the extra state parameters (fossil, ocean, land use, offsets...), in their own units."""
    state, problem = posterior.state, posterior.problem
    prior_sd = np.sqrt(problem.B.diagonal())
    fields = {
        "extra_prior": problem.x_prior,
        "extra_prior_sd": prior_sd,
        "extra_posterior": posterior.mean,
        "extra_posterior_sd": posterior.sd,
    }
    return xr.Dataset(
        {
            name: state.extras_dataarray(values, name).assign_attrs(
                long_name=name.replace("_", " "), sign="fluxes positive to the atmosphere"
            )
            for name, values in fields.items()
        }
    )
