"""Operational carbon of one interval: energy x PUE(t) x grid intensity(t). Pure.

Summed interval by interval, never an average intensity times a total energy, so a job that
ran while the grid was clean is charged less than one that ran while it was dirty. The tick
charges each share's grams as it splits the energy (attribution.attribute_tick).
"""

from __future__ import annotations

from wattwise.model import J_PER_KWH


def grams_per_joule(pue_ratio: float, grams_per_kwh: float) -> float:
    return pue_ratio * grams_per_kwh / J_PER_KWH


def grams(energy_j: float, pue_ratio: float, grams_per_kwh: float) -> float:
    return energy_j * grams_per_joule(pue_ratio, grams_per_kwh)
