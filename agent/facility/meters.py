"""Power and energy meters outside the node: facility meters, rack PDUs, BMCs.

Each meter returns a reading in watts, joules or both; the caller integrates power or takes
counter deltas. Kinds:
- `prometheus`: a PromQL query against any Prometheus-compatible HTTP API (/api/v1/query), for
  a meter an SNMP or BMS exporter already scrapes; the vector's values are summed per series.
- `redfish`: a Redfish resource: Power (PowerControl[].PowerConsumedWatts), EnvironmentMetrics
  or PowerDistributionMetrics (EnergykWh.Reading, PowerWatts.Reading), or a Sensor (Reading of
  ReadingType Power or EnergykWh).
- `ipmi`: `ipmitool dcmi power reading` (instantaneous watts), both output layouts.
- `json`: a file or HTTP endpoint answering {"power_w": ...} and/or {"energy_j": ...}.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattwise.checks import BadNumber, number
from wattwise.errors import MeterError
from wattwise.model import J_PER_KWH, MeterReading
from wattwise.net.http import HttpClient, get_json

if TYPE_CHECKING:
    from wattwise.config import MeterConfig


MAX_READING = 1e18  # watts or joules: above any facility; a larger figure is a fault


def _number(value: Any, what: str) -> float:
    """A meter's reading: a number, or a number as text (Prometheus' API gives strings)."""
    try:
        return number(float(value) if isinstance(value, str) else value, what, 0, MAX_READING)
    except ValueError:
        raise MeterError(f"{what} is not a number: {value!r:.40}") from None
    except BadNumber:
        raise MeterError(f"{what} is not a usable reading: {value!r:.40}") from None


def http_client(verify: bool | str = True) -> HttpClient:
    return HttpClient(deadline_s=5.0, verify=verify)  # meters are local: a short deadline


class PrometheusMeter:
    """`kind` says what the query returns: energy_j (counters) or power_w; `scale` converts
    the query's unit to joules or watts (3.6e6 for kWh, 1000 for kW)."""

    def __init__(
        self, url: str, query: str, kind: str = "energy_j", scale: float = 1.0, http=None
    ) -> None:
        self.url = url.rstrip("/") + "/api/v1/query"
        self.query, self.kind, self.scale = query, kind, scale
        self.http = http or http_client()
        self.name = f"prometheus {query}"

    def read(self) -> MeterReading:
        body = get_json(self.http, self.url, error=MeterError, params={"query": self.query})
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise MeterError(f"{self.url} query {self.query!r} failed: {error or body!r:.200}")
        try:
            series = _query_series(body.get("data"))
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise MeterError(
                f"query {self.query!r}: unexpected answer shape ({exc!r:.80})"
            ) from None
        if not series:
            raise MeterError(f"query {self.query!r} matched no series")
        values = {k: _number(v, f"query {self.query!r}") * self.scale for k, v in series.items()}
        now = time.time()
        if self.kind == "power_w":
            return MeterReading(now, power_w=sum(values.values()))
        return MeterReading(now, energy_j=sum(values.values()), energy_series_j=values)


def _query_series(data: Any) -> dict[str, Any]:
    """Series key -> its value, from /api/v1/query's data: a vector or a scalar."""
    if not isinstance(data, dict):
        raise MeterError(f"the answer's data is {type(data).__name__}, not an object")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return {"": result[1]}
    if kind == "vector" and isinstance(result, list):
        return {json.dumps(r["metric"], sort_keys=True): r["value"][1] for r in result}
    raise MeterError(f"the query gave {kind!r:.40}, not a vector or scalar")


def parse_redfish(body: Any) -> tuple[float | None, float | None]:
    """(watts, joules) from a Redfish Power, EnvironmentMetrics, PowerDistributionMetrics or
    Sensor resource; either may be None, not both."""
    if not isinstance(body, dict):
        raise MeterError("the Redfish resource is not a JSON object")
    power_w = energy_j = None
    controls = body.get("PowerControl")
    if isinstance(controls, list):
        readings = [c.get("PowerConsumedWatts") for c in controls if isinstance(c, dict)]
        readings = [r for r in readings if r is not None]
        if readings:
            power_w = _number(readings[0], "PowerControl[0].PowerConsumedWatts")
    for key, unit in (("PowerWatts", "W"), ("EnergykWh", "kWh")):
        excerpt = body.get(key)
        if isinstance(excerpt, dict) and excerpt.get("Reading") is not None:
            value = _number(excerpt["Reading"], f"{key}.Reading")
            if unit == "W":
                power_w = value
            else:
                energy_j = value * J_PER_KWH
    if "Reading" in body and body.get("Reading") is not None:  # a Sensor resource
        reading_type = body.get("ReadingType")
        value = _number(body["Reading"], "Sensor Reading")
        if reading_type == "EnergykWh" or body.get("ReadingUnits") == "kW.h":
            energy_j = value * J_PER_KWH
        elif reading_type == "Power" or body.get("ReadingUnits") == "W":
            power_w = value
        else:
            raise MeterError(f"a Sensor of ReadingType {reading_type!r} is not power or energy")
    if power_w is None and energy_j is None:
        raise MeterError(
            "no power or energy in the Redfish resource (looked for PowerControl, PowerWatts, "
            "EnergykWh, and a Sensor's Reading)"
        )
    return power_w, energy_j


class RedfishMeter:
    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        verify: bool | str = True,
        http=None,
    ) -> None:
        self.url = url
        self.auth = (username, password or "") if username else None
        self.http = http or http_client(verify)
        self.name = f"redfish {url}"

    def read(self) -> MeterReading:
        body = get_json(self.http, self.url, error=MeterError, auth=self.auth)
        try:
            power_w, energy_j = parse_redfish(body)
        except MeterError as exc:
            raise MeterError(f"{self.url}: {exc}") from None
        return MeterReading(time.time(), power_w=power_w, energy_j=energy_j)


_DCMI_WATTS = re.compile(r"Instantaneous power reading:\s*(\d+(?:\.\d+)?)\s*Watts")
_DCMI_STATE = re.compile(r"Power reading state is:\s*(\w+)")


def parse_dcmi(text: str) -> float:
    """Watts from `ipmitool dcmi power reading`. Matched by label, not by line, because newer
    ipmitool prints the timestamp and "Sampling period" on one line."""
    state = _DCMI_STATE.search(text)
    if state and state.group(1).lower() != "activated":
        raise MeterError(f"the BMC's power reading is {state.group(1)}: its value is not measured")
    watts = _DCMI_WATTS.search(text)
    if watts is None:
        raise MeterError("no 'Instantaneous power reading' in the ipmitool output")
    return float(watts.group(1))


class IpmiMeter:
    def __init__(self, command: str = "ipmitool dcmi power reading", timeout_s: float = 10.0):
        self.argv = shlex.split(command)
        self.timeout_s = timeout_s
        self.name = f"ipmi {self.argv[0]}"

    def read(self) -> MeterReading:
        try:
            done = subprocess.run(
                self.argv, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except FileNotFoundError:
            raise MeterError(f"{self.argv[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise MeterError(f"{self.argv[0]} took longer than {self.timeout_s:g} s") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise MeterError(f"{self.argv[0]} failed ({done.returncode}): {last}")
        return MeterReading(time.time(), power_w=parse_dcmi(done.stdout))


class JsonMeter:
    """A file or an http(s) URL whose JSON object has power_w and/or energy_j."""

    def __init__(self, location: str, http=None) -> None:
        self.location = location
        self.is_url = location.startswith(("http://", "https://"))
        self.http = http or (http_client() if self.is_url else None)
        self.name = f"json {location}"

    def read(self) -> MeterReading:
        if self.is_url:
            body = get_json(self.http, self.location, error=MeterError)
        else:
            try:
                body = json.loads(Path(self.location).read_text())
            except OSError as exc:
                raise MeterError(f"{self.location}: {exc.strerror or exc}") from None
            except ValueError:
                raise MeterError(f"{self.location} is not JSON") from None
        if not isinstance(body, dict) or not {"power_w", "energy_j"} & body.keys():
            raise MeterError(f"{self.location}: expected an object with power_w or energy_j")
        power = body.get("power_w")
        energy = body.get("energy_j")
        return MeterReading(
            time.time(),
            power_w=None if power is None else _number(power, "power_w"),
            energy_j=None if energy is None else _number(energy, "energy_j"),
        )


def build_meter(config: MeterConfig) -> PrometheusMeter | RedfishMeter | IpmiMeter | JsonMeter:
    verify = config.verify_tls
    if config.kind == "prometheus":
        return PrometheusMeter(
            config.url or "", config.query or "", config.reading, config.scale, http_client(verify)
        )
    if config.kind == "redfish":
        password = config.password.get_secret_value() if config.password else None
        return RedfishMeter(config.url or "", config.username, password, verify)
    if config.kind == "ipmi":
        return IpmiMeter(config.command)
    location = config.url or str(config.path)
    return JsonMeter(location, http_client(verify) if config.url else None)
