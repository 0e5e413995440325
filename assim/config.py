"""Run configuration: TOML in, frozen dataclasses out; unknown keys and bad values fail at load.

Sections: ``[run]`` (:class:`RunConfig`; ``case`` picks ``"global"`` = the real global case,
``"osse"`` = a synthetic world or ``"regional"`` = footprints and observations from files),
``[transport]`` (:class:`TransportConfig`), ``[real]`` (:class:`assim.global_case.RealConfig`),
``[osse]`` (:class:`assim.osse.OsseConfig`) and ``[regional]``
(:class:`assim.regional.RegionalConfig`). Every
key has a default, so an empty file is a valid config (the demo: the real global case from the
bundled tables).
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from assim.global_case import RealConfig
from assim.osse import OsseConfig
from assim.regional import RegionalConfig


class ConfigError(ValueError):
    """A config file or table is invalid; the message names the key."""


@dataclass(frozen=True)
class RunConfig:
    """What to solve and where: ``case`` is "global", "osse" or "regional"; ``method`` a key of ``assim.SOLVERS``."""

    case: str = "global"
    method: str = "analytic"
    output_dir: str = "assim-output"
    reference_period: tuple[int, int] = (2015, 2022)


@dataclass(frozen=True)
class TransportConfig:
    """``name`` is a key of ``assim.transport.TRANSPORTS``; ``options`` go to its Config."""

    name: str = "box12"
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    real: RealConfig = field(default_factory=RealConfig)
    osse: OsseConfig = field(default_factory=OsseConfig)
    regional: RegionalConfig = field(default_factory=RegionalConfig)

    def to_toml(self) -> str:
        """The config as TOML text (stored in every output so a run can be re-made)."""
        return tomli_w.dumps({f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)})


SECTIONS = {f.name: f for f in dataclasses.fields(Config)}
CASES = ("global", "osse", "regional")


def _plain(obj: object) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _coerce(section: str, key: str, value: object, hint: object) -> object:
    """Check ``value`` against a field's type hint; tuples arrive from TOML as lists."""
    where = f"[{section}] {key}"
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0]
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(section, key, v, item) for v in value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is dict and isinstance(value, dict):
        return value
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    expected = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where}: expected {expected}, got {value!r} ({type(value).__name__})")


def _section(name: str, cls: type, table: object) -> object:
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - valid)
    if unknown:
        raise ConfigError(f"[{name}] unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(valid))}")
    values = {key: _coerce(name, key, value, hints[key]) for key, value in table.items()}
    try:
        return cls(**values)
    except ValueError as err:
        raise ConfigError(f"[{name}] {err}") from err


def config_from_dict(data: dict) -> Config:
    """Build and validate a :class:`Config` from parsed TOML."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]; valid sections: {', '.join(sorted(SECTIONS))}")
    hints = typing.get_type_hints(Config)
    config = Config(**{name: _section(name, hints[name], table) for name, table in data.items()})
    _check_names(config)
    return config


def _check_names(config: Config) -> None:
    from assim.solvers import SOLVERS
    from assim.transport import TRANSPORTS, make_transport

    if config.run.case not in CASES:
        raise ConfigError(f"[run] case {config.run.case!r} unknown; choose one of {list(CASES)}")
    if config.run.method not in SOLVERS:
        raise ConfigError(f"[run] method {config.run.method!r} unknown; choose one of {sorted(SOLVERS)}")
    if config.transport.name not in TRANSPORTS:
        raise ConfigError(f"[transport] name {config.transport.name!r} unknown; choose one of {sorted(TRANSPORTS)}")
    try:
        make_transport(config.transport.name, **config.transport.options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[transport] options: {err}") from err
    if config.run.case == "regional" and not hasattr(TRANSPORTS[config.transport.name], "regions"):
        raise ConfigError(
            f"[run] case 'regional' needs a transport with a region mask ([transport] name = 'footprints'), "
            f"got {config.transport.name!r}"
        )
    start, end = config.run.reference_period
    if start > end:
        raise ConfigError(f"[run] reference_period {list(config.run.reference_period)} must be [first, last] year")


def load_config(path: str | Path) -> Config:
    """Read a TOML config file; errors name the file and the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no such config file") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
