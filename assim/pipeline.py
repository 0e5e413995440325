"""The chain end to end: world or data -> Problem -> solve -> run Dataset (docs/outputs.md)."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from assim.config import Config, config_from_dict
from assim.covariance import DiagonalCovariance
from assim.global_case import GlobalCase, global_problem, summarize_global
from assim.osse import World, fixed_flux_background, make_world, world_prior, world_problem
from assim.posterior import Posterior
from assim.problem import Problem
from assim.regional import regional_problem, summarize_regional
from assim.report import read_run
from assim.solvers import solve
from assim.solvers.ensemble import Ensemble, carried_variables, ensemble_from_run, nowcast, observations_from_run
from assim.state import StateVector, transcom3_land_regions
from assim.summary import summarize
from assim.transport import make_transport
from observations import validate

T = TypeVar("T")


def run(config: Config, progress: bool = True) -> xr.Dataset:
    """Run the case named by ``config.run.case`` ("global", "osse" or "regional")."""
    return {"global": run_global, "osse": run_osse, "regional": run_regional}[config.run.case](config, progress)


def run_global(config: Config, progress: bool = True) -> xr.Dataset:
    """The real global case of ``config.real``: data -> Problem -> ``config.run.method`` -> summary."""

    def build() -> tuple[Problem, GlobalCase]:
        regions, options = transcom3_land_regions(), config.transport.options
        case = global_problem(config.real, regions, config.transport.name, **options)
        return case.problem, case

    def summarise(posterior: Posterior, case: GlobalCase) -> xr.Dataset:
        result = summarize_global(case, posterior, config.real, config.run.reference_period)
        return result.assign_attrs(config=config.to_toml())

    return _solve_in_steps(config, progress, "reading data, building H and R", build, summarise)


def run_osse(config: Config, progress: bool = True) -> xr.Dataset:
    """Draw the synthetic world of ``config.osse``, invert it with ``config.run.method``, summarise."""
    regions = transcom3_land_regions()
    transport = make_transport(config.transport.name, **config.transport.options)

    def build() -> tuple[Problem, World]:
        world = make_world(config.osse, regions, transport)
        return world_problem(world, config.osse, regions, transport), world

    def summarise(posterior: Posterior, world: World) -> xr.Dataset:
        run = summarize(
            posterior,
            reference=config.run.reference_period,
            truth=world.truth,
            attrs={
                "title": f"assim OSSE (seed {world.seed}): land sink by region with a known truth",
                "config": config.to_toml(),
                "prior_source": world.prior.attrs["prior_source"],
                "osse_seed": world.seed,
                "transport": transport.describe(),
            },
        )
        if config.run.method == "ensemble":  # carry the ensemble so `assim nowcast` continues without re-solving
            problem = posterior.problem
            carried = Ensemble(problem.state, problem.x_prior, posterior.mean, posterior.covariance.factor)
            run = xr.merge([run, carried_variables(carried, problem.obs)], combine_attrs="override")
        return run

    return _solve_in_steps(config, progress, "synthetic world and transport", build, summarise)


def run_regional(config: Config, progress: bool = True) -> xr.Dataset:
    """The regional case of ``config.regional``: footprint folder + observation files -> solve -> summary."""
    transport = make_transport(config.transport.name, **config.transport.options)

    def summarise(posterior: Posterior, counts: dict) -> xr.Dataset:
        attrs = {
            "title": "assim regional inversion: monthly fluxes by region from footprints",
            "config": config.to_toml(),
            "prior_source": config.regional.prior or "uniform flux density (config)",
            "transport": transport.describe(),
            **counts,
        }
        return summarize_regional(posterior, config.run.reference_period, attrs, config.regional.truth)

    build = functools.partial(regional_problem, config.regional, transport)
    return _solve_in_steps(config, progress, "reading observations, projecting footprints", build, summarise)


def _solve_in_steps(
    config: Config,
    progress: bool,
    building: str,
    build: Callable[[], tuple[Problem, T]],
    summarise: Callable[[Posterior, T], xr.Dataset],
) -> xr.Dataset:
    """build() -> (Problem, what the summary needs); solve with ``config.run.method``; summarise; a 3-step bar."""
    with tqdm(total=3, desc="assim", disable=not progress, leave=False) as steps:
        steps.set_postfix_str(building)
        problem, context = build()
        steps.update()
        steps.set_postfix_str(f"solving ({config.run.method}, n={problem.n}, m={problem.m})")
        posterior = solve(problem, method=config.run.method)
        steps.update()
        steps.set_postfix_str("summarising")
        run = summarise(posterior, context)
        steps.update()
    return run


def nowcast_run(run_path: Path, data_path: Path) -> xr.Dataset:
    """Update an OSSE run file with the next month of observations (docs/outputs.md, "Nowcast state").

    The carried ensemble is extended by one month (its prior conditioned on the past) and only
    the new observations are assimilated; a run file without a carried ensemble is solved once
    with the ``ensemble`` solver from its own config. ``NEW_DATA`` may hold ``background`` (ppm);
    else the run's fixed fossil and ocean fluxes give it.
    """
    run = read_run(run_path)
    config = config_from_dict(tomllib.loads(run.attrs["config"]))
    if config.run.case != "osse":
        raise ValueError(f"{run_path}: nowcast supports OSSE runs (case 'osse'), this run is case {config.run.case!r}")
    with xr.open_dataset(data_path) as ds:
        new = validate(ds.load())
    month = run["time"].values[-1].astype("datetime64[M]") + 1
    found = np.unique(new["time"].values.astype("datetime64[M]"))
    if found.tolist() != [month]:
        raise ValueError(f"{data_path}: nowcast adds the month after the run ({month}); found months {found}")
    regions, transport = transcom3_land_regions(), make_transport(config.transport.name, **config.transport.options)
    if "nowcast_perturbation" in run:
        carried, old_obs = ensemble_from_run(run, regions, str(run_path)), observations_from_run(run, str(run_path))
    else:
        problem = world_problem(make_world(config.osse, regions, transport), config.osse, regions, transport)
        post = solve(problem, method="ensemble")
        carried, old_obs = Ensemble(problem.state, problem.x_prior, post.mean, post.covariance.factor), problem.obs
    state = StateVector(np.append(carried.state.time, month.astype("datetime64[ns]")), carried.state.regions)
    prior, B = world_prior(state, config.osse)
    x_prior = prior["flux"].values.ravel()
    if "background" not in new:
        background = fixed_flux_background(state, new, transport, config.osse.initial_ppm)
        new = new.assign(background=("obs", background, {"units": "ppm", "long_name": "fixed background"}))
    new = new[list(old_obs.data_vars)].drop_vars([c for c in new.coords if c not in old_obs.coords])
    y_new = new["value"].values - new["background"].values
    updated = nowcast(
        carried,
        state,
        x_prior,
        B,
        transport.jacobian(state, new),
        y_new,
        DiagonalCovariance(new["uncertainty"].values ** 2),
    )
    obs = xr.concat([old_obs, new], dim="obs", combine_attrs="override")
    y, R = obs["value"].values - obs["background"].values, DiagonalCovariance(obs["uncertainty"].values ** 2)
    problem = Problem(state, x_prior, B, transport.jacobian(state, obs), y, R, obs)
    kept = {k: run.attrs[k] for k in ("title", "config", "prior_source", "osse_seed", "transport") if k in run.attrs}
    kept["nowcast_months"] = f"{run.attrs.get('nowcast_months', '')} {month}".strip()
    result = summarize(updated.posterior(problem), reference=config.run.reference_period, attrs=kept)
    return xr.merge([result, carried_variables(updated, obs)])
