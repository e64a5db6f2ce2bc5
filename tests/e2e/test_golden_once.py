"""The whole chain, from fixture trees to exposition text: `wattwise once` as a subprocess on a
two-socket RAPL tree, two fake GPUs, a Slurm job and a Kubernetes pod with a GPU process each,
and a ledger-less config, compared byte for byte with tests/golden/once.prom (rewrite it with
`pytest --update-golden`, as node_exporter's e2e test does). Every counter moves by a fixed step
between its two readings, so the energy, its split and its carbon are exact; what follows the
wall clock (power, embodied carbon, timestamps) keeps its line with the value masked.
Restructuring the code must leave it identical."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GOLDEN, subprocess_env
from tests.support.cli import command
from tests.support.descriptors import open_files_under
from tests.support.fixtures.trees import (
    add_process,
    h100,
    make_v2,
    proc_stat,
    set_energy,
    write_nvml_state,
)
from tests.support.fixtures.trees import two_socket_server as server

SLURM = "/system.slice/slurmstepd.scope/job_12"
POD = (
    "/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/"
    "cri-containerd-1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988.scope"
)
# Figures that follow the wall clock, not the trees: their lines stay, their values are masked.
CLOCK_BOUND = re.compile(
    r"^(wattwise_build_info|wattwise_tick_duration_seconds|wattwise_last_tick_timestamp_seconds"
    r"|wattwise_\w*power_watts"
    r"|wattwise_node_embodied|wattwise_node_carbon_grams_total\{scope=\"embodied\""
    r"|wattwise_job_carbon_grams_total\{.*scope=\"embodied\""
    r"|wattwise_grid_carbon_intensity_age_seconds|wattwise_job_runtime_seconds_total)"
)


def _counters(root: Path, step: int) -> None:
    """Every counter at its value after `step` fixed steps."""
    sysfs, procfs, cgroups, nvml = root / "sys", root / "proc", root / "cg", root / "nvml.json"
    for socket in (0, 1):
        set_energy(sysfs, f"intel-rapl:{socket}", 1_000_000 + step * 90_000_000)
        set_energy(sysfs, f"intel-rapl:{socket}:0", 500_000 + step * 60_000_000)
        set_energy(sysfs, f"intel-rapl:{socket}:1", 100_000 + step * 5_000_000)
        set_energy(sysfs, f"intel-rapl:{socket}:2", 200_000 + step * 12_000_000)
    proc_stat(procfs, user=1_000 + step * 300, idle=1_000 + step * 100)
    make_v2(cgroups, {SLURM: 2_000_000 + step * 1_500_000, POD: 1_000_000 + step * 500_000})
    samples = [[4242, 10 + step, 80], [4343, 10 + step, 20]] if step else []
    gpus = [
        h100(0, energy_mj=5_000_000 + step * 400_000, pids=[4242, 4343], samples=samples),
        h100(1, energy_mj=5_000_000 + step * 90_000, pids=[]),
    ]
    write_nvml_state(nvml, gpus)


def _node(root: Path) -> dict[str, str]:
    sysfs, procfs, cgroups = root / "sys", root / "proc", root / "cg"
    server(sysfs)
    _counters(root, 0)
    for pid, cgroup, environ in (
        (4242, f"{SLURM}/step_0", b"SLURM_JOB_ID=12\0SLURM_JOB_NAME=llama\0SLURM_JOB_USER=alice\0"),
        (4343, POD, b"NVIDIA_VISIBLE_DEVICES=GPU-00000000-0000-0000-0000-000000000001\0"),
    ):
        add_process(procfs, pid, cgroup)
        (cgroups / cgroup.split("/step_0")[0].lstrip("/") / "cgroup.procs").write_text(f"{pid}\n")
        (procfs / str(pid) / "environ").write_bytes(environ)
    return {"--sysfs-root": str(sysfs), "--procfs-root": str(procfs), "--cgroup-root": str(cgroups)}


def test_once_on_fixture_trees_matches_the_golden_exposition(
    tmp_path: Path, update_golden: bool
) -> None:
    roots = _node(tmp_path)
    env = subprocess_env(
        tmp_path / "nvml.json", WATTWISE_JOBS__ENABLED="true", WATTWISE_LEDGER__ENABLED="false"
    )
    once = subprocess.Popen(
        command("once", "--interval", "3", *(a for kv in roots.items() for a in kv)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _after_first_reading(once.pid, tmp_path)
    _counters(tmp_path, 1)
    out, err = once.communicate(timeout=60)
    assert once.returncode == 0, err
    text = "\n".join(
        f"{line.rsplit(' ', 1)[0]} <clock>" if CLOCK_BOUND.match(line) else line
        for line in out.splitlines()
    )
    golden = GOLDEN / "once.prom"
    if update_golden:
        golden.write_text(text + "\n")
    assert text + "\n" == golden.read_text(), "exposition changed: rerun with --update-golden"
    # Every job series names its user and team, not only wattwise_job_info: a label-enforcing
    # proxy (prom-label-proxy -label user) then shows a user their own jobs (docs/fleet.md).
    job_samples = [
        sample
        for family in text_string_to_metric_families(out)
        if family.name.startswith("wattwise_job_")
        for sample in family.samples
    ]
    assert len({s.name for s in job_samples}) >= 6
    for sample in job_samples:
        assert {"user", "team"} <= sample.labels.keys(), sample
        assert sample.labels["user"] == ("alice" if sample.labels["job_id"] == "12" else "")


def _after_first_reading(pid: int, root: Path) -> None:
    """Returns once the process holds both jobs' CPU counters open, which the job tracker does
    from its first reading on (after RAPL and NVML), and a little more for the rest of that
    tick."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        held = open_files_under(root / "cg", pid)
        if len([link for link in held if link.endswith("cpu.stat")]) == 2:
            time.sleep(0.5)
            return
        time.sleep(0.02)
    raise AssertionError("wattwise once never read its first counters")
