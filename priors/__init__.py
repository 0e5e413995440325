"""The prior land flux: drivers, process-model teachers and the land-flux emulator.

``priors`` never imports ``assim``. Fluxes are PgC yr-1, positive to the atmosphere.
"""

from priors.drivers import DRIVERS, DriverError, default_data_dir, load_drivers
from priors.emulator import EmulatorError, LandFluxEmulator
from priors.prior import land_flux_prior, train_emulator
from priors.teachers import TRANSCOM3_LAND_REGIONS, read_gcb2025_dgvm_sinks, read_trendy_monthly, trendy_models

__all__ = [
    "DRIVERS",
    "TRANSCOM3_LAND_REGIONS",
    "DriverError",
    "EmulatorError",
    "LandFluxEmulator",
    "default_data_dir",
    "land_flux_prior",
    "load_drivers",
    "read_gcb2025_dgvm_sinks",
    "read_trendy_monthly",
    "train_emulator",
    "trendy_models",
]
