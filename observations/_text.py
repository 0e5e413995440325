"""Careful text-table parsing shared by the text readers: every failure names file, line and column.

Readers never hand a text file to a library parser that could fail with its own traceback or
guess silently (a short header, a stray string, a byte-order mark); they split lines here and
convert each column with :func:`numbers`, :func:`integers` or :func:`strings`.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from observations.schema import ObservationError


def fail(path: Path | str, message: str, line: int | None = None) -> ObservationError:
    """An :class:`ObservationError` prefixed with ``file:line:`` (``line`` 1-based)."""
    where = f"{Path(path).name}:{line}" if line is not None else f"{Path(path).name}"
    return ObservationError(f"{where}: {message}")


def read_text(path: Path | str) -> str:
    """The file as text (UTF-8, an optional byte-order mark removed); raise on binary or other encodings."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise fail(path, f"cannot read the file ({err.strerror or err}); check the path") from err
    if not data.strip():
        raise fail(path, "the file is empty; expected a text table of observations")
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise fail(path, "contains NUL bytes: this is a binary file, not a text table; pass the right kind=", line)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise fail(
            path,
            f"byte 0x{data[err.start]:02x} is not UTF-8 text; re-save the file as UTF-8 (found another encoding)",
            line,
        ) from err


@dataclass(frozen=True)
class Rows:
    """Data rows of a text table: fields per row and the 1-based line number of each row."""

    path: Path
    fields: list[list[str]]
    lines: np.ndarray
    header: list[str] | None
    comments: list[str]

    def __len__(self) -> int:
        return len(self.fields)

    def take(self, keep: np.ndarray) -> Rows:
        """The rows where ``keep`` is True."""
        index = np.flatnonzero(keep)
        return Rows(self.path, [self.fields[i] for i in index], self.lines[index], self.header, self.comments)


def split_rows(
    path: Path | str,
    text: str,
    *,
    delimiter: str | None = None,
    comment: str = "#",
    header: bool = False,
    header_in_comments: bool = False,
) -> Rows:
    """Split ``text`` into rows of fields, skipping blank and ``comment`` lines.

    ``header`` takes the first data line as column names; ``header_in_comments`` takes the last
    comment line instead (the NOAA layout, whose column names are the last ``#`` line).
    """
    path = Path(path)
    fields, lines, comments = [], [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if comment and line.startswith(comment):
            comments.append(line.lstrip(comment).strip())
            continue
        if delimiter == ",":  # CSV: quoted fields may hold commas ("Great Western Woodlands, WA")
            parts = next(csv.reader([line]))
        else:
            parts = line.split(delimiter)
        fields.append([p.strip() for p in parts] if delimiter else parts)
        lines.append(number)
    names = None
    if header:
        if not fields:
            raise fail(path, "no header line found")
        names, fields, lines = [n.strip() for n in fields[0]], fields[1:], lines[1:]
    elif header_in_comments:
        if not comments:
            raise fail(path, "no '#' header lines found; expected column names on the last '#' line")
        names = comments[-1].replace(":", " ").split()
    if not fields:
        raise fail(path, "no data rows after the header; the file is truncated or empty")
    return Rows(path, fields, np.asarray(lines, dtype=int), names, comments)


def require_width(rows: Rows, width: int, what: str) -> None:
    """Every row must have exactly ``width`` fields (``what`` names the layout)."""
    for fields, line in zip(rows.fields, rows.lines, strict=True):
        if len(fields) != width:
            raise fail(
                rows.path,
                f"expected {width} fields ({what}), found {len(fields)}; the line is truncated or the header "
                "does not match the data",
                int(line),
            )


def column_index(rows: Rows, aliases: Sequence[str], what: str) -> int:
    """Position of the first header name (case-insensitive, spaces as ``_``) found in ``aliases``."""
    names = [normalise(n) for n in rows.header or []]
    for alias in aliases:
        if alias in names:
            return names.index(alias)
    raise fail(rows.path, f"no {what} column: expected one of {list(aliases)}, found header {rows.header}", 1)


def normalise(name: str) -> str:
    """Header spelling used for matching: lower case, spaces and dashes as ``_``, no quotes."""
    return name.strip().strip('"').lower().replace(" ", "_").replace("-", "_")


def strings(rows: Rows, index: int) -> np.ndarray:
    """Column ``index`` as strings."""
    return np.asarray([f[index] for f in rows.fields], dtype=str)


def numbers(rows: Rows, index: int, name: str, missing: Iterable[float] = (), na: Iterable[str] = ()) -> np.ndarray:
    """Column ``index`` as float; ``missing`` sentinels and ``na`` spellings become NaN, anything else raises."""
    na = {s.lower() for s in na}
    out = np.empty(len(rows), dtype=float)
    for i, (fields, line) in enumerate(zip(rows.fields, rows.lines, strict=True)):
        token = fields[index]
        if token.lower() in na:
            out[i] = np.nan
            continue
        try:
            out[i] = float(token)
        except ValueError:
            raise fail(rows.path, f"column {name!r}: expected a number, found {token!r}", int(line)) from None
        if not np.isfinite(out[i]):
            raise fail(
                rows.path, f"column {name!r}: {token!r} is not a finite number; use the file's missing code", int(line)
            )
    for sentinel in missing:
        out[np.isclose(out, sentinel, rtol=0, atol=1e-9)] = np.nan
    return out


def integers(rows: Rows, index: int, name: str, low: int, high: int) -> np.ndarray:
    """Column ``index`` as integers in ``low..high``; raise naming the line otherwise."""
    out = np.empty(len(rows), dtype=int)
    for i, (fields, line) in enumerate(zip(rows.fields, rows.lines, strict=True)):
        token = fields[index]
        try:
            value = float(token)
        except ValueError:
            raise fail(rows.path, f"column {name!r}: expected an integer, found {token!r}", int(line)) from None
        if not (value == int(value) if np.isfinite(value) else False) or not low <= value <= high:
            raise fail(rows.path, f"column {name!r}: expected an integer in {low}..{high}, found {token!r}", int(line))
        out[i] = int(value)
    return out


def year_month(rows: Rows, index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Column ``index`` holding ``YYYY-MM`` -> (year, month) integer arrays."""
    years, months = np.empty(len(rows), dtype=int), np.empty(len(rows), dtype=int)
    for i, (fields, line) in enumerate(zip(rows.fields, rows.lines, strict=True)):
        token = fields[index]
        parts = token.split("-")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 1 <= int(parts[1]) <= 12:
            raise fail(rows.path, f"column {name!r}: expected a month as YYYY-MM, found {token!r}", int(line))
        years[i], months[i] = int(parts[0]), int(parts[1])
    return years, months


#: Plausible years for an observation record.
YEARS = (1700, 2200)


def period_times(year: np.ndarray, month: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, time_start, time_end) of calendar months (``month`` given) or years: time is the period's middle."""
    if month is None:
        start = pd.to_datetime({"year": year, "month": 1, "day": 1}).to_numpy()
        end = pd.to_datetime({"year": year + 1, "month": 1, "day": 1}).to_numpy()
    else:
        start = pd.to_datetime({"year": year, "month": month, "day": 1}).to_numpy()
        end = (pd.DatetimeIndex(start) + pd.offsets.MonthBegin(1)).to_numpy()
    start, end = start.astype("datetime64[ns]"), end.astype("datetime64[ns]")
    return start + (end - start) // 2, start, end


def require_unique(rows: Rows, keys: np.ndarray, what: str) -> None:
    """Raise naming both lines when two rows share a key (e.g. the same month twice)."""
    order = np.argsort(keys, kind="stable")
    dup = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if dup.size:
        first, second = rows.lines[order[dup[0]]], rows.lines[order[dup[0] + 1]]
        raise fail(
            rows.path,
            f"duplicated {what} {keys[order[dup[0]]]!s} (also on line {first}); remove one of the two rows",
            int(second),
        )


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` (``os.replace``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the result is an ordinary data file
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
