"""A site's own intensity series from a local file (a utility's export, a PPA schedule).

CSV with a header naming `timestamp` and `grams_per_kwh`, or JSON: a list of objects with those
keys. A timestamp is ISO 8601 with an offset ("2026-11-23T12:00:00Z", "...+01:00") or unix
seconds; a timestamp without an offset is refused, since guessing the zone would shift every
value by hours. Each value holds from its timestamp until the next one; the last holds for as
long as the series' typical step, after which the file has nothing for "now" and the chain falls
back. The file is read again when its modification time changes; a broken new version is
reported and the last good one is kept.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import logging
import math
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

from wattwise.carbon.intensity import AVERAGE, LIFECYCLE, Intensity, ProviderError
from wattwise.filestamp import Stamp, file_stamp

log = logging.getLogger(__name__)

TIME_KEY, VALUE_KEY = "timestamp", "grams_per_kwh"


class FileProvider:
    name = "file"
    local = True  # a local file: asked at startup

    def __init__(self, path: Path, zone: str = "file", signal: str = AVERAGE) -> None:
        self.path = Path(path)
        self.zone = zone
        self.signal = signal
        self._stamp: Stamp | None = None
        self._times: list[float] = []
        self._values: list[float] = []
        self._step_s = 0.0
        self._load_error: str | None = None
        # Asked again at the series' own resolution, at least once a minute: a local read is
        # cheap, and a new version of the file is picked up within that time.
        self.period_s = 60.0

    def fetch(self, now_unix_s: float) -> Intensity:
        self._reload_if_changed()
        if not self._times:
            raise ProviderError(self._load_error or f"{self.path}: no values")
        at = bisect.bisect_right(self._times, now_unix_s) - 1
        if at < 0:
            raise ProviderError(f"{self.path}: the series starts after now ({self._iso(0)})")
        if at == len(self._times) - 1 and now_unix_s - self._times[at] >= self._step_s:
            raise ProviderError(f"{self.path}: the series ends at {self._iso(at)}, nothing for now")
        until = self._times[at + 1] if at + 1 < len(self._times) else self._times[at] + self._step_s
        return Intensity(
            self._values[at],
            self.zone,
            self.name,
            self.signal,
            LIFECYCLE,
            self._times[at],
            now_unix_s,
            until,
        )

    def _iso(self, index: int) -> str:
        return datetime.fromtimestamp(self._times[index]).astimezone().isoformat()

    def _reload_if_changed(self) -> None:
        try:
            stamp = file_stamp(self.path)
        except OSError as exc:
            raise ProviderError(f"{self.path}: {exc.strerror or exc}") from None
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            rows = read_series(self.path)
        except ProviderError as exc:
            repeated, self._load_error = str(exc) == self._load_error, str(exc)
            if self._times:  # a half-written or broken new version: keep serving the last good
                if not repeated:  # once, not again when the same broken file settles
                    log.warning("%s; the previous version stays in use", exc)
                return
            raise
        self._load_error = None
        self._times = [t for t, _ in rows]
        self._values = [g for _, g in rows]
        steps = [b - a for a, b in itertools.pairwise(self._times)]
        self._step_s = statistics.median(steps) if steps else 3600.0
        self.period_s = min(max(self._step_s, 1.0), 60.0)


def read_series(path: Path) -> list[tuple[float, float]]:
    """(unix seconds, g/kWh) rows sorted by time; ProviderError naming the line at fault."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProviderError(f"{path}: cannot read: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            records = json.loads(text)
        except ValueError as exc:
            raise ProviderError(f"{path}: not JSON: {exc}") from None
        if not isinstance(records, list):
            raise ProviderError(f"{path}: expected a list of {{timestamp, grams_per_kwh}}")
        numbered = [(f"item {i}", r) for i, r in enumerate(records)]
    else:
        reader = csv.DictReader(text.splitlines())
        missing = {TIME_KEY, VALUE_KEY} - set(reader.fieldnames or ())
        if missing:
            raise ProviderError(f"{path}: the header needs {TIME_KEY},{VALUE_KEY}")
        numbered = [(f"line {reader.line_num}", row) for row in reader]
    rows = [_row(path, where, record) for where, record in numbered]
    if not rows:
        raise ProviderError(f"{path}: no rows")
    rows.sort()
    for (a, _), (b, _) in itertools.pairwise(rows):
        if a == b:
            raise ProviderError(f"{path}: two values for the same time {a:g}")
    return rows


def _row(path: Path, where: str, record: Any) -> tuple[float, float]:
    if not isinstance(record, dict):
        raise ProviderError(f"{path} {where}: not an object")
    try:
        grams = float(record[VALUE_KEY])
        stamp = record[TIME_KEY]
    except (KeyError, TypeError, ValueError):
        needs = f"needs a number {VALUE_KEY} and a {TIME_KEY}"
        raise ProviderError(f"{path} {where}: {needs}") from None
    if not math.isfinite(grams):
        raise ProviderError(f"{path} {where}: {VALUE_KEY} is not a finite number")
    return _timestamp(path, where, stamp), grams


def _timestamp(path: Path, where: str, stamp: Any) -> float:
    text = str(stamp).strip()
    try:
        return float(text)  # unix seconds
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ProviderError(f"{path} {where}: not a timestamp: {text!r}") from None
    if moment.tzinfo is None:
        raise ProviderError(f"{path} {where}: {text!r} has no UTC offset (add Z or +HH:MM)")
    return moment.timestamp()
