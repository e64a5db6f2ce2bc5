"""The intensity record every provider returns, and the checks every value passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Above any real grid (coal plants emit about 1,000 g/kWh); a larger value is a unit error.
MAX_PLAUSIBLE_G_PER_KWH = 2000.0
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237  # 453.59237 g per lb, 1,000 kWh per MWh

AVERAGE, MARGINAL = "average", "marginal"
LIFECYCLE, DIRECT = "lifecycle", "direct"


class ProviderError(Exception):
    """A provider could not give a usable value; the message says why."""


@dataclass(frozen=True, slots=True)
class Intensity:
    grams_per_kwh: float
    zone: str
    provider: str
    signal: str  # average or marginal
    basis: str  # lifecycle or direct
    valid_at_unix_s: float  # the moment (or period start) the value describes
    fetched_at_unix_s: float


def checked(value: Intensity) -> Intensity:
    """The value, or ProviderError when it cannot be a real grid's intensity."""
    if not 0 <= value.grams_per_kwh <= MAX_PLAUSIBLE_G_PER_KWH:
        raise ProviderError(
            f"{value.provider} gave {value.grams_per_kwh:g} g/kWh for {value.zone}, outside "
            f"0..{MAX_PLAUSIBLE_G_PER_KWH:g}: rejected"
        )
    return value


class Provider(Protocol):
    name: str
    period_s: float  # how long one value stays current (the data's own resolution)

    def fetch(self, now_unix_s: float) -> Intensity:
        """The value for now; raises ProviderError."""
        ...
