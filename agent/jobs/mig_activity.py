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
from collections.abc import Callable, Collection, Mapping

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
MAX_GPUS, MAX_PER_GPU = 64, 16  # read from one page: 8 GPUs of 7 instances is the most seen
_WANTED = ACTIVITY_FIELDS + tuple(
    f"# {kind} {name}" for kind in ("HELP", "TYPE") for name in ACTIVITY_FIELDS
)

InstanceKey = tuple[str, int]  # (parent GPU UUID, GPU instance id)


def mig_activity(
    text: str, problems: list[str] | None = None, uuids: Collection[str] | None = None
) -> dict[InstanceKey, float]:
    """(parent GPU UUID, GPU instance id) -> busy ratio in [0, 1], from one dcgm-exporter page:
    the first of ACTIVITY_FIELDS it has, for the GPUs in `uuids` (all when None: a page may be
    another node's, or name GPUs that do not exist). Whole-GPU series are skipped; a value
    that is not a ratio, and series past MAX_GPUS GPUs or MAX_PER_GPU instances of one, are
    skipped and described in `problems`."""
    problems = problems if problems is not None else []
    found: dict[str, dict[InstanceKey, float]] = {name: {} for name in ACTIVITY_FIELDS}
    try:
        for family in text_string_to_metric_families(_activity_lines(text)):
            if family.name not in found:
                continue
            per_instance = found[family.name]
            gpus: dict[str, int] = {}  # parent UUID -> its instances read
            for sample in family.samples:
                labels = sample.labels
                gpu_instance = labels.get("GPU_I_ID", "")
                uuid = next((labels[k] for k in UUID_LABELS if k in labels), "")
                if not (uuid and gpu_instance.isascii() and gpu_instance.isdecimal()):
                    continue  # the whole GPU's series, or no instance id
                if uuids is not None and uuid not in uuids:
                    continue
                if len(gpu_instance) > 4:
                    _note(problems, f"{sample.name}: GPU_I_ID {gpu_instance[:12]}... is no id")
                    continue
                key, value = (uuid, int(gpu_instance)), sample.value
                if key not in per_instance:
                    if gpus.get(uuid, 0) >= MAX_PER_GPU or (
                        uuid not in gpus and len(gpus) >= MAX_GPUS
                    ):
                        _note(
                            problems,
                            f"{sample.name}: past {MAX_GPUS} GPUs or {MAX_PER_GPU} instances"
                            " of one, ignored",
                        )
                        continue
                    gpus[uuid] = gpus.get(uuid, 0) + 1
                if not (math.isfinite(value) and 0.0 <= value <= 1.0 + 1e-6):
                    _note(problems, f"{sample.name} of {uuid} GPU instance {key[1]} = {value}")
                    continue
                # Several series of one instance (one per compute instance): the busiest.
                per_instance[key] = max(per_instance.get(key, 0.0), min(value, 1.0))
    except ValueError as exc:  # the parser's word for a page that is not exposition format
        raise ScrapeError(f"not Prometheus text format: {exc}") from None
    return next((found[name] for name in ACTIVITY_FIELDS if found[name]), {})


def _note(problems: list[str], problem: str) -> None:
    if len(problems) < 10:  # a page of a million bad series is ten lines of log
        problems.append(problem)


def _activity_lines(text: str) -> str:
    """The page's activity series and their HELP and TYPE lines only: the parser is pure
    Python, and a node's page holds hundreds of other series (an 8 MiB page parsed whole took
    1.8 s of the GIL)."""
    return "".join(line for line in text.splitlines(keepends=True) if line.startswith(_WANTED))


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
        self._uuids: frozenset[str] | None = None  # this node's MIG GPUs, once known

    def read_once(self) -> dict[InstanceKey, float]:
        """One read of the page; raises ScrapeError (the service logs it and backs off)."""
        page = self._http.get(self.url, error=ScrapeError).text
        problems: list[str] = []
        values = mig_activity(page, problems, self._uuids)
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

    def start(self, uuids: Collection[str]) -> None:
        """Reads the page for these GPUs (this node's in MIG mode) from now on."""
        wanted = frozenset(uuids)
        if wanted != self._uuids:
            self._uuids = wanted  # one swap: the reading thread sees the old set or the new
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
            if self._uuids is not None:
                detail = (
                    f"no {fields} per GPU instance of this node's MIG GPUs on the page (is it"
                    " another node's dcgm-exporter?): they are split by slices"
                )
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
