"""Observation readers and the Observation Dataset contract (see :mod:`observations.schema`).

``observations.read(path, kind=None, **options)`` reads any supported file; ``sorted(READERS)``
lists the formats. Importing a reader module registers it.
"""

from observations import budget, dataset, errors, fluxnet, matrix, noaa, obspack, oco2, selection  # noqa: F401  (register the readers)
from observations.readers import READERS, detect, read
from observations.schema import ObservationError, observation_dataset, validate

__all__ = ["READERS", "ObservationError", "detect", "observation_dataset", "read", "validate"]
