"""Units shared by observations, priors and the inversion: one pint registry, one conversion table.

Carbon masses are in PgC (= GtC); CO2 amounts are dry-air mole fractions in ppm.
A flux is positive *to the atmosphere* everywhere inside the code; user-facing
tables name ``land_sink`` explicitly as positive uptake.
"""

from __future__ import annotations

import re
import tokenize

import numpy as np
import pint


def _cf_exponents(units: str) -> str:
    """CF/UDUNITS spelling ("kgC m-2 s-1") -> pint spelling ("kgC m**-2 s**-1")."""
    return re.sub(r"(?<=[A-Za-z)])(-?\d+)", r"**\1", units)


ureg = pint.UnitRegistry(preprocessors=[_cf_exponents])
ureg.define("PgC = 1e15 * gram")
ureg.define("GtC = PgC")
ureg.define("TgC = 1e12 * gram")
ureg.define("gC = gram")
ureg.define("kgC = kilogram")
ureg.define("ppb = 1e-9")
ureg.define("nmol_per_mol = ppb")
ureg.define("umol_per_mol = ppm")
Quantity = ureg.Quantity

#: Mass of carbon that raises the global mean CO2 dry-air mole fraction by 1 ppm
#: (Ballantyne et al. 2012; Friedlingstein et al. 2025, Global Carbon Budget).
PGC_PER_PPM = Quantity(2.124, "PgC / ppm")

SECONDS_PER_YEAR = Quantity(1, "year").to("s").magnitude
"""Julian year in seconds (365.25 d), pint's ``year``."""


def convert(values: np.ndarray | float, from_units: str, to_units: str) -> np.ndarray:
    """Convert ``values`` between unit strings with pint; raise ``ValueError`` naming both units."""
    try:
        return np.asarray(Quantity(np.asarray(values, dtype=float), from_units).to(to_units).magnitude)
    except (
        pint.errors.PintError,
        AttributeError,
        TypeError,
        # pint's parser lets these through for malformed strings ("mol mol-1(", "ppm ppm -", ...)
        SyntaxError,
        tokenize.TokenError,
        AssertionError,
        IndexError,
        KeyError,
    ) as err:
        raise ValueError(f"cannot convert {from_units!r} to {to_units!r}: {err}") from err


def ppm_to_pgc(ppm: np.ndarray | float) -> np.ndarray:
    """Global-mean CO2 mole fraction change (ppm) -> atmospheric carbon mass change (PgC)."""
    return np.asarray(ppm, dtype=float) * PGC_PER_PPM.to("PgC/ppm").magnitude


def pgc_to_ppm(pgc: np.ndarray | float) -> np.ndarray:
    """Atmospheric carbon mass change (PgC) -> global-mean CO2 mole fraction change (ppm)."""
    return np.asarray(pgc, dtype=float) / PGC_PER_PPM.to("PgC/ppm").magnitude
