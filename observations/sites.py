"""Where the stations are and which model-data-mismatch category each belongs to.

Files that carry no coordinates (NOAA flask month files, derived CSVs) take them from
:data:`SITES`; files that do carry them (NOAA in-situ, ObsPack, the Southern Ocean list) use
their own. Coordinates: NOAA GML site pages as quoted in ../shared/data/MANIFEST.tsv and the
file headers; altitude is the sampling altitude in metres above sea level. Categories follow
CarbonTracker/CTDAS (``mbl`` marine boundary layer, ``mixed``, ``land`` continental, ``tower``,
``aircraft``); see :mod:`observations.errors` for the mismatch each category gets.
"""

from __future__ import annotations

from typing import NamedTuple


class Site(NamedTuple):
    """A station: name, latitude (degrees_north), longitude (degrees_east), altitude (m asl), category."""

    name: str
    latitude: float
    longitude: float
    altitude: float
    category: str


SITES: dict[str, Site] = {
    "ALT": Site("Alert, Nunavut", 82.45, -62.51, 185.0, "mbl"),
    "BRW": Site("Barrow (Utqiagvik), Alaska", 71.323, -156.611, 27.0, "mbl"),
    "MHD": Site("Mace Head, Ireland", 53.33, -9.90, 5.0, "mbl"),
    "NWR": Site("Niwot Ridge, Colorado", 40.05, -105.59, 3523.0, "mixed"),
    "MLO": Site("Mauna Loa, Hawaii", 19.536, -155.576, 3437.0, "mbl"),
    "KUM": Site("Cape Kumukahi, Hawaii", 19.52, -154.82, 8.0, "mbl"),
    "RPB": Site("Ragged Point, Barbados", 13.17, -59.43, 20.0, "mbl"),
    "ASC": Site("Ascension Island", -7.97, -14.40, 85.0, "mbl"),
    "SMO": Site("Tutuila, American Samoa", -14.247, -170.564, 42.0, "mbl"),
    "CPT": Site("Cape Point, South Africa", -34.3523, 18.4891, 230.0, "mbl"),
    "AMS": Site("Amsterdam Island", -37.7983, 77.5378, 55.0, "mbl"),
    "CGO": Site("Cape Grim, Tasmania", -40.683, 144.69, 164.0, "mbl"),
    "BHD": Site("Baring Head, New Zealand", -41.4083, 174.871, 85.0, "mbl"),
    "CRZ": Site("Crozet Island", -46.4337, 51.8478, 197.0, "mbl"),
    "MQA": Site("Macquarie Island", -54.483, 158.967, 6.0, "mbl"),
    "DRP": Site("Drake Passage (ship)", -59.0, -64.69, 10.0, "mbl"),
    "PSA": Site("Palmer Station, Antarctica", -64.9, -64.0, 10.0, "mbl"),
    "CYA": Site("Casey Station, Antarctica", -66.283, 110.517, 47.0, "mbl"),
    "MAA": Site("Mawson Station, Antarctica", -67.617, 62.867, 32.0, "mbl"),
    "SYO": Site("Syowa Station, Antarctica", -69.0125, 39.59, 14.0, "mbl"),
    "HBA": Site("Halley Station, Antarctica", -75.605, -26.21, 10.0, "mbl"),
    "SPO": Site("South Pole, Antarctica", -89.98, -24.8, 2810.0, "mbl"),
}

#: Category for sites not in :data:`SITES`, by ObsPack/NOAA platform or project word.
PLATFORM_CATEGORY = {"tower": "tower", "aircraft": "aircraft", "shipboard": "mbl", "ship": "mbl", "underway": "mbl"}

#: Category when nothing better is known: continental, the larger (conservative) mismatch.
DEFAULT_CATEGORY = "land"


def site_category(code: str, platform_word: str = "", override: str | dict[str, str] | None = None) -> str:
    """Mismatch category of ``code``: ``override`` (one word or site -> word), then :data:`SITES`,
    then the platform word (tower, aircraft, ship), then :data:`DEFAULT_CATEGORY`."""
    if isinstance(override, str):
        return override
    if override and code in override:
        return override[code]
    if code in SITES:
        return SITES[code].category
    return PLATFORM_CATEGORY.get(platform_word, DEFAULT_CATEGORY)
