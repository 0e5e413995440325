"""One entry point, :func:`read`, over a registry of readers keyed by format name.

``read(path)`` detects the format from the file name and its first bytes; ``read(path, kind=...)``
forces one. Every reader returns the validated Observation Dataset of :mod:`observations.schema`
or raises :class:`~observations.schema.ObservationError` naming the file and what is wrong.
"""

from __future__ import annotations

import functools
import glob
import re
from collections.abc import Callable
from pathlib import Path

import xarray as xr

from observations.schema import ObservationError, validate

Reader = Callable[..., xr.Dataset]

#: Format name -> reader function ``reader(path, **options) -> Dataset``.
READERS: dict[str, Reader] = {}
#: Format name -> ``detect(path, head) -> bool`` (``head``: the first 4 kB, or b"" for directories).
DETECTORS: dict[str, Callable[[Path, bytes], bool]] = {}


def reader(kind: str, detect: Callable[[Path, bytes], bool]) -> Callable[[Reader], Reader]:
    """Register ``func`` as the reader of ``kind`` (refusing duplicates) with its format detector."""

    def register(func: Reader) -> Reader:
        if kind in READERS:
            raise ValueError(f"reader {kind!r} already registered by {READERS[kind].__module__}")

        @functools.wraps(func)
        def checked(path: Path | str, **options) -> xr.Dataset:
            path = Path(path)
            try:
                return validate(func(path, **options))
            except ObservationError:
                raise
            except (OSError, ValueError, KeyError, IndexError, RuntimeError) as err:
                raise ObservationError(
                    f"{path.name}: could not be read as {kind!r} ({type(err).__name__}: {err}); check that the file is "
                    f"complete and of this format, or pass another kind= (one of {sorted(READERS)})"
                ) from err

        READERS[kind], DETECTORS[kind] = checked, detect
        return checked

    return register


def _head(path: Path) -> bytes:
    if path.is_dir():
        return b""
    try:
        with path.open("rb") as handle:
            return handle.read(4096)
    except OSError as err:
        raise ObservationError(f"{path}: cannot open ({err.strerror or err}); check the path") from err


def detect(path: Path | str) -> str:
    """Format name of ``path`` (first matching detector); raise listing the known formats."""
    path = Path(path)
    if not path.exists() and glob.has_magic(str(path)):  # a glob: the format of the first matching file
        path = Path(next(iter(sorted(glob.glob(str(path)))), path))
    if not path.exists():
        raise ObservationError(f"{path}: no such file or directory")
    head = _head(path)
    for kind, test in DETECTORS.items():
        if test(path, head):
            return kind
    raise ObservationError(
        f"{path.name}: cannot tell the format from the name or first bytes; pass kind= one of {sorted(READERS)}"
    )


def read(path: Path | str, kind: str | None = None, **options) -> xr.Dataset:
    """Read any supported observation file into the validated Observation Dataset.

    Parameters
    ----------
    path : file (or, for ``kind="obspack"``, a directory or glob of ObsPack netCDF files)
    kind : str, optional
        One of :data:`READERS` (``sorted(observations.READERS)``); detected when omitted.
    **options
        Passed to the reader (see each reader's docstring).

    Raises
    ------
    ObservationError
        Naming the file, the line or variable, what was expected and what was found.
    """
    kind = kind or detect(path)
    if kind not in READERS:
        raise ObservationError(f"unknown kind {kind!r}; choose one of {sorted(READERS)}")
    return READERS[kind](path, **options)


def name_matches(pattern: str) -> Callable[[Path, bytes], bool]:
    """Detector: the file name matches ``pattern`` (case-insensitive regular expression)."""
    regex = re.compile(pattern, re.IGNORECASE)
    return lambda path, head: bool(regex.search(path.name))
