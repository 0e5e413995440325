"""Solvers behind one contract: ``solve(problem, method=...) -> Posterior``.

Every solver takes a validated :class:`~assim.problem.Problem` and returns a
:class:`~assim.posterior.Posterior`; ``exact`` solvers give the Gaussian answer to
round-off, the others agree with it within their stated tolerance.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from assim.posterior import Posterior
from assim.problem import Problem

SOLVERS: dict[str, Callable[..., Posterior]] = {}


def solver(name: str, *, exact: bool) -> Callable[[Callable[..., Posterior]], Callable[..., Posterior]]:
    """Register a solver under ``name``; the wrapper validates the problem once."""

    def register(func: Callable[..., Posterior]) -> Callable[..., Posterior]:
        if name in SOLVERS:
            raise ValueError(f"solver {name!r} already registered by {SOLVERS[name].__module__}")

        @functools.wraps(func)
        def checked(problem: Problem, **options) -> Posterior:
            problem.validate()
            return func(problem, **options)

        checked.exact = exact
        SOLVERS[name] = checked
        return checked

    return register


def solve(problem: Problem, method: str = "analytic", **options) -> Posterior:
    """Solve ``problem`` with the solver registered as ``method``."""
    if method not in SOLVERS:
        raise ValueError(f"unknown solver {method!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[method](problem, **options)


# registration: each module registers its solver on import
from assim.solvers import (  # noqa: E402
    analytic,  # noqa: F401
    ensemble,  # noqa: F401
    hierarchical,  # noqa: F401
    variational,  # noqa: F401
)

__all__ = ["SOLVERS", "solve", "solver"]
