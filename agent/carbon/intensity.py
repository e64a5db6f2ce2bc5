"""The intensity record every provider returns, and the checks every value passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wattwise.errors import ProviderError

# Above any real grid (coal plants emit about 1,000 g/kWh); a larger value is a unit error.
MAX_PLAUSIBLE_G_PER_KWH = 2000.0
# What a provider's parser takes as a number at all: finite, and far from overflowing anything.
# Whether it is a plausible intensity is checked() afterwards, for every provider alike.
ANY_G = 1e9
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237  # 453.59237 g per lb, 1,000 kWh per MWh

AVERAGE, MARGINAL = "average", "marginal"
LIFECYCLE, DIRECT = "lifecycle", "direct"


@dataclass(frozen=True, slots=True)
class Intensity:
    grams_per_kwh: float
    zone: str
    provider: str
    signal: str  # average or marginal
    basis: str  # lifecycle or direct
    valid_at_unix_s: float  # the moment (or period start) the value describes
    fetched_at_unix_s: float
    valid_until_unix_s: float | None = None  # the end of the period it describes, if known

    def age_s(self, now_unix_s: float) -> float:
        """How old the data is: zero inside the period it describes, then the time since."""
        end = self.valid_until_unix_s
        return max(now_unix_s - (self.valid_at_unix_s if end is None else end), 0.0)


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
    # local = True on providers that need no network (asked at startup); absent means False

    def fetch(self, now_unix_s: float) -> Intensity:
        """The value for now; raises ProviderError."""
        ...
