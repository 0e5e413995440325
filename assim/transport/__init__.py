"""Observation operators H: a registry of transport models keyed by name.

``make_transport("box12", **options)`` returns ``cls(cls.Config(**options))``. Every transport
exposes ``jacobian(state, obs) -> Jacobian`` (rows = obs in order, columns = state order),
``simulate(state, flux, initial_ppm) -> DataArray (time, box)`` and ``describe() -> str``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import xarray as xr

from assim.state import StateVector
from assim.transport.boxmodel import BoxModel12
from assim.transport.footprints import FootprintTransport
from assim.transport.jacobian import Jacobian

__all__ = [
    "TRANSPORTS",
    "BoxModel12",
    "FootprintTransport",
    "Jacobian",
    "Transport",
    "make_transport",
    "register_transport",
]


class Transport(Protocol):
    """What every registered transport provides (see the module docstring)."""

    Config: type
    config: Any

    def jacobian(self, state: StateVector, obs: xr.Dataset) -> Jacobian: ...

    def simulate(self, state: StateVector, flux: xr.DataArray, initial_ppm: float) -> xr.DataArray: ...

    def describe(self) -> str: ...


TRANSPORTS: dict[str, type[Transport]] = {}


def register_transport(name: str) -> Callable[[type[Transport]], type[Transport]]:
    """Class decorator adding a transport to :data:`TRANSPORTS`; a taken name raises."""

    def register(cls: type[Transport]) -> type[Transport]:
        if name in TRANSPORTS:
            raise ValueError(f"transport {name!r} already registered by {TRANSPORTS[name].__module__}")
        TRANSPORTS[name] = cls
        return cls

    return register


register_transport("box12")(BoxModel12)
register_transport("footprints")(FootprintTransport)


def make_transport(name: str, **options: Any) -> Transport:
    """Build the transport registered as ``name`` with its ``Config(**options)``.

    Raises
    ------
    ValueError
        For an unknown name (listing ``sorted(TRANSPORTS)``) or an unknown option
        (naming it and listing the valid ones).
    """
    if name not in TRANSPORTS:
        raise ValueError(f"unknown transport {name!r}; choose one of {sorted(TRANSPORTS)}")
    cls = TRANSPORTS[name]
    valid = [field.name for field in dataclasses.fields(cls.Config)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for transport {name!r}; valid options are {valid}")
    try:
        config = cls.Config(**options)
    except TypeError as err:
        raise ValueError(f"transport {name!r}: bad options {options}: {err}") from err
    return cls(config)
