"""The shipped deployment files: Prometheus rules checked and unit-tested by promtool, the
Grafana dashboards up to date with their generator."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
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
            "rate(wattwise_job_energy_joules_total[5m]),",
            'rate(wattwise_job_energy_joules_total{instance!="b"}[5m]),',
            1,
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
    name = "cluster_scheduler_job_id_basis:wattwise_job_energy_joules:rate5m"
    assert result.returncode != 0 and name in result.stdout + result.stderr


# Series whose `source` label says whether their energy was measured or estimated.
SOURCED = (
    "wattwise_job_energy_joules_total",
    "wattwise_job_carbon_grams_total",
    "wattwise_node_total_power_watts",
    "wattwise_node_total_energy_joules_total",
)


def test_every_rule_keeps_cluster_and_none_mixes_estimated_with_measured() -> None:
    """Issue 15: run centrally, rules that drop `cluster` sum job 1234 of two clusters into one,
    and a node or job total over every source hides how much of it was estimated."""
    groups = yaml.safe_load((PROMETHEUS / "recording.yaml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) > 20
    for rule in rules:
        name, expr = rule["record"], " ".join(rule["expr"].split())
        assert name.startswith("cluster"), name
        for clause in re.findall(r"\bby \(([^)]*)\)", expr):
            assert "cluster" in clause.split(", "), (name, clause)
        for clause in re.findall(r"\bon \(([^)]*)\)", expr):
            assert "cluster" in clause.split(", "), (name, clause)
        mixes = any(metric in expr for metric in SOURCED) and '"basis"' not in expr
        uses_basis_rule = "basis" in name or "_with_estimate" in name
        assert not mixes or "_with_estimate" in name, name
        assert uses_basis_rule or not any(m in expr for m in SOURCED), name
    alerts = yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())["groups"]
    for rule in [rule for group in alerts for rule in group["rules"]]:
        # an instance name is only unique within its cluster (docs/fleet.md)
        for clause in re.findall(r"\b(?:by|on) \(([^)]*)\)", " ".join(rule["expr"].split())):
            assert "cluster" in clause.split(", "), (rule["alert"], clause)


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


KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.33.0"  # the oldest release whose kubelet authorizes GET /pods as nodes/pods
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # Prometheus Operator: no schema on PyPI


def manifests() -> dict[str, dict]:
    return {
        p.name: yaml.safe_load(p.read_text())
        for folder in ("base", "monitoring")
        for p in sorted((KUBERNETES / folder).glob("*.yaml"))
        if p.name != "kustomization.yaml"
    }


def test_kustomization_lists_every_manifest() -> None:
    """The base holds everything Kubernetes itself knows; the monitoring component, the two
    Prometheus Operator resources (its CRDs are optional: issue 16)."""
    base = yaml.safe_load((KUBERNETES / "base" / "kustomization.yaml").read_text())
    monitoring = yaml.safe_load((KUBERNETES / "monitoring" / "kustomization.yaml").read_text())
    assert monitoring["kind"] == "Component"
    assert sorted(base["resources"] + monitoring["resources"]) == sorted(manifests())
    assert {manifests()[n]["kind"] for n in monitoring["resources"]} == CRD_KINDS


@pytest.mark.parametrize(
    "name", sorted(n for n, r in manifests().items() if r["kind"] not in CRD_KINDS)
)
def test_each_manifest_is_valid_kubernetes(name: str) -> None:
    kubernetes_validate.validate(manifests()[name], KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_what_kubernetes_would() -> None:
    daemonset = manifests()["daemonset.yaml"]
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # misspelt: silently ignored
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)


def kustomize(folder: Path) -> list[dict]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [r for r in yaml.safe_load_all(result.stdout) if r]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (for kustomize) is missing")
@pytest.mark.parametrize("overlay", ["", "with-monitoring"])
def test_the_rendered_kustomizations_are_valid(overlay: str) -> None:
    """`kubectl apply -k deploy/kubernetes` needs no CRD; with-monitoring/ adds both."""
    rendered = kustomize(KUBERNETES / overlay)
    kinds = [r["kind"] for r in rendered]
    assert CRD_KINDS.isdisjoint(kinds) if not overlay else set(kinds) >= CRD_KINDS
    assert len(rendered) == len(manifests()) - (0 if overlay else len(CRD_KINDS))
    for resource in rendered:
        if resource["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        if resource["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert resource["metadata"]["namespace"] == "wattwise"
        # What `kubectl apply --prune -l` and `kubectl get -l` select on.
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "wattwise"
        if resource["kind"] == "DaemonSet":
            (container,) = resource["spec"]["template"]["spec"]["containers"]
            assert container["image"] == "wattwise:0.1.0"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (for kustomize) is missing")
def test_the_image_is_one_setting(tmp_path: Path) -> None:
    """A site's overlay, as docs/install.md writes it, names its registry once and every
    container follows (issue 16)."""
    base, monitoring = (os.path.relpath(KUBERNETES / d, tmp_path) for d in ("base", "monitoring"))
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{base}]\ncomponents: [{monitoring}]\n"
        "images: [{name: wattwise, newName: registry.example.org/wattwise, newTag: '1.2'}]\n"
    )
    rendered = kustomize(tmp_path)
    images = {
        c["image"]
        for r in rendered
        if r["kind"] == "DaemonSet"
        for c in r["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example.org/wattwise:1.2"}
    assert {r["kind"] for r in rendered} >= CRD_KINDS


def test_the_daemonset_has_no_more_privilege_than_it_needs() -> None:
    pod = manifests()["daemonset.yaml"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE"]}
    assert security["readOnlyRootFilesystem"] is True
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    for name in ("host-proc", "host-sys", "host-cgroup"):
        assert mounts[name]["readOnly"] is True, name
    assert {host_paths[n] for n in ("host-proc", "host-sys", "host-cgroup")} == {
        "/proc",
        "/sys",
        "/sys/fs/cgroup",
    }
    assert "nvidia.com/gpu" not in str(container["resources"])  # takes no GPU from jobs
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    config = yaml.safe_load(manifests()["configmap.yaml"]["data"]["wattwise.yaml"])
    from wattwise.config import Config

    loaded = Config(**config)  # the shipped config is one the agent accepts
    assert str(loaded.procfs_root) == mounts["host-proc"]["mountPath"]
    assert str(loaded.cgroup_root) == mounts["host-cgroup"]["mountPath"]


def test_the_servicemonitor_scrapes_the_service_port() -> None:
    service, monitor = manifests()["service.yaml"], manifests()["servicemonitor.yaml"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    daemonset = manifests()["daemonset.yaml"]
    assert service["spec"]["selector"].items() <= (
        daemonset["spec"]["template"]["metadata"]["labels"].items()
    )


def test_the_prometheusrule_carries_the_rule_files() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_prometheusrule", KUBERNETES / "monitoring" / "build_prometheusrule.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    shipped = (KUBERNETES / "monitoring" / "prometheusrule.yaml").read_text()
    assert shipped == module.render(), (
        "run: python deploy/kubernetes/monitoring/build_prometheusrule.py"
    )


DOCKERFILE = DEPLOY / "container" / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_is_multi_stage_non_root_and_health_checked() -> None:
    instructions = dockerfile_instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2 and all("slim" in s for s in stages)
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1] not in ("0", "root")
    health = [args for op, args in final if op == "HEALTHCHECK"]
    assert health and "wattwise" in health[0] and "health" in health[0]
    for op, args in instructions:
        if op == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (DEPLOY.parent / source).exists(), f"COPY {source}: not in the repository"


def test_the_build_stage_context_builds_a_working_wheel(tmp_path: Path) -> None:
    """What the build stage copies is enough for `pip wheel .` (a file left out fails here)."""
    context = tmp_path / "src"
    context.mkdir()
    build = [a for op, a in dockerfile_instructions() if op == "COPY" and "--from" not in a]
    for args in build:
        for source in args.split()[:-1]:
            path = DEPLOY.parent / source
            if path.is_dir():
                shutil.copytree(
                    path, context / source, ignore=shutil.ignore_patterns("__pycache__")
                )
            elif path.name != "wattwise.yaml":
                shutil.copy(path, context / path.name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path / "w"), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # setuptools' "project.license as a TOML table is deprecated" banner (issue 16), or any other
    assert "deprecat" not in (result.stdout + result.stderr).lower()
    wheel = next((tmp_path / "w").glob("wattwise-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("/METADATA"))).decode()
        assert "License-Expression: Apache-2.0" in metadata
        assert any(n.endswith("/licenses/LICENSE") for n in names)
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "wattwise = wattwise.cli:main" in archive.read(entry_points).decode()
    # One import package: nothing named agent or exporters lands in site-packages, and every
    # package folder of the repository is in it (a new one missing from pyproject.toml fails).
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "wattwise"
    }
    packaged = {str(Path(n).parent) for n in names if n.endswith("/__init__.py")}
    folders = {
        str(Path("wattwise") / p.parent.relative_to(DEPLOY.parent / "agent"))
        for p in (DEPLOY.parent / "agent").rglob("__init__.py")
    } | {"wattwise/exporters"}
    assert packaged == {f.removesuffix("/.") for f in folders}


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is missing")
def test_the_image_check_script_parses() -> None:
    """check-image.sh is run by hand (it builds the image: minutes, and a registry or a
    Debian mirror); here, only that it is executable and parses."""
    script = DEPLOY / "container" / "check-image.sh"
    assert os.access(script, os.X_OK)
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
