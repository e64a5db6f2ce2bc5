"""MIG instances' measured activity, read from the node's dcgm-exporter (nvml.dcgm_exporter_url),
to split a MIG GPU's energy among its instances (attribution.mig_fractions).

NVML samples no utilisation under MIG. DCGM's profiling field DCGM_FI_PROF_GR_ENGINE_ACTIVE
(1001) does, per GPU instance: the fraction of time the instance's engines were busy, of the
instance's own capacity. As Kepler does, it is read over HTTP from dcgm-exporter (the GPU
Operator runs one on every GPU node), not through libdcgm, which is not on the host. A page
without field 1001 is read for DCGM_FI_PROF_SM_ACTIVE (1002), which some H100 setups export
instead.

The page is read on a thread of its own, never in the tick. A reading older than
STALE_AFTER_INTERVALS intervals is not used: the split falls back to slices.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping

from prometheus_client.parser import text_string_to_metric_families

from wattwise.errors import ScrapeError
from wattwise.model import Finding
from wattwise.net.http import HttpClient
from wattwise.service import Service
from wattwise.statelog import ProblemLog

log = logging.getLogger(__name__)

ACTIVITY_FIELDS = ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_SM_ACTIVE")
# The parent GPU's UUID: dcgm-exporter's default label, its --use-old-namespace one, others'.
UUID_LABELS = ("UUID", "uuid", "gpu_uuid")
STALE_AFTER_INTERVALS = 3
MAX_PAGE_BYTES = 8 * 1024 * 1024
MAX_INSTANCES = 1024  # series kept from one page: 8 GPUs x 7 instances is 56

InstanceKey = tuple[str, int]  # (parent GPU UUID, GPU instance id)


def mig_activity(text: str, problems: list[str] | None = None) -> dict[InstanceKey, float]:
    """(parent GPU UUID, GPU instance id) -> busy ratio in [0, 1], from one dcgm-exporter page:
    the first of ACTIVITY_FIELDS it has. Whole-GPU series (no GPU_I_ID) are skipped; a value
    that is not a ratio is skipped and described in `problems`."""
    found: dict[str, dict[InstanceKey, float]] = {name: {} for name in ACTIVITY_FIELDS}
    try:
        for family in text_string_to_metric_families(text):
            if family.name not in found:
                continue
            per_instance = found[family.name]
            for sample in family.samples:
                labels = sample.labels
                gpu_instance = labels.get("GPU_I_ID", "")
                uuid = next((labels[k] for k in UUID_LABELS if k in labels), "")
                if not (gpu_instance.isdigit() and uuid) or len(per_instance) >= MAX_INSTANCES:
                    continue
                key, value = (uuid, int(gpu_instance)), sample.value
                if not (math.isfinite(value) and 0.0 <= value <= 1.0 + 1e-6):
                    if problems is not None:
                        problems.append(f"{sample.name} of {uuid} GPU instance {key[1]} = {value}")
                    continue
                # Several series of one instance (one per compute instance): the busiest.
                per_instance[key] = max(per_instance.get(key, 0.0), min(value, 1.0))
    except ValueError as exc:  # the parser's word for a page that is not exposition format
        raise ScrapeError(f"not Prometheus text format: {exc}") from None
    return next((found[name] for name in ACTIVITY_FIELDS if found[name]), {})


class MigActivity:
    """The latest activity of every MIG instance on the node, read every `interval_s`."""

    def __init__(
        self,
        url: str,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url, self.interval_s, self._clock = url, interval_s, clock
        self._http = HttpClient(deadline_s=min(interval_s, 5.0), max_bytes=MAX_PAGE_BYTES)
        self._bad = ProblemLog(log, "dcgm-exporter's MIG activity is a ratio again: %s")
        self._latest: tuple[float, dict[str, dict[int, float]]] = (-math.inf, {})
        self.service = Service("dcgm-exporter", self.read_once, interval_s)
        self.started = False

    def read_once(self) -> dict[InstanceKey, float]:
        """One read of the page; raises ScrapeError (the service logs it and backs off)."""
        page = self._http.get(self.url, error=ScrapeError).text
        problems: list[str] = []
        values = mig_activity(page, problems)
        if problems:
            self._bad.problem(
                self.url, f"not a ratio, ignored: {'; '.join(problems[:5])}", once=True
            )
        else:
            self._bad.clear(self.url)
        per_gpu: dict[str, dict[int, float]] = {}
        for (uuid, gpu_instance), ratio in values.items():
            per_gpu.setdefault(uuid, {})[gpu_instance] = ratio
        self._latest = (self._clock(), per_gpu)  # one swap: the tick sees this read or the last
        return values

    def start(self) -> None:
        if not self.started:
            self.started = True
            self.service.start()

    def of_gpu(self, uuid: str) -> Mapping[int, float]:
        """GPU instance id -> busy ratio for one GPU; empty where the reading is stale."""
        read_s, values = self._latest
        if self._clock() - read_s > STALE_AFTER_INTERVALS * self.interval_s:
            return {}
        return values.get(uuid, {})

    def probe(self) -> Finding:
        what = ("dcgm-exporter", "mig activity", self.url)
        try:
            values = self.read_once()
        except ScrapeError as exc:
            fix = "check that dcgm-exporter runs on this node with its profiling (DCP) metrics"
            return Finding(*what, False, f"{exc}: MIG GPUs are split by slices", fix)
        if not values:
            fields = " or ".join(ACTIVITY_FIELDS)
            detail = f"no {fields} per GPU instance on the page: MIG GPUs are split by slices"
            fix = "enable the DCP metrics in dcgm-exporter's counters file (dcp-metrics-included)"
            return Finding(*what, False, detail, fix)
        detail = (
            f"{len(values)} MIG GPU instance(s) measured: a MIG GPU's energy above its lowest"
            " power seen is split by activity x slices"
        )
        return Finding(*what, True, detail)

    def close(self) -> None:
        self.service.stop()
        self._http.close()
