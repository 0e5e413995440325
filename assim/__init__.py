"""assim: Bayesian inversion of the land carbon sink (prior from an emulator, CO2 observations).

Sign: fluxes are positive to the atmosphere (PgC/yr); ``land_sink`` outputs are positive uptake.
"""

from importlib.metadata import PackageNotFoundError, version

from assim.posterior import Posterior
from assim.problem import Problem, ProblemError
from assim.solvers import SOLVERS, solve

try:
    __version__ = version("assim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["SOLVERS", "Posterior", "Problem", "ProblemError", "__version__", "solve"]
