"""Read speed of the ObsPack reader on large synthetic collections; one JSON line per case.

Synthetic GLOBALVIEWplus-layout CO2 files are written with :func:`observations.synthetic.write_obspack`
(without the 200-character ``obspack_id``, whose 200 bytes a record would dominate both timings):
one file of N records (default 1e6; ``--records N``) and a collection of ``--files`` files holding
the same N records. ``read_ratio`` = time of ``observations.read(..., kind="obspack")`` (unit
conversion, flags, plausibility checks, validated Dataset) / time of reading the same variables
with bare netCDF4 into numpy arrays. Ours and the reference alternate ``--repeat`` times in the same
process (the machine is shared: alternating spreads its load over both); the line gives the min
and median ratio. Cases: ``eager`` (numpy Dataset), ``lazy_open`` (``chunks=``: the record
selection and the validation pass, variables left as dask arrays) and ``lazy_load`` (the same, then
``.load()``). Goal: read_ratio <= 2 for the eager read.
"""
# ruff: noqa: E402  (the sys.path line must run before the imports)

import os
import sys

# without python -P the script's folder comes first on sys.path, and this file would shadow the observations package
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import netCDF4
import numpy as np

import observations
from observations.synthetic import write_obspack

#: What the reader reads from each file; the reference reads exactly these.
VARIABLES = (
    "time",
    "value",
    "value_unc",
    "latitude",
    "longitude",
    "altitude",
    "intake_height",
    "qcflag",
    "obs_flag",
    "obspack_num",
)
#: Records per dask chunk in the lazy cases (a multiple of the files' 65536-record storage chunks).
CHUNKS = 1 << 18


def bare_netcdf4(files: list[Path]) -> list[dict[str, np.ndarray]]:
    """The reference: the same variables as numpy arrays, nothing else."""
    out = []
    for path in files:
        with netCDF4.Dataset(path) as nc:
            nc.set_auto_mask(False)
            out.append({name: nc.variables[name][:] for name in VARIABLES})
    return out


def alternate(repeat: int, ours: Callable[[], object], reference: Callable[[], object]) -> tuple[list, list]:
    """Seconds of ``ours`` and ``reference`` run in turn ``repeat`` times (after one untimed warm-up each)."""
    ours(), reference()
    times = ([], [])
    for _ in range(repeat):
        for func, spent in zip((ours, reference), times, strict=True):
            t0 = time.perf_counter()
            func()
            spent.append(time.perf_counter() - t0)
    return times


def write_collection(folder: Path, records: int, files: int) -> list[Path]:
    """``files`` tower files holding ``records`` records in all (1 % provider-rejected, 1 % obs_flag 0)."""
    rng = np.random.default_rng(0)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(records), files)):
        n = part.size
        paths.append(
            write_obspack(
                folder / f"co2_s{i:02d}_tower-insitu_1_representative.nc",
                site=f"S{i:02d}",
                value=(410.0 + rng.normal(0.0, 5.0, n)) * 1e-6,
                time=np.datetime64("2015-01-01T00:00", "s") + part * np.timedelta64(300, "s"),
                value_unc=np.full(n, 0.2e-6),
                qcflag=np.where(rng.random(n) < 0.01, "*..", "..."),
                obs_flag=(rng.random(n) > 0.01).astype(int),
                intake_height=np.tile([30.0, 100.0, 300.0, 396.0], n // 4 + 1)[:n],
                with_ids=False,
            )
        )
    return paths


def case(name: str, files: list[Path], target: Path, repeat: int, read: Callable[[Path], object]) -> dict:
    ours, reference = alternate(repeat, lambda: read(target), lambda: bare_netcdf4(files))
    ratios = [a / b for a, b in zip(ours, reference, strict=True)]
    return {
        "case": name,
        "files": len(files),
        "records": sum(arrays["value"].size for arrays in bare_netcdf4(files)),
        "records_kept": observations.read(target, kind="obspack").sizes["obs"],
        "seconds": round(min(ours), 3),
        "reference_seconds": round(min(reference), 3),
        "read_ratio": round(min(ours) / min(reference), 2),
        "read_ratio_min": round(min(ratios), 2),
        "read_ratio_median": round(statistics.median(ratios), 2),
        "repeat": repeat,
        "goal_ratio": 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10, help="files of the collection case")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    cases = {
        "eager": lambda path: observations.read(path, kind="obspack"),
        "lazy_open": lambda path: observations.read(path, kind="obspack", chunks=CHUNKS),
        "lazy_load": lambda path: observations.read(path, kind="obspack", chunks=CHUNKS).load(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for n_files in (1, args.files):
            folder = Path(tmp) / f"files{n_files}"
            folder.mkdir()
            files = write_collection(folder, args.records, n_files)
            target = files[0] if n_files == 1 else folder
            for name, read in cases.items():
                print(json.dumps(case(f"obspack_{name}", files, target, args.repeat, read)), flush=True)


if __name__ == "__main__":
    main()
