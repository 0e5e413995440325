"""Observation readers and the Observation Dataset contract (see :mod:`observations.schema`)."""

from observations.schema import ObservationError, observation_dataset, validate

__all__ = ["ObservationError", "observation_dataset", "validate"]
