from __future__ import annotations

import pytest

from agent.carbon.operational import grams, with_carbon
from agent.model import JobEnergy, UnattributedEnergy

KWH = 3.6e6


def test_grams_are_energy_times_pue_times_intensity() -> None:
    assert grams(KWH, 1.0, 400.0) == pytest.approx(400.0)
    assert grams(2 * KWH, 1.5, 100.0) == pytest.approx(300.0)


def test_carbon_is_summed_per_interval_not_average_intensity_times_total() -> None:
    # 3 kWh while the grid is at 100 g/kWh, then 1 kWh at 500 g/kWh.
    intervals = [(3 * KWH, 100.0), (1 * KWH, 500.0)]
    total_g = 0.0
    for energy_j, intensity in intervals:
        charged, left = with_carbon(
            [JobEnergy("slurm:1", "gpu", "nvml", "active", energy_j * 0.75)],
            [UnattributedEnergy("gpu", "nvml", "idle", energy_j * 0.25)],
            1.2,
            intensity,
        )
        total_g += sum(c.carbon_g for c in charged) + sum(u.carbon_g for u in left)
    assert total_g == pytest.approx(1.2 * (3 * 100 + 1 * 500))  # 960 g
    average_times_total = 1.2 * (100 + 500) / 2 * 4
    assert total_g != pytest.approx(average_times_total)  # 1,440 g: what trackers get wrong
