"""Fixed intensities: a configured value, or bundled annual averages per zone.

The table holds only figures checked against the source named on each row. A zone it does not
hold falls back to the world average, loudly; use a live provider or `static` for it.
"""

from __future__ import annotations

import logging
import math

from wattwise.carbon.intensity import AVERAGE, LIFECYCLE, Intensity

log = logging.getLogger(__name__)

OWID = "Ember and Energy Institute via Our World in Data, lifecycle gCO2e/kWh"
EMBER_EU = "Ember European Electricity Review, gCO2e/kWh"

# zone -> (g/kWh, year, source)
ANNUAL_AVERAGES: dict[str, tuple[float, int, str]] = {
    "WORLD": (481.0, 2023, "Ember Global Electricity Review 2024"),
    "AT": (111.0, 2023, OWID),
    "AU": (549.0, 2023, OWID),
    "BE": (138.0, 2023, OWID),
    "BG": (335.0, 2023, OWID),
    "BR": (98.0, 2023, OWID),
    "CA": (170.0, 2023, OWID),
    "CL": (291.0, 2023, OWID),
    "CN": (530.6, 2023, "China MEE/NBS national average grid emission factor (0.5306 kg/kWh)"),
    "CO": (260.0, 2023, OWID),
    "CZ": (450.0, 2023, OWID),
    "DE": (381.0, 2023, OWID),
    "DK": (152.0, 2023, OWID),
    "FI": (79.0, 2023, OWID),
    "FR": (56.0, 2023, OWID),
    "GR": (337.0, 2023, OWID),
    "HU": (204.0, 2023, OWID),
    "IE": (291.0, 2023, OWID),
    "IN": (713.0, 2023, OWID),
    "NO": (30.0, 2023, "Ember, power sector emissions intensity"),
    "PL": (662.0, 2023, EMBER_EU),
    "SE": (40.7, 2023, EMBER_EU),
}


class StaticProvider:
    name = "static"
    local = True  # needs no network: asked at startup
    period_s = float("inf")  # a value that never changes, and never ages (valid until inf)

    def __init__(self, grams_per_kwh: float, zone: str = "static") -> None:
        self.grams_per_kwh = grams_per_kwh
        self.zone = zone

    def fetch(self, now_unix_s: float) -> Intensity:
        return Intensity(
            self.grams_per_kwh,
            self.zone,
            self.name,
            AVERAGE,
            LIFECYCLE,
            now_unix_s,
            now_unix_s,
            math.inf,
        )


class TableProvider:
    name = "table"
    local = True
    period_s = float("inf")

    def __init__(self, zone: str) -> None:
        self.zone = zone.upper()
        if self.zone not in ANNUAL_AVERAGES:
            log.warning(
                "zone %s is not in the bundled table: using the WORLD average (%g g/kWh). "
                "Carbon figures for this node are a rough guess; configure a live provider "
                "or a static value.",
                self.zone,
                ANNUAL_AVERAGES["WORLD"][0],
            )
        self.row = ANNUAL_AVERAGES.get(self.zone, ANNUAL_AVERAGES["WORLD"])

    def fetch(self, now_unix_s: float) -> Intensity:
        zone = self.zone if self.zone in ANNUAL_AVERAGES else "WORLD"
        return Intensity(
            self.row[0], zone, self.name, AVERAGE, LIFECYCLE, now_unix_s, now_unix_s, math.inf
        )
