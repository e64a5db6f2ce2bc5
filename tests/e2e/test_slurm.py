"""A real single-node Slurm cluster (Debian's slurmctld, slurmd, munge), a real sbatch job, and
the real `wattwise run` reading this machine's cgroups and /proc.

Skipped where Slurm is not installed or cannot start; .ci/run installs it. Slurm's cgroup/v1
plugin needs the v1 cpuacct hierarchy this machine has.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tests.e2e.test_run import DEADLINE_S, Agent
from tests.support.cli import command, free_port
from tests.support.providers import Script, serve

TOOLS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "munge", "munged")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or any(shutil.which(t) is None for t in TOOLS)
    or not Path("/sys/fs/cgroup/cpuacct/cpuacct.usage").is_file(),
    reason="needs root, Debian's slurm packages and a v1 cpuacct hierarchy",
)


def wait(predicate, what: str, limit_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def ensure_munge(cleanup: ExitStack) -> subprocess.Popen | None:
    """A munged for the test's Slurm; the one started here (returned) is stopped when `cleanup`
    closes, one that was already running is left alone."""
    if subprocess.run(["munge", "-n"], capture_output=True, check=False).returncode == 0:
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    for directory in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(directory).mkdir(parents=True, exist_ok=True)
        shutil.chown(directory, "munge", "munge")
    # In the foreground (-F), as our own child: stopped with the fixture, never left behind.
    munged = subprocess.Popen(
        ["munged", "-F"],
        user="munge",
        group="munge",
        extra_groups=[],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cleanup.callback(stop_process, munged)
    wait(lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0, "munged")
    return munged


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    for port in (6817, 6818):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} is taken: another Slurm runs here")
    with ExitStack() as cleanup:  # whatever fails below, every daemon started here stops
        munged = ensure_munge(cleanup)
        root = tmp_path_factory.mktemp("slurm")
        host = socket.gethostname().split(".")[0]
        conf = root / "slurm.conf"
        accounting = start_accounting(root, cleanup)
        conf.write_text(
            accounting
            + f"ClusterName=wattwise\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\n"
            "ProctrackType=proctrack/cgroup\nTaskPlugin=task/cgroup\n"
            "JobAcctGatherType=jobacct_gather/cgroup\nSelectType=select/cons_tres\n"
            "MpiDefault=none\nReturnToService=2\n"
            "SchedulerParameters=bf_interval=1\n"  # released jobs start in seconds, not 30
            f"StateSaveLocation={root}/ctld\nSlurmdSpoolDir={root}/d\n"
            f"SlurmctldPidFile={root}/ctld.pid\nSlurmdPidFile={root}/d.pid\n"
            f"SlurmctldLogFile={root}/ctld.log\nSlurmdLogFile={root}/d.log\n"
            f"EpilogSlurmctld={root}/epilog.sh\n"
            f"NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN\n"
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n"
        )
        (root / "cgroup.conf").write_text(
            "CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\nConstrainCores=no\n"
            "ConstrainRAMSpace=no\nConstrainDevices=no\n"
        )
        # The controller's epilog: `wattwise slurm epilog`, once a test says where the store is.
        epilog = root / "epilog.sh"
        epilog.write_text(
            "#!/bin/sh\n"
            f"[ -f {root}/epilog.args ] || exit 0\n"
            f"export SLURM_CONF={conf}\n"  # the test's cluster; a real one has /etc/slurm
            f"exec {' '.join(command('slurm', 'epilog'))} $(cat {root}/epilog.args) "
            f">>{root}/epilog.log 2>&1\n"
        )
        epilog.chmod(0o755)
        env = {**os.environ, "SLURM_CONF": str(conf)}
        cleanup.callback(stop_slurm, env, root)
        if accounting:  # the cluster must be known to the database before slurmctld starts
            subprocess.run(["sacctmgr", "-i", "add", "cluster", "wattwise"], env=env, check=True)
        subprocess.run(["slurmctld", "-f", str(conf)], env=env, check=True)
        subprocess.run(["slurmd", "-f", str(conf)], env=env, check=True)
        wait(
            lambda: (
                subprocess.run(
                    ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True
                ).stdout.strip()
                == "idle"
            ),
            "an idle Slurm node",
        )
        assert munged is None or munged.poll() is None
        yield env


ACCOUNTING_TOOLS = ("mariadbd", "mariadb-install-db", "slurmdbd", "sacctmgr")


def start_accounting(root: Path, cleanup: ExitStack) -> str:
    """Slurm's accounting database where Debian's mariadb-server and slurmdbd are installed
    (.ci/run installs them): a MariaDB on a scratch directory and a slurmdbd on it, both our
    children. The slurm.conf lines that use it, or "" (then sacct has no records)."""
    if any(shutil.which(t) is None for t in ACCOUNTING_TOOLS):
        return ""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 6819)) == 0:
            return ""  # another slurmdbd: not ours to use
    data, port = root / "db", free_port()
    subprocess.run(
        ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
         "--skip-test-db", "--auth-root-authentication-method=normal"],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    mariadb = subprocess.Popen(
        ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={root}/db.sock",
         f"--port={port}", "--bind-address=127.0.0.1", "--user=root", "--skip-grant-tables"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    cleanup.callback(stop_process, mariadb)
    dbd = root / "slurmdbd.conf"
    dbd.write_text(
        "AuthType=auth/munge\nDbdHost=localhost\nDbdPort=6819\nSlurmUser=root\n"
        f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={port}\n"
        f"StorageUser=root\nStorageLoc=slurm_acct_db\nPidFile={root}/dbd.pid\n"
        f"LogFile={root}/dbd.log\n"
    )
    dbd.chmod(0o600)
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    slurmdbd = subprocess.Popen(
        ["slurmdbd", "-D"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def listening() -> bool:
        assert slurmdbd.poll() is None, (root / "dbd.log").read_text()[-2000:]
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", 6819)) == 0

    cleanup.callback(stop_process, slurmdbd)
    wait(listening, "slurmdbd", 60)
    return "AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n"


def stop_slurm(env: dict[str, str], root: Path) -> None:
    subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True, check=False)
    for pid_file in (root / "ctld.pid", root / "d.pid"):
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                wait(lambda p=pid: not Path(f"/proc/{p}").exists(), "Slurm to stop", 15)
            except AssertionError:
                os.kill(pid, signal.SIGKILL)  # it would not stop: it must not outlive the test


def diagnose(env: dict[str, str], job_id: str) -> str:
    """What Slurm and the cgroup tree looked like, for a failure message."""
    parts = []
    for cmd in (["scontrol", "show", "job", job_id], ["sinfo"]):
        parts.append(subprocess.run(cmd, env=env, capture_output=True, text=True).stdout)
    tree = Path("/sys/fs/cgroup/cpuacct")
    parts.append("\n".join(str(p) for p in tree.glob("slurm*/uid_*/job_*")))
    conf = Path(env["SLURM_CONF"]).parent
    for log in ("ctld.log", "d.log"):
        if (conf / log).exists():
            parts.append((conf / log).read_text()[-2000:])
    return "\n---\n".join(parts)


def test_a_real_sbatch_job_is_found_named_and_charged(
    slurm: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = subprocess_env(
        None,
        WATTWISE_INTERVAL_S="0.2",
        WATTWISE_JOBS__ENABLED="true",
        WATTWISE_NVML__ENABLED="false",
        WATTWISE_LEDGER__PATH=str(tmp_path / "ledger.db"),
    )
    # No RAPL here: the CPU estimate, driven by this machine's real /proc/stat, is split.
    process = subprocess.Popen(
        command("run", "--listen", f"127.0.0.1:{port}", "--sysfs-root", str(tmp_path)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    agent = Agent(process, f"http://127.0.0.1:{port}/metrics", tmp_path, tmp_path)
    try:
        agent.wait_for(lambda m: ("wattwise_ledger_up",) in m)
        burn = tmp_path / "burn.py"
        burn.write_text("import time\nend = time.time() + 6\nwhile time.time() < end:\n    pass\n")
        submitted = subprocess.run(
            [
                "sbatch",
                "--parsable",
                "--job-name=wattwise-e2e",
                f"--chdir={tmp_path}",  # its output file goes here, not into the repository
                f"--output={tmp_path}/slurm-%j.out",
                "--wrap",
                f"python3 {burn}",
            ],
            env=slurm,
            capture_output=True,
            text=True,
            check=True,
        )
        job_id = submitted.stdout.strip().split(";")[0]

        def active(m: dict) -> float:
            return sum(
                v
                for k, v in m.items()
                if k[0] == "wattwise_job_energy_joules_total"
                and ("job_id", job_id) in k
                and ("state", "active") in k
            )

        def state() -> str:
            return subprocess.run(
                ["squeue", "-h", "-j", job_id, "-o", "%T"],
                env=slurm,
                capture_output=True,
                text=True,
            ).stdout.strip()

        try:
            wait(lambda: state() in ("RUNNING", "COMPLETING", ""), "the job to start", 60)
            m = agent.wait_for(lambda m: active(m) > 0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(slurm, job_id)}") from None
        labels = {
            dict(k[1:]).get("job_name")
            for k in m
            if k[0] == "wattwise_job_energy_joules_total" and ("job_id", job_id) in k
        }
        assert labels == {"wattwise-e2e"}
        assert ("wattwise_jobs", ("scheduler", "slurm")) in m
        wait(
            lambda: (
                job_id
                not in subprocess.run(
                    ["squeue", "-h", "-o", "%i"], env=slurm, capture_output=True, text=True
                ).stdout
            ),
            "the job to finish",
        )
        m = agent.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) not in m)
        # Still exported during the grace period. One of the machine's cores busy for 6 s on the
        # estimate is about 30 W of active power, ~180 J; a job that did not really run gets ~0.
        assert active(m) > 50
    finally:
        process.terminate()
        process.communicate(timeout=DEADLINE_S)
    row = (
        sqlite3.connect(tmp_path / "ledger.db")
        .execute(
            "SELECT name, user, ended_unix_s IS NOT NULL FROM jobs WHERE job_key = ?",
            (f"slurm:{job_id}",),
        )
        .fetchone()
    )
    assert row == ("wattwise-e2e", "root", 1)


def test_the_controllers_epilog_writes_the_jobs_figures_into_slurm(
    slurm: dict[str, str], tmp_path: Path
) -> None:
    """Issue 15: slurmctld runs `wattwise slurm epilog` (EpilogSlurmctld) when a job ends; it
    reads the job's totals over its nodes from the store (here a local server answering as
    Prometheus would, for two nodes) and writes them with sacctmgr into the accounting
    database (slurmdbd on MariaDB), where `wattwise slurm show` reads them back from sacct. A
    job whose comment holds jobstats' summary keeps it untouched."""
    root = Path(slurm["SLURM_CONF"]).parent
    if "accounting_storage/slurmdbd" not in Path(slurm["SLURM_CONF"]).read_text():
        pytest.skip(
            "no slurmdbd and MariaDB here (.ci/run installs them): the controller refuses to "
            "update a finished job, so the epilog has nowhere to write"
        )
    jobs: list[str] = []

    def tsdb(path: str) -> tuple[int, dict]:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)["query"][0]
        result = []
        energy = "last_over_time(wattwise_job_energy_joules_total{" in query
        carbon = "last_over_time(wattwise_job_carbon_grams_total{" in query
        asked = re.findall(r'job_id="(\d+)"', query)  # the selector, as Prometheus does
        edge = "[3600s]" not in query and "[604800s]" not in query  # not a baseline query
        for job_id in asked if (energy or carbon) and edge else ():
            for node, joules in (("a:9877", 1800.0), ("b:9877", 1200.0)):
                labels = {"instance": node, "scheduler": "slurm", "job_id": job_id,
                          "domain": "gpu", "source": "nvml"}  # fmt: skip
                # 0.25 g per kJ: 0.45 g and 0.3 g of operational carbon
                value, more = (
                    (joules, {"state": "active"})
                    if energy
                    else (joules / 4000, {"scope": "operational"})
                )
                result.append({"metric": labels | more, "value": [0, str(value)]})
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def comment(job_id: str) -> str:
        asked = ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "AdminComment"]
        return subprocess.run(asked, env=slurm, capture_output=True, text=True).stdout.strip()

    with serve(Script(body=tsdb)) as url:
        (root / "epilog.args").write_text(f"--prometheus {url} --settle-s 0")
        try:
            for _ in range(2):
                submitted = subprocess.run(
                    ["sbatch", "--parsable", "--hold", f"--chdir={tmp_path}",
                     f"--output={tmp_path}/slurm-%j.out", "--wrap", "sleep 1"],
                    env=slurm, capture_output=True, text=True, check=True,
                )  # fmt: skip
                jobs.append(submitted.stdout.strip().split(";")[0])
            array = subprocess.run(
                ["sbatch", "--parsable", "--hold", "--array=0-1", f"--chdir={tmp_path}",
                 f"--output={tmp_path}/slurm-%A_%a.out", "--wrap", "sleep 1"],
                env=slurm, capture_output=True, text=True, check=True,
            ).stdout.strip().split(";")[0]  # fmt: skip
            jobstats, ours = jobs
            tasks = [f"{array}_0", f"{array}_1"]  # each task its own record, its own figures
            scontrol = ["scontrol", "update", f"JobId={jobstats}", "AdminComment=JS1:H4sIAAAA"]
            subprocess.run(scontrol, env=slurm, check=True)
            subprocess.run(["scontrol", "release", *jobs, array], env=slurm, check=True)
            try:
                for job in (ours, *tasks):
                    wait(lambda j=job: "wattwise1:" in comment(j), f"{job}'s comment", 60)
                wait(lambda: "not rewritten" in (root / "epilog.log").read_text(), "epilog", 30)
            except (AssertionError, FileNotFoundError) as exc:
                log = root / "epilog.log"
                raise AssertionError(
                    f"{exc}\n{log.read_text() if log.exists() else 'no epilog log'}"
                    f"\n{diagnose(slurm, ours)}"
                ) from None
        finally:
            (root / "epilog.args").unlink()
    assert comment(jobstats) == "JS1:H4sIAAAA"  # jobstats' summary is kept, case and all

    def show(job: str) -> dict:
        shown = subprocess.run(
            command("slurm", "show", job, "--json"),
            env={**subprocess_env(None), "SLURM_CONF": slurm["SLURM_CONF"]},
            capture_output=True, text=True,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)

    figures = show(ours)
    assert figures["from"] == "sacct"  # the accounting database: kept for good
    assert figures["energy_j"] == 3000.0 and figures["nodes"] == 2
    assert figures["estimated_j"] == 0.0 and figures["runtime_s"] >= 1
    assert figures["carbon_g"] == pytest.approx(0.75)  # over both nodes
    # SCI per job-hour over Slurm's own elapsed time, as sacct keeps it
    sci = figures["carbon_g"] / (figures["runtime_s"] / 3600)
    assert figures["sci_g_per_job_hour"] == pytest.approx(sci, rel=1e-3)
    assert figures["cluster"] == "wattwise"
    for task in tasks:
        assert show(task)["energy_j"] == 3000.0, task
