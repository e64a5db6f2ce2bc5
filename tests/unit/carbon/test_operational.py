from __future__ import annotations

import pytest

from tests.unit.test_attribution import domain_energy
from wattwise.attribution import attribute_tick
from wattwise.carbon.operational import grams, grams_per_joule
from wattwise.model import CpuActivity

KWH = 3.6e6


def test_grams_are_energy_times_pue_times_intensity() -> None:
    assert grams(KWH, 1.0, 400.0) == pytest.approx(400.0)
    assert grams(2 * KWH, 1.5, 100.0) == pytest.approx(300.0)


def test_carbon_is_summed_per_interval_not_average_intensity_times_total() -> None:
    # 3 kWh while the grid is at 100 g/kWh, then 1 kWh at 500 g/kWh.
    intervals = [(3 * KWH, 100.0), (1 * KWH, 500.0)]
    total_g = 0.0
    for energy_j, intensity in intervals:
        # The GPU is busy with one job for 3/4 of the interval's energy; the CPU idles.
        charged, left = attribute_tick(
            [
                domain_energy("gpu", "0", "nvml", energy_j * 0.75),
                domain_energy("package", "0", "rapl", energy_j * 0.25),
            ],
            CpuActivity(0.0, 10.0, {}, {}, 8),
            {0: {"slurm:1": 50.0}},
            grams_per_j=grams_per_joule(1.2, intensity),
        )
        total_g += sum(c.carbon_g for c in charged) + sum(u.carbon_g for u in left)
        assert [c.carbon_g for c in charged] == [grams(energy_j * 0.75, 1.2, intensity)]
    assert total_g == pytest.approx(1.2 * (3 * 100 + 1 * 500))  # 960 g
    average_times_total = 1.2 * (100 + 500) / 2 * 4
    assert total_g != pytest.approx(average_times_total)  # 1,440 g: what trackers get wrong
