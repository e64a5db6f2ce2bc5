"""Configuration: pydantic models filled from defaults < YAML file < WATTWISE_* env < CLI flags.

Nested keys in the environment use a double underscore: WATTWISE_NVML__POWER_POLL_HZ=5. A list
or a mapping is JSON (WATTWISE_CARBON__PROVIDERS='["ukgrid", "table"]'); a list of words may also
be written with commas (WATTWISE_CARBON__PROVIDERS=ukgrid,table). A WATTWISE_ variable that names
no setting is an error, as a misspelt key in the file is. Every error names where the bad value
came from: the file, the variable, or the command line.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from wattwise.errors import ConfigError

DEFAULT_PORT = 9877


DAY_S = 86400.0


class _Section(BaseModel):
    # No NaN or infinity anywhere: every number in the config must be a finite one.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RaplConfig(_Section):
    enabled: bool = Field(True, description="Read CPU and DRAM energy from powercap RAPL zones.")


class HwmonConfig(_Section):
    enabled: bool = Field(
        True,
        description="Read CPU and node power from hwmon sensors where RAPL does not measure the "
        "CPU: amd_energy sockets, NVIDIA Grace's power telemetry, the ACPI power meter.",
    )


class AmdsmiConfig(_Section):
    enabled: bool = Field(
        True,
        description="Read AMD Instinct GPUs through amdsmi where it is installed "
        "(ROCm's copy in the agent's environment: pip install /opt/rocm/share/amd_smi); "
        "without it, or without AMD GPUs, nothing is read.",
    )


class NvmlConfig(_Section):
    enabled: bool = Field(True, description="Read GPU energy and state through NVML.")
    power_poll_hz: float = Field(
        10.0,
        gt=0,
        le=100,
        description="Power polling rate for GPUs without an energy counter (pre-Volta).",
    )
    dcgm_exporter_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="This node's dcgm-exporter /metrics, e.g. http://localhost:9400/metrics: "
        "a MIG GPU's energy is then split by each instance's measured activity "
        "(DCGM_FI_PROF_GR_ENGINE_ACTIVE) and not by slices alone. Read only where a GPU is in "
        "MIG mode.",
    )
    dcgm_exporter_interval_s: float = Field(
        5.0, ge=1, le=300, description="How often dcgm-exporter is read."
    )


class EstimateConfig(_Section):
    enabled: bool = Field(
        True, description="Estimate CPU power from utilisation when no RAPL zone is readable."
    )
    cpu_tdp_w: float = Field(
        100.0, gt=0, le=2000, description="Thermal design power of one CPU socket, in watts."
    )
    cpu_idle_ratio: float = Field(
        0.2, ge=0, le=1, description="Power of an idle socket as a fraction of its TDP."
    )


Scheduler = Literal["slurm", "kubernetes", "docker", "podman", "systemd", "exec"]


class JobsConfig(_Section):
    enabled: bool = Field(True, description="Discover jobs in cgroups and charge energy to them.")
    schedulers: tuple[Scheduler, ...] = Field(
        ("slurm", "kubernetes", "docker", "podman", "exec"),
        description="Which job kinds to account; systemd services are off by default.",
    )
    idle_policy: Literal["reserved", "unattributed"] = Field(
        "reserved",
        description="Idle CPU energy: charged to jobs by the CPUs they reserve, or kept as idle.",
    )
    finished_grace_s: float = Field(
        600.0, ge=0, le=30 * DAY_S, description="How long a finished job stays on /metrics."
    )
    kubelet_url: str | None = Field(
        None, description="Kubelet base URL for pod names, e.g. https://127.0.0.1:10250."
    )
    kubelet_token_file: Path | None = Field(
        Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="Bearer token for the kubelet (the pod's service account token).",
    )
    kubelet_ca_file: Path | None = Field(None, description="CA bundle of the kubelet's cert.")
    kubelet_insecure_skip_verify: bool = Field(
        False, description="Skip TLS verification of the kubelet (self-signed serving certs)."
    )


class LedgerConfig(_Section):
    enabled: bool = Field(True, description="Keep durable per-job accounts.")
    path: Path = Field(Path("/var/lib/wattwise/ledger.db"), description="SQLite ledger file.")
    node: str | None = Field(
        None,
        max_length=253,
        description="This node's name in the ledger and its exports; unset: the hostname (the "
        "DaemonSet sets it from spec.nodeName through WATTWISE_LEDGER__NODE).",
    )
    cluster: str = Field(
        "",
        max_length=253,
        description="The cluster this node belongs to, in the ledger and its exports: the same "
        "name as Prometheus' `cluster` external label (docs/fleet.md).",
    )
    minutely_retention_s: float = Field(
        2 * DAY_S,
        ge=3600,
        le=3660 * DAY_S,
        description="How long per-minute job series are kept (the hourly ones outlive them).",
    )
    hourly_retention_s: float = Field(
        400 * DAY_S, ge=DAY_S, le=3660 * DAY_S, description="How long hourly job series are kept."
    )
    commit_interval_s: float = Field(
        5.0,
        ge=0.05,
        le=300,
        description="How often counted totals are committed to the ledger; /metrics shows only "
        "committed totals, so job counters move at this pace.",
    )


class CarbonConfig(_Section):
    enabled: bool = Field(True, description="Charge operational carbon to jobs and the node.")
    providers: tuple[
        Literal["electricitymaps", "watttime", "ukgrid", "file", "table", "static"], ...
    ] = Field(("table",), min_length=1, description="Intensity providers, preferred first.")
    zone: str = Field(
        "WORLD", description="Grid zone (ISO 3166 code) for the table; WORLD is the average."
    )
    static_g_per_kwh: float | None = Field(
        None, ge=0, le=2000, description="Intensity for the static provider, gCO2e/kWh."
    )
    file_path: Path | None = Field(
        None, description="CSV or JSON series (timestamp, grams_per_kwh) for the file provider."
    )
    file_signal: Literal["average", "marginal"] = Field(
        "average", description="Whether the file's values are average or marginal intensities."
    )
    pue_ratio: float = Field(
        1.0, ge=1.0, le=5.0, description="Facility PUE applied to every interval's energy."
    )
    stale_after_s: float = Field(
        3 * 3600.0,
        gt=0,
        le=30 * DAY_S,
        description="Age after which a failing provider's value is not used.",
    )
    pue_url: str | None = Field(
        None,
        description="A `wattwise facility` /metrics URL: its measured PUE replaces pue_ratio, "
        "which stays the fallback.",
    )
    pue_window: Literal["5m", "1h", "24h"] = Field(
        "1h", description="Which of the facility's PUE windows to charge."
    )
    ukgrid_region_id: int | None = Field(
        None, ge=1, le=17, description="UK Carbon Intensity region (1-17); unset: national."
    )
    ukgrid_url: str = "https://api.carbonintensity.org.uk"
    electricitymaps_token: SecretStr | None = Field(None, description="auth-token for the API.")
    electricitymaps_zone: str | None = Field(None, description="Zone such as DE or US-CAL-CISO.")
    electricitymaps_lat_lon: tuple[float, float] | None = Field(
        None, description="Position instead of a zone: [lat, lon]."
    )
    electricitymaps_basis: Literal["lifecycle", "direct"] = "lifecycle"
    electricitymaps_url: str = "https://api.electricitymap.org"
    watttime_username: str | None = None
    watttime_password: SecretStr | None = None
    watttime_region: str | None = Field(None, description="WattTime region, e.g. CAISO_NORTH.")
    watttime_url: str = "https://api.watttime.org"

    @field_validator("zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from wattwise.carbon.table import ANNUAL_AVERAGES

        if value.upper() not in ANNUAL_AVERAGES:
            choices = ", ".join(sorted(ANNUAL_AVERAGES))
            raise ValueError(f"unknown zone; the table has: {choices}")
        return value.upper()

    @field_validator("electricitymaps_lat_lon")
    @classmethod
    def _on_earth(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not (-90 <= value[0] <= 90 and -180 <= value[1] <= 180):
            raise ValueError("latitude must be within -90..90 and longitude within -180..180")
        return value

    @model_validator(mode="after")
    def _static_has_a_value(self) -> CarbonConfig:
        if "static" in self.providers and self.static_g_per_kwh is None:
            raise ValueError("the static provider needs static_g_per_kwh")
        if "file" in self.providers and self.file_path is None:
            raise ValueError("the file provider needs file_path")
        return self


YEAR_S = 365.25 * 86400
# NVIDIA's product carbon footprint of the HGX H100 8-GPU baseboard: 1,312 kgCO2e cradle to
# gate, so 164 kg per GPU with its share of the board.
H100_EMBODIED_G = 1_312_000 / 8
MAX_EMBODIED_G = 1e9  # a thousand tonnes: far above any one server or GPU


class EmbodiedConfig(_Section):
    enabled: bool = Field(True, description="Charge the hardware's manufacturing carbon to jobs.")
    server_embodied_g: float = Field(
        1_300_000.0,
        ge=0,
        le=MAX_EMBODIED_G,
        description="Manufacturing carbon of the server without GPUs, gCO2e (Dell R740 PCF).",
    )
    server_lifespan_s: float = Field(
        4 * YEAR_S, ge=DAY_S, le=50 * YEAR_S, description="Expected server life, s."
    )
    gpu_embodied_g: dict[str, float] = Field(
        {"H100": H100_EMBODIED_G},
        description="gCO2e per GPU, keyed by a part of the NVML model name (longest match wins).",
    )
    gpu_default_embodied_g: float = Field(
        H100_EMBODIED_G,
        ge=0,
        le=MAX_EMBODIED_G,
        description="gCO2e for a GPU model not in gpu_embodied_g.",
    )
    gpu_lifespan_s: float = Field(
        4 * YEAR_S, ge=DAY_S, le=50 * YEAR_S, description="Expected GPU life, s."
    )

    @field_validator("gpu_embodied_g")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [m for m, grams in value.items() if not 0 <= grams <= MAX_EMBODIED_G or not m]
        if bad:
            raise ValueError(
                f"needs a model name and grams from 0 to {MAX_EMBODIED_G:g}: "
                f"{', '.join(map(repr, bad))}"
            )
        return value


class MeterConfig(_Section):
    """A power or energy meter: its kind, then the fields that kind needs."""

    kind: Literal["prometheus", "redfish", "ipmi", "json"] = Field(
        description="How the meter is read: Prometheus' query API, a Redfish resource, an IPMI "
        "DCMI command, or a JSON file or URL."
    )
    url: str | None = Field(
        None,
        description="prometheus: the API base URL; redfish: the resource URL; json: a URL.",
    )
    query: str | None = Field(None, description="prometheus: PromQL giving energy or power.")
    reading: Literal["energy_j", "power_w"] = Field(
        "energy_j", description="prometheus: whether the query gives energy counters or power."
    )
    scale: float = Field(
        1.0,
        gt=0,
        le=1e9,
        description="prometheus: multiplies the values into J or W (3.6e6 for kWh).",
    )
    username: str | None = Field(None, description="redfish: basic auth user.")
    password: SecretStr | None = Field(None, description="redfish: basic auth password.")
    verify_tls: bool = Field(True, description="redfish/json: verify the server's certificate.")
    command: str = Field(
        "ipmitool dcmi power reading", description="ipmi: the command (add -H/-U/-P for LAN)."
    )
    path: Path | None = Field(None, description="json: a file with power_w and/or energy_j.")

    @model_validator(mode="after")
    def _has_what_its_kind_needs(self) -> MeterConfig:
        needs = {
            "prometheus": ("url", "query"),
            "redfish": ("url",),
            "ipmi": (),
            "json": (),
        }[self.kind]
        missing = [name for name in needs if getattr(self, name) is None]
        if self.kind == "json" and self.url is None and self.path is None:
            missing.append("url or path")
        if missing:
            raise ValueError(f"a {self.kind} meter needs {', '.join(missing)}")
        return self


METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class WorkTarget(_Section):
    """A job's own Prometheus endpoint whose counter is its work (vLLM's generation tokens, a
    training loop's samples). Read for every running job whose name matches `job_name`."""

    job_name: str = Field(
        min_length=1,
        description="Shell pattern over the job's name (Slurm job name, namespace/pod, exec name).",
    )
    url: str = Field(pattern=r"^https?://", description="The job's /metrics URL.")
    metric: str = Field(
        description="The counter's sample name, e.g. vllm:generation_tokens_total; its series "
        "are summed, each reset handled on its own."
    )
    unit: str = Field(description="The work unit the counter counts (one of work.units).")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Only series with these label values."
    )

    @field_validator("metric")
    @classmethod
    def _metric_name(cls, value: str) -> str:
        if not METRIC_NAME.match(value):
            raise ValueError(f"{value!r} is not a Prometheus metric name")
        return value


class WorkConfig(_Section):
    enabled: bool = Field(True, description="Take jobs' work reports on a Unix socket.")
    socket_path: Path = Field(
        Path("/run/wattwise/wattwise.sock"), description="The work API's Unix socket."
    )
    units: tuple[str, ...] = Field(
        ("tokens", "samples", "requests", "images", "steps"),
        min_length=1,
        description="Work units jobs may report (a label value: kept to a known few).",
    )
    targets: tuple[WorkTarget, ...] = Field(
        (), description="Jobs' own /metrics endpoints to read work counters from."
    )
    pod_annotations: bool = Field(
        True,
        description="Read work counters that Kubernetes pods name in wattwise.io/work-* "
        "annotations (needs jobs.kubelet_url).",
    )
    scrape_interval_s: float = Field(
        15.0, ge=1, le=600, description="How often jobs' endpoints are read."
    )
    scrape_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Time limit of one read of a job's endpoint."
    )

    @field_validator("units")
    @classmethod
    def _label_safe(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [u for u in value if not u.isidentifier() or not u.islower()]
        if bad:
            raise ValueError(f"units must be lowercase words: {', '.join(map(repr, bad))}")
        return value

    @model_validator(mode="after")
    def _targets_use_known_units(self) -> WorkConfig:
        for target in self.targets:
            if target.unit not in self.units:
                raise ValueError(
                    f"target for {target.job_name!r} counts {target.unit!r}, not one of "
                    f"work.units ({', '.join(self.units)})"
                )
        return self


PUE_WINDOWS_S = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0}


class FacilityConfig(_Section):
    """`wattwise facility`: one per site, PUE from a facility meter and the IT energy."""

    listen: str = Field("0.0.0.0:9878", description="HOST:PORT of the facility's /metrics.")
    interval_s: float = Field(15.0, ge=0.2, le=300, description="How often both meters are read.")
    meter: MeterConfig | None = Field(None, description="The facility's total power or energy.")
    it: MeterConfig = Field(
        MeterConfig(
            kind="prometheus",
            url="http://localhost:9090",
            query="wattwise_node_total_energy_joules_total",
        ),
        description="IT energy: by default the node agents' counters through Prometheus.",
    )
    it_measured_at: Literal["ups_output", "pdu_output", "it_equipment_input", "components"] = Field(
        "components",
        description="Where the IT meter sits; gives the ISO/IEC 30134-2 category.",
    )
    stale_after_s: float = Field(
        300.0,
        gt=0,
        le=DAY_S,
        description="A meter silent this long is stale; the PUE is not exported.",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen(value)
        return value


class Config(_Section):
    """The agent's whole configuration; every filesystem root is a field, for fixture trees."""

    # At most 60 s: a RAPL package counter (262 kJ range) then wraps at most once per interval up
    # to 4.3 kW per zone; a longer interval could hide a whole wrap, which cannot be detected.
    interval_s: float = Field(1.0, ge=0.05, le=60, description="Sampling interval (one tick).")
    listen: str = Field(
        f"0.0.0.0:{DEFAULT_PORT}", description="HOST:PORT the Prometheus endpoint binds."
    )
    web_config_file: Path | None = Field(
        None,
        description="exporter-toolkit web configuration (TLS, client certificates, basic auth) "
        "for /metrics of both daemons, as node_exporter's --web.config.file.",
    )
    sysfs_root: Path = Field(Path("/sys"), description="Root of sysfs (fixture trees in tests).")
    procfs_root: Path = Field(Path("/proc"), description="Root of procfs.")
    cgroup_root: Path = Field(Path("/sys/fs/cgroup"), description="Root of the cgroup trees.")
    log_level: str = Field("info", description="debug, info, warning or error.")
    rapl: RaplConfig = RaplConfig()
    hwmon: HwmonConfig = HwmonConfig()
    nvml: NvmlConfig = NvmlConfig()
    amdsmi: AmdsmiConfig = AmdsmiConfig()
    estimate: EstimateConfig = EstimateConfig()
    jobs: JobsConfig = JobsConfig()
    ledger: LedgerConfig = LedgerConfig()
    carbon: CarbonConfig = CarbonConfig()
    embodied: EmbodiedConfig = EmbodiedConfig()
    facility: FacilityConfig = FacilityConfig()
    work: WorkConfig = WorkConfig()
    platform: MeterConfig | None = Field(
        None, description="This server's BMC (redfish or ipmi) for its wall input power."
    )
    platform_interval_s: float = Field(
        10.0, ge=1, le=300, description="How often the BMC is asked for the input power."
    )

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        allowed = ("debug", "info", "warning", "error")
        if value.lower() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value.lower()

    @property
    def listen_host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return parse_listen(self.listen)[1]


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT with a port from 0 to 65535, e.g. 0.0.0.0:9877")
    return host.strip("[]") or "0.0.0.0", int(port)


ENV_PREFIX = "WATTWISE_"
NOT_SETTINGS = frozenset({"WATTWISE_CONFIG"})  # the --config option's own variable
MAX_FILE_BYTES = 1 << 20
MAX_VALUES = 100_000  # in the file once YAML aliases are expanded: an alias bomb stops here
MAX_ERRORS_SHOWN = 20
COMMAND_LINE = "the command line"


def load_config(
    path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Builds the effective Config, or raises ConfigError naming the field at fault and where
    its value came from."""
    origins: dict[tuple[str, ...], str] = {}
    merged = _read_yaml(path) if path else {}
    if path:
        origins[()] = str(path)
    _deep_merge(merged, _read_environment(os.environ if environ is None else environ, origins))
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    _deep_merge(merged, flags)
    origins.update({(key,): COMMAND_LINE for key in flags})
    try:
        return Config(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins)) from None


def effective_values(config: Config) -> dict[str, Any]:
    return config.model_dump(mode="json")


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with no anchor or alias at all past a few: configs do not need
    many, and an alias bomb is nothing but them."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > 100:
                raise yaml.YAMLError("more than 100 aliases")
        return super().compose_node(parent, index)


def _read_yaml(path: Path) -> dict[str, Any]:
    return read_yaml_mapping(path, "config file")


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping, read within bounds: 1 MiB of UTF-8, at most 100
    aliases and 100,000 values once they are expanded, no nesting deeper than Python's stack.
    ConfigError naming the file and the problem."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_shorten(str(exc))}") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be a {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not a {kind}")
    if _size_exceeds(data, MAX_VALUES):
        raise ConfigError(f"{path} holds more than {MAX_VALUES} values (aliases expanded)")
    return data


def _size_exceeds(data: Any, limit: int) -> bool:
    """Whether the data holds more than `limit` values once shared references are counted as
    often as they occur (what validation would walk); stops as soon as it knows."""
    pending, seen = [data], 0
    while pending:
        item = pending.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _read_environment(
    environ: Mapping[str, str], origins: dict[tuple[str, ...], str]
) -> dict[str, Any]:
    """Settings from WATTWISE_* variables; records which variable set each."""
    settings: dict[str, Any] = {}
    for name, text in sorted(environ.items()):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in NOT_SETTINGS:
            continue
        path = tuple(name[len(ENV_PREFIX) :].lower().split("__"))
        annotation = _annotation_at(path)
        if annotation is None:
            raise ConfigError(f"{name}: no such setting ({_known_here(path)})")
        node = settings
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: {'.'.join(path[:-1])} is set whole by another variable")
        node[path[-1]] = _env_value(name, text, annotation)
        origins[path] = name
    return settings


def _annotation_at(path: tuple[str, ...]) -> Any:
    """The type of the setting at `path`, or None if there is no such setting."""
    model: type[BaseModel] | None = Config
    annotation: Any = None
    for part in path:
        if model is None:
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        model = _model_in(annotation)
    return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a setting holds (also inside `X | None`), if any."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _known_here(path: tuple[str, ...]) -> str:
    parent = _model_in(_annotation_at(path[:-1])) if len(path) > 1 else Config
    if parent is None:
        return f"{'.'.join(path[:-1])} has no parts"
    where = ".".join(path[:-1]) or "the top level"
    return f"known in {where}: {', '.join(parent.model_fields)}"


def _env_value(name: str, text: str, annotation: Any) -> Any:
    """A variable's text as the setting needs it: JSON for lists and mappings (a list of words
    may be comma-separated), the text itself for anything pydantic converts from text."""
    if not _is_complex(annotation):
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    if _is_sequence(annotation) and re.fullmatch(r"[\w.:/-]+(,[\w.:/-]+)*", text.strip()):
        return [item.strip() for item in text.split(",")]
    example = '["a", "b"]' if _is_sequence(annotation) else '{"key": "value"}'
    raise ConfigError(f"{name}={_shorten(text)!r} is not valid JSON; write it as {example}")


def _is_complex(annotation: Any) -> bool:
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return any(
        typing.get_origin(option) in (list, tuple, dict, set)
        or option in (list, tuple, dict, set)
        or _model_in(option) is not None
        for option in options
        if option is not type(None)
    )


def _is_sequence(annotation: Any) -> bool:
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return any(typing.get_origin(option) in (list, tuple, set) for option in options)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> None:
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _describe(exc: ValidationError, origins: Mapping[tuple[str, ...], str]) -> str:
    errors = exc.errors()
    lines = ["invalid configuration:"]
    for error in errors[:MAX_ERRORS_SHOWN]:
        loc = tuple(str(part) for part in error["loc"])
        field = ".".join(loc) or "(top level)"
        origin = _origin(loc, origins)
        if error["type"] == "extra_forbidden":
            parent = _model_at(error["loc"][:-1])
            allowed = ", ".join(parent.model_fields) if parent else "?"
            lines.append(f"  {field}: unknown key (allowed here: {allowed}){origin}")
        elif error["type"] == "model_type":  # pydantic names the section's class: ours, not theirs
            section = _model_at(error["loc"])
            keys = ", ".join(section.model_fields) if section else "?"
            value = _shorten(repr(error["input"]))
            hint = ""
            flag = error["input"]
            if (
                isinstance(flag, bool)
                and len(loc) == 1
                and section
                and "enabled" in section.model_fields
            ):
                hint = f"; did you mean {field}: {{enabled: {str(flag).lower()}}}"
            lines.append(f"  {field} = {value}: must be a section with keys {keys}{hint}{origin}")
        else:
            message = error["msg"].removeprefix("Value error, ")
            value = _shorten(repr(error["input"]))
            lines.append(f"  {field} = {value}: {message}{origin}")
    if len(errors) > MAX_ERRORS_SHOWN:
        lines.append(f"  ... and {len(errors) - MAX_ERRORS_SHOWN} more")
    return "\n".join(lines)


def _origin(loc: tuple[str, ...], origins: Mapping[tuple[str, ...], str]) -> str:
    """' (from X)' for the longest known prefix of the field's path."""
    for length in range(len(loc), -1, -1):
        found = origins.get(loc[:length])
        if found is not None:
            return f" (from {found})"
    return ""


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        inner = _model_in(field.annotation) if field else None
        if inner is None:
            return None
        model = inner
    return model
