"""Energy of GPUs without NVML's energy counter (before Volta): their power is polled on a
service of its own and integrated. On A100/H100 a power reading averages 25 ms of every 100 ms,
so polled energy is an approximation, exported with source="nvml_power"."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from wattwise.checks import BadNumber, number
from wattwise.errors import VendorError
from wattwise.service import Service
from wattwise.sources.nvml_calls import vendor_call

if TYPE_CHECKING:
    from wattwise.sources.nvml import _Gpu


@dataclass(slots=True)
class _Integral:
    energy_uj: float = 0.0
    last_power_w: float | None = None
    last_monotonic_s: float = 0.0
    error: str | None = None


class PowerIntegrator:
    """Polls the power of counter-less GPUs and integrates it (trapezoids) into microjoules."""

    def __init__(self, nvml: ModuleType, gpus: list[_Gpu], poll_hz: float) -> None:
        self._nvml = nvml
        self._gpus = gpus
        self._period_s = 1.0 / poll_hz
        self._lock = threading.Lock()
        self._integrals = {gpu.index: _Integral() for gpu in gpus}
        self.service = Service("nvml-power-poll", self.poll_once, self._period_s)

    def start(self) -> None:
        self.poll_once()
        self.service.start()

    def poll_once(self) -> None:
        for gpu in self._gpus:
            try:
                milliwatts = vendor_call(self._nvml, self._nvml.nvmlDeviceGetPowerUsage, gpu.handle)
                power_w = number(milliwatts, f"NVML power of GPU {gpu.index}", 0, 1e8) / 1000.0
                error = None
            except (VendorError, BadNumber) as exc:
                power_w, error = None, f"power reading failed: {exc}"
            now = time.monotonic()
            with self._lock:
                integral = self._integrals[gpu.index]
                if power_w is not None and integral.last_power_w is not None:
                    dt = now - integral.last_monotonic_s
                    integral.energy_uj += (power_w + integral.last_power_w) / 2 * dt * 1e6
                # A failed poll leaves a gap that is not integrated (nothing is known of it).
                integral.last_power_w = power_w
                integral.last_monotonic_s = now
                integral.error = error

    def energy_uj(self, index: int) -> tuple[int | None, str | None]:
        with self._lock:
            integral = self._integrals[index]
            if integral.error:
                return None, integral.error
            return int(integral.energy_uj), None

    def stop(self) -> None:
        self.service.stop()
