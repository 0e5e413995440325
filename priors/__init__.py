"""The prior land flux: drivers, process-model teachers and the land-flux emulator."""
