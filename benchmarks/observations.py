"""Read speed of the ObsPack reader on a large synthetic collection; one JSON line per case.

A synthetic GLOBALVIEWplus-layout CO2 file of N records (default 1e6; ``--records N``) is written
with :func:`observations.synthetic.write_obspack` (without the 200-character ``obspack_id``, whose
200 bytes a record would dominate both timings). ``read_ratio`` = time of ``observations.read``
(unit conversion, flags, plausibility checks, validated Dataset) / time of reading the same variables
with bare netCDF4 into numpy arrays, best of ``--repeat`` runs each, in the same process. Goal <= 2.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import netCDF4
import numpy as np

import observations
from observations.synthetic import write_obspack

VARIABLES = ("time", "value", "value_unc", "latitude", "longitude", "altitude", "intake_height", "qcflag", "obs_flag")


def bare_netcdf4(path: Path) -> dict[str, np.ndarray]:
    """The reference: the same variables as numpy arrays, nothing else."""
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        return {name: nc.variables[name][:] for name in VARIABLES}


def best_of(repeat: int, func, *args) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def obspack_read(records: int, repeat: int) -> dict:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = write_obspack(
            Path(folder) / "co2_syn_tower-insitu_1_representative.nc",
            value=(410.0 + rng.normal(0.0, 5.0, records)) * 1e-6,
            time=np.datetime64("2015-01-01T00:00", "s") + np.arange(records) * np.timedelta64(300, "s"),
            value_unc=np.full(records, 0.2e-6),
            qcflag=np.where(rng.random(records) < 0.01, "*..", "..."),
            obs_flag=(rng.random(records) > 0.01).astype(int),
            intake_height=np.tile([30.0, 100.0, 300.0, 396.0], records // 4 + 1)[:records],
            with_ids=False,
        )
        ours = best_of(repeat, observations.read, path)
        reference = best_of(repeat, bare_netcdf4, path)
        kept = observations.read(path).sizes["obs"]
    return {
        "case": "obspack_read",
        "records": records,
        "records_kept": kept,
        "seconds": round(ours, 3),
        "reference_seconds": round(reference, 3),
        "read_ratio": round(ours / reference, 2),
        "goal_ratio": 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(obspack_read(args.records, args.repeat)))


if __name__ == "__main__":
    main()
