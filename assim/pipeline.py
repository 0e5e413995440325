"""The chain end to end: world or data -> Problem -> solve -> run Dataset (docs/outputs.md)."""

from __future__ import annotations

import xarray as xr
from tqdm.auto import tqdm

from assim.config import Config
from assim.global_case import global_problem, summarize_global
from assim.osse import make_world, world_problem
from assim.solvers import solve
from assim.state import transcom3_land_regions
from assim.summary import summarize
from assim.transport import make_transport


def run(config: Config, progress: bool = True) -> xr.Dataset:
    """Run the case named by ``config.run.case`` ("global" or "osse")."""
    return {"global": run_global, "osse": run_osse}[config.run.case](config, progress)


def run_global(config: Config, progress: bool = True) -> xr.Dataset:
    """The real global case of ``config.real``: data -> Problem -> ``config.run.method`` -> summary."""
    steps = tqdm(total=3, desc="assim", disable=not progress, leave=False)
    steps.set_postfix_str("reading data, building H and R")
    case = global_problem(config.real, transcom3_land_regions(), config.transport.name, **config.transport.options)
    steps.update()
    steps.set_postfix_str(f"solving ({config.run.method}, n={case.problem.n}, m={case.problem.m})")
    posterior = solve(case.problem, method=config.run.method)
    steps.update()
    steps.set_postfix_str("summarising")
    result = summarize_global(case, posterior, config.real, config.run.reference_period)
    steps.update()
    steps.close()
    return result.assign_attrs(config=config.to_toml())


def run_osse(config: Config, progress: bool = True) -> xr.Dataset:
    """Draw the synthetic world of ``config.osse``, invert it with ``config.run.method``, summarise."""
    steps = tqdm(total=3, desc="assim", disable=not progress, leave=False)
    regions = transcom3_land_regions()
    transport = make_transport(config.transport.name, **config.transport.options)
    steps.set_postfix_str("synthetic world and transport")
    world = make_world(config.osse, regions, transport)
    problem = world_problem(world, config.osse, regions, transport)
    steps.update()
    steps.set_postfix_str(f"solving ({config.run.method}, n={problem.n}, m={problem.m})")
    posterior = solve(problem, method=config.run.method)
    steps.update()
    steps.set_postfix_str("summarising")
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
    steps.update()
    steps.close()
    return run
