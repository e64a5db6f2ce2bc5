"""Operational carbon of one interval: energy x PUE(t) x grid intensity(t). Pure.

Summed interval by interval, never an average intensity times a total energy, so a job that
ran while the grid was clean is charged less than one that ran while it was dirty.
"""

from __future__ import annotations

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
    # Built directly, not with dataclasses.replace: this runs for every share of every tick.
    per_j = pue_ratio * grams_per_kwh / J_PER_KWH
    return (
        [
            JobEnergy(c.job_key, c.domain, c.source, c.state, c.energy_j, c.energy_j * per_j)
            for c in charged
        ],
        [
            UnattributedEnergy(u.domain, u.source, u.reason, u.energy_j, u.energy_j * per_j)
            for u in left
        ],
    )
