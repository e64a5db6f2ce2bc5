"""The shipped deployment files: Prometheus rules checked and unit-tested by promtool, the
Grafana dashboards up to date with their generator."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parent.parent / "deploy"
PROMETHEUS = DEPLOY / "prometheus"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed"
)


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", "recording.yaml", "alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_rules_pass_their_unit_tests() -> None:
    result = promtool(
        "test", "rules", *sorted(f"tests/{p.name}" for p in (PROMETHEUS / "tests").glob("*.yaml"))
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_would_catch_a_wrong_rule(tmp_path: Path) -> None:
    """The rule tests have teeth: a rule that sums one node too few fails them."""
    broken = (
        (PROMETHEUS / "recording.yaml")
        .read_text()
        .replace(
            "expr: sum by (scheduler, job_id) (wattwise_job_power_watts)",
            'expr: sum by (scheduler, job_id) (wattwise_job_power_watts{instance!="b"})',
        )
    )
    (tmp_path / "recording.yaml").write_text(broken)
    (tmp_path / "tests").mkdir()
    shutil.copy(PROMETHEUS / "tests" / "recording_test.yaml", tmp_path / "tests")
    result = subprocess.run(
        ["promtool", "test", "rules", "tests/recording_test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "scheduler_job_id:wattwise_job_power_watts:sum" in (
        result.stdout + result.stderr
    )


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", DEPLOY / "grafana" / "build_dashboards.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_dashboards_are_what_the_generator_writes() -> None:
    rendered = load_generator().render()
    shipped = {p.name: p.read_text() for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")}
    assert shipped == rendered, "run: python deploy/grafana/build_dashboards.py"


def test_dashboards_are_well_formed() -> None:
    for name, text in load_generator().render().items():
        dashboard = json.loads(text)
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        assert dashboard["templating"]["list"][0]["type"] == "datasource"
        for panel in dashboard["panels"]:
            assert panel["type"] == "row" or panel["targets"], f"{name}: {panel['title']}"
            for target in panel.get("targets", []):
                # The scrape job's name is the operator's: filter by instance, never job.
                assert "job=" not in target["expr"].replace("job_id=", ""), target["expr"]


SYSTEMD = DEPLOY / "systemd"
UNITS = ("wattwise.service", "wattwise-facility.service")
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze (Debian's systemd) is missing"
)


def installed_units(tmp_path: Path) -> Path:
    """The units as installed, with ExecStart pointing at this environment's wattwise (verify
    checks that the program exists)."""
    wattwise = Path(sys.executable).parent / "wattwise"
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text().replace("/usr/local/bin/wattwise", str(wattwise))
        (tmp_path / unit).write_text(text)
    return tmp_path


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@needs_systemd
def test_units_verify_without_a_warning(tmp_path: Path) -> None:
    units = installed_units(tmp_path)
    result = analyze("verify", *UNITS, cwd=units)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    # A misspelt hardening option is only a warning to systemd, so the test reads stderr.
    (units / "wattwise.service").write_text(
        (units / "wattwise.service").read_text().replace("ProtectSystem=", "ProtectSystme=")
    )
    result = analyze("verify", "wattwise.service", cwd=units)
    assert "Unknown key 'ProtectSystme'" in result.stderr


@needs_systemd
@pytest.mark.parametrize(
    ("unit", "at_most"), [("wattwise.service", 2.5), ("wattwise-facility.service", 1.5)]
)
def test_units_exposure_stays_low(tmp_path: Path, unit: str, at_most: float) -> None:
    """The score the README quotes (`systemd-analyze security`, 0 = locked down, 10 = exposed)."""
    result = analyze("security", "--offline=true", unit, cwd=installed_units(tmp_path))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= at_most


def test_the_unit_runs_unprivileged_with_the_rapl_fix_as_root() -> None:
    unit = (SYSTEMD / "wattwise.service").read_text()
    assert "User=wattwise" in unit and "NoNewPrivileges=yes" in unit
    assert "StateDirectory=wattwise" in unit and "Restart=on-failure" in unit
    pre = next(line for line in unit.splitlines() if line.startswith("ExecStartPre="))
    assert "+" in pre.split("/", 1)[0] and "energy_uj" in pre
    udev = (DEPLOY / "udev" / "99-wattwise-rapl.rules").read_text()
    assert 'SUBSYSTEM=="powercap"' in udev and "chgrp wattwise" in udev
