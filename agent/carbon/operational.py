"""Operational carbon of one interval: energy x PUE(t) x grid intensity(t). Pure.

Summed interval by interval, never an average intensity times a total energy, so a job that
ran while the grid was clean is charged less than one that ran while it was dirty.
"""

from __future__ import annotations

from dataclasses import replace

from agent.model import JobEnergy, UnattributedEnergy

J_PER_KWH = 3.6e6


def grams(energy_j: float, pue_ratio: float, grams_per_kwh: float) -> float:
    return energy_j / J_PER_KWH * pue_ratio * grams_per_kwh


def with_carbon(
    charged: list[JobEnergy],
    left: list[UnattributedEnergy],
    pue_ratio: float,
    grams_per_kwh: float,
) -> tuple[list[JobEnergy], list[UnattributedEnergy]]:
    return (
        [replace(c, carbon_g=grams(c.energy_j, pue_ratio, grams_per_kwh)) for c in charged],
        [replace(u, carbon_g=grams(u.energy_j, pue_ratio, grams_per_kwh)) for u in left],
    )
