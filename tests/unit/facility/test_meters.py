"""Facility and BMC meters against local servers and real subprocesses, in their real shapes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.support.providers import Script, serve
from wattwise.facility.meters import (
    IpmiMeter,
    JsonMeter,
    MeterError,
    PrometheusMeter,
    RedfishMeter,
    parse_dcmi,
    parse_redfish,
)

# Redfish shapes as in DMTF's public mockups (trimmed to the fields read).
POWER = {
    "@odata.id": "/redfish/v1/Chassis/1U/Power",
    "@odata.type": "#Power.v1_5_2.Power",
    "PowerControl": [
        {
            "@odata.id": "/redfish/v1/Chassis/1U/Power#/PowerControl/0",
            "MemberId": "0",
            "Name": "Server Power Control",
            "PowerConsumedWatts": 344,
            "PowerCapacityWatts": 800,
            "PowerMetrics": {"IntervalInMin": 30, "AverageConsumedWatts": 319},
        }
    ],
}
ENVIRONMENT = {
    "@odata.id": "/redfish/v1/Chassis/1U/EnvironmentMetrics",
    "@odata.type": "#EnvironmentMetrics.v1_3_0.EnvironmentMetrics",
    "PowerWatts": {"DataSourceUri": "/redfish/v1/Chassis/1U/Sensors/TotalPower", "Reading": 374},
    "EnergykWh": {"DataSourceUri": "/redfish/v1/Chassis/1U/Sensors/TotalEnergy", "Reading": 36166},
}
PDU_ENERGY_SENSOR = {
    "@odata.id": "/redfish/v1/PowerEquipment/RackPDUs/1/Sensors/EnergyA1",
    "@odata.type": "#Sensor.v1_2_0.Sensor",
    "ReadingType": "EnergykWh",
    "ReadingUnits": "kW.h",
    "Reading": 36166.2,
}
PDU_POWER_SENSOR = {
    "@odata.type": "#Sensor.v1_2_0.Sensor",
    "ReadingType": "Power",
    "ReadingUnits": "W",
    "Reading": 5129,
}

# `ipmitool dcmi power reading`: the classic layout, and ipmitool 1.8.19's, where the timestamp
# runs into "Sampling period" on one line (both as users posted them).
DCMI_CLASSIC = """
    Instantaneous power reading:                   215 Watts
    Minimum during sampling period:                162 Watts
    Maximum during sampling period:                276 Watts
    Average power reading over sample period:      176 Watts
    IPMI timestamp:                           Wed Feb 15 12:49:51 2017
    Sampling period:                          01131466 Seconds.
    Power reading state is:                   activated

"""
DCMI_NEW = """
    Instantaneous power reading:                   109 Watts
    Minimum during sampling period:                 38 Watts
    Maximum during sampling period:                242 Watts
    Average power reading over sample period:      102 Watts
    IPMI timestamp:                           10/12/23 13:29:17 CEST    Sampling period: \
                         00065530 Seconds.
    Power reading state is:                   activated
"""
DCMI_DEACTIVATED = DCMI_CLASSIC.replace("215", "0").replace(
    "state is:                   activated", "state is:                   deactivated"
)


def test_redfish_shapes() -> None:
    assert parse_redfish(POWER) == (344.0, None)
    assert parse_redfish(ENVIRONMENT) == (374.0, 36166 * 3.6e6)
    assert parse_redfish(PDU_ENERGY_SENSOR) == (None, pytest.approx(36166.2 * 3.6e6))
    assert parse_redfish(PDU_POWER_SENSOR) == (5129.0, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"PowerControl": [{"PowerConsumedWatts": None}]}, "no power or energy"),
        ({"PowerWatts": {"Reading": "n/a"}}, "PowerWatts.Reading is not a number"),
        ({"PowerWatts": {"Reading": -4}}, "not a usable reading"),
        ({"ReadingType": "Temperature", "Reading": 40}, "not power or energy"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_redfish_nonsense_is_refused(body: object, message: str) -> None:
    with pytest.raises(MeterError, match=message):
        parse_redfish(body)


def test_redfish_meter_over_http_with_basic_auth_and_errors() -> None:
    script = Script(body=ENVIRONMENT)
    with serve(script) as url:
        meter = RedfishMeter(f"{url}/redfish/v1/Chassis/1U/EnvironmentMetrics", "admin", "pw")
        reading = meter.read()
        assert (reading.power_w, reading.energy_j) == (374.0, 36166 * 3.6e6)
        assert script.requests[0][1]["Authorization"].startswith("Basic ")
        script.status = 401
        with pytest.raises(MeterError, match="HTTP 401"):
            meter.read()
        script.status, script.body = 200, b"<html>login</html>"
        with pytest.raises(MeterError, match="not JSON"):
            meter.read()


def test_dcmi_both_layouts_and_a_deactivated_reading() -> None:
    assert parse_dcmi(DCMI_CLASSIC) == 215.0
    assert parse_dcmi(DCMI_NEW) == 109.0
    with pytest.raises(MeterError, match="deactivated"):
        parse_dcmi(DCMI_DEACTIVATED)
    with pytest.raises(MeterError, match="no 'Instantaneous power reading'"):
        parse_dcmi("Error: unable to establish IPMI v2 / RMCP+ session\n")


def fake_ipmitool(tmp_path: Path, output: str, code: int = 0) -> str:
    (tmp_path / "out.txt").write_text(output)
    script = tmp_path / "ipmitool"
    script.write_text(f"#!/bin/sh\ncat {tmp_path / 'out.txt'}\necho 'oops' >&2\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return f"{script} dcmi power reading"


def test_ipmi_meter_runs_the_command(tmp_path: Path) -> None:
    assert IpmiMeter(fake_ipmitool(tmp_path, DCMI_NEW)).read().power_w == 109.0
    with pytest.raises(MeterError, match=r"failed \(1\): oops"):
        IpmiMeter(fake_ipmitool(tmp_path, DCMI_CLASSIC, code=1)).read()
    with pytest.raises(MeterError, match="is not installed"):
        IpmiMeter("/nonexistent/ipmitool dcmi power reading").read()


def prometheus_answer(*values: tuple[dict, str]) -> dict:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [1_800_000_000.0, v]} for m, v in values],
        },
    }


def test_prometheus_meter_sums_a_vector_and_keeps_its_series() -> None:
    body = prometheus_answer(({"instance": "a"}, "1000.5"), ({"instance": "b"}, "2000"))
    with serve(Script(body=body)) as url:
        reading = PrometheusMeter(url, "wattwise_node_total_energy_joules_total").read()
        assert reading.energy_j == 3000.5 and len(reading.energy_series_j) == 2
        kw = PrometheusMeter(url, "sum(facility_kw)", "power_w", scale=1000).read()
        assert kw.power_w == 3_000_500.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"status": "error", "error": "parse error at char 4"}, "parse error at char 4"),
        (prometheus_answer(), "matched no series"),
        (prometheus_answer(({}, "NaN")), "not a usable reading"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "'matrix'"),
    ],
)
def test_prometheus_meter_errors(body: dict, message: str) -> None:
    with serve(Script(body=body)) as url, pytest.raises(MeterError, match=message):
        PrometheusMeter(url, "x").read()


def test_json_meter_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "meter.json"
    path.write_text(json.dumps({"energy_j": 5.0e9, "power_w": 120_000}))
    reading = JsonMeter(str(path)).read()
    assert (reading.energy_j, reading.power_w) == (5.0e9, 120_000.0)
    path.write_text('{"kwh": 3}')
    with pytest.raises(MeterError, match="expected an object with power_w or energy_j"):
        JsonMeter(str(path)).read()
    with pytest.raises(MeterError, match="No such file"):
        JsonMeter(str(tmp_path / "absent.json")).read()
