from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import subprocess_env
from tests.support.cli import command, free_port, wattwise
from tests.support.fixtures.trees import (
    h100,
    pascal,
    proc_stat,
    two_socket_server,
    write_nvml_state,
)


@pytest.fixture
def server_tree(tmp_path: Path) -> tuple[Path, Path]:
    sysfs, state = tmp_path / "sys", tmp_path / "nvml.json"
    two_socket_server(sysfs)
    write_nvml_state(state, [h100(0), pascal(1)])
    return sysfs, state


def test_probe_json_lists_zones_gpus_and_the_estimate(server_tree: tuple[Path, Path]) -> None:
    sysfs, state = server_tree
    result = wattwise("probe", "--json", "--sysfs-root", str(sysfs), env=subprocess_env(state))
    assert result.returncode == 0, result.stderr
    findings = json.loads(result.stdout)
    rapl = {f["item"]: f for f in findings if f["source"] == "rapl"}
    assert len(rapl) == 8 and all(f["ok"] for f in rapl.values())
    assert f"max {262_143_328_850} uJ" in rapl["package-1"]["detail"]
    assert rapl["package-1"]["location"].endswith("class/powercap/intel-rapl:1")
    gpus = {f["item"]: f for f in findings if f["source"] == "nvml"}
    assert "energy counter" in gpus["gpu 0"]["detail"]
    assert gpus["gpu 0"]["location"] == h100(0)["uuid"]
    assert "power polled at 10 Hz" in gpus["gpu 1"]["detail"]
    (estimate,) = [f for f in findings if f["source"] == "estimate"]
    assert estimate["detail"] == "not in use: RAPL measures the CPU"
    embodied = {
        f["location"]: f for f in findings if f["source"] == "embodied" and f["item"] == "gpu"
    }
    h100_model, pascal_model = h100(0)["name"], pascal(1)["name"]
    assert "164 kg each, 4.68 g/h" in embodied[h100_model]["detail"]
    assert embodied[h100_model]["fix"] == ""
    assert "the default: no figure for this model" in embodied[pascal_model]["detail"]
    assert "gpu_embodied_g" in embodied[pascal_model]["fix"]


def test_probe_on_a_bare_vm_says_the_estimate_is_in_use_and_why(tmp_path: Path) -> None:
    state = tmp_path / "nvml.json"
    write_nvml_state(state, [], init_error=12)
    result = wattwise("probe", "--sysfs-root", str(tmp_path), env=subprocess_env(state))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "estimate  cpu" in out and "in use: no RAPL package zone under" in out
    assert "How to fix:" in out and "modprobe intel_rapl_msr" in out
    assert "NVML_ERROR_LIBRARY_NOT_FOUND" in out and "no NVIDIA driver" in out
    assert "CPU energy is estimated, not measured" in result.stderr


def test_once_prints_what_metrics_would_serve(server_tree: tuple[Path, Path]) -> None:
    sysfs, state = server_tree
    result = wattwise(
        "once", "--interval", "0.2", "--sysfs-root", str(sysfs), env=subprocess_env(state)
    )
    assert result.returncode == 0, result.stderr
    values = {
        (s.name, s.labels.get("domain"), s.labels.get("device"), s.labels.get("source")): s.value
        for f in text_string_to_metric_families(result.stdout)
        for s in f.samples
    }
    assert values[("wattwise_node_energy_joules_total", "package", "1", "rapl")] == 1.0
    assert values[("wattwise_node_energy_joules_total", "gpu", "0", "nvml")] == 5000.0
    assert values[("wattwise_node_power_watts", "dram", "0", "rapl")] == 0.0
    assert ("wattwise_node_energy_joules_total", "gpu", "1", "nvml_power") in values
    # The interval it sampled at, not the configured one; `once` keeps no ledger, so it
    # exports no ledger state at all rather than a ledger that is down.
    assert values[("wattwise_sampling_interval_seconds", None, None, None)] == 0.2
    assert "wattwise_ledger_up" not in result.stdout
    assert "sampled every 0.2 s" in result.stdout


def test_once_json(server_tree: tuple[Path, Path]) -> None:
    sysfs, state = server_tree
    result = wattwise(
        "once",
        "--interval",
        "0.05",
        "--format",
        "json",
        "--sysfs-root",
        str(sysfs),
        env=subprocess_env(state),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {t["source"] for t in data["node_totals"]} == {"rapl", "nvml", "nvml_power"}
    assert [g["index"] for g in data["gpus"]] == [0, 1]


def test_once_rejects_an_unknown_format(tmp_path: Path) -> None:
    result = wattwise("once", "--format", "xml", env=subprocess_env(None))
    assert result.returncode == 2 and "'xml' is not one of 'prom', 'json'" in result.stderr


def test_config_check_prints_effective_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("interval_s: 5\n")
    env = subprocess_env(None, WATTWISE_NVML__POWER_POLL_HZ="20")
    result = wattwise("config", "check", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert "interval_s: 5.0" in result.stdout and "power_poll_hz: 20.0" in result.stdout


@pytest.mark.parametrize(
    "subcommand", [["config", "check"], ["run", "--config"], ["probe", "--config"]]
)
def test_bad_config_exits_2_naming_the_field(tmp_path: Path, subcommand: list[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("nvml:\n  power_poll_hz: -1\n  colour: blue\n")
    result = wattwise(*subcommand, str(path), env=subprocess_env(None))
    assert result.returncode == 2
    assert "nvml.power_poll_hz = -1: Input should be greater than 0" in result.stderr
    allowed = "allowed here: enabled, power_poll_hz, dcgm_exporter_url"
    assert f"nvml.colour: unknown key ({allowed}" in result.stderr


def test_port_in_use_is_one_line_and_a_nonzero_exit(server_tree: tuple[Path, Path]) -> None:
    sysfs, state = server_tree
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = wattwise(
            "run",
            "--listen",
            f"127.0.0.1:{port}",
            "--sysfs-root",
            str(sysfs),
            env=subprocess_env(state),
            timeout=30,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"wattwise: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_help_explains_each_command() -> None:
    env = subprocess_env(None)
    top = wattwise("--help", env=env).stdout
    for name in ("run", "probe", "once", "config"):
        assert name in top
    assert "SIGTERM" in wattwise("run", "--help", env=env).stdout
    assert "--sysfs-root" in wattwise("probe", "--help", env=env).stdout
    assert wattwise("--version", env=env).stdout.startswith("wattwise ")


def test_free_port_helper_gives_a_bindable_port() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_estimate_reads_the_procfs_root(tmp_path: Path) -> None:
    procfs = tmp_path / "proc"
    proc_stat(procfs, user=100, idle=900)
    state = tmp_path / "nvml.json"
    write_nvml_state(state, [], init_error=12)
    result = wattwise(
        "once",
        "--interval",
        "0.1",
        "--format",
        "json",
        "--sysfs-root",
        str(tmp_path),
        "--procfs-root",
        str(procfs),
        env=subprocess_env(state),
    )
    assert result.returncode == 0, result.stderr
    (domain,) = json.loads(result.stdout)["domains"]
    assert domain["key"] == {"domain": "package", "device": "all", "source": "estimate"}
    # /proc/stat did not move between the readings: 0 % busy, so idle power (20 % of 100 W).
    assert domain["power_w"] == pytest.approx(20.0)


def test_roots_can_come_from_the_environment(server_tree: tuple[Path, Path]) -> None:
    sysfs, state = server_tree
    env = subprocess_env(state, WATTWISE_SYSFS_ROOT=str(sysfs))
    result = wattwise("probe", "--json", env=env)
    assert result.returncode == 0, result.stderr
    locations = [f["location"] for f in json.loads(result.stdout) if f["source"] == "rapl"]
    assert locations and all(loc.startswith(str(sysfs)) for loc in locations)


def test_probe_reports_job_discovery_and_the_ledger(tmp_path: Path) -> None:
    from tests.support.fixtures.trees import make_v2

    make_v2(tmp_path / "cg", {"/system.slice/slurmstepd.scope/job_3/step_0": 5})
    proc_stat(tmp_path / "proc", user=1, idle=1)
    env = subprocess_env(
        None,
        WATTWISE_JOBS__ENABLED="true",
        WATTWISE_LEDGER__PATH=str(tmp_path / "new" / "ledger.db"),
        WATTWISE_NVML__ENABLED="false",
    )
    result = wattwise(
        "probe",
        "--json",
        "--sysfs-root",
        str(tmp_path),
        "--procfs-root",
        str(tmp_path / "proc"),
        "--cgroup-root",
        str(tmp_path / "cg"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    findings = {f["source"]: f for f in json.loads(result.stdout)}
    assert findings["jobs"]["ok"] and findings["jobs"]["detail"].startswith("cgroup v2, 1 job(s)")
    assert findings["ledger"]["detail"] == "will be created"
    assert not (tmp_path / "new").exists()  # probe never writes the ledger


def test_config_check_never_prints_secrets(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("carbon:\n  electricitymaps_token: sk-very-secret\n  watttime_password: pw\n")
    result = wattwise("config", "check", str(path), env=subprocess_env(None))
    assert result.returncode == 0, result.stderr
    assert "sk-very-secret" not in result.stdout and "pw\n" not in result.stdout
    assert "electricitymaps_token: '**********'" in result.stdout


# Imports the CLI the console script imports, runs one command, and prints at exit which heavy
# modules that command loaded.
_IMPORT_PROBE = """
import atexit, sys
watched = ("apscheduler", "httpx", "pynvml", "rich")
atexit.register(lambda: print("LOADED", *[m for m in watched if m in sys.modules], file=sys.stderr))
from wattwise.cli import main
sys.argv = ["wattwise", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["--help"], set()),
        (["report", "--help"], set()),
        (["jobs"], set()),
        (["report", "--since", "30d"], set()),
        (["probe"], {"pynvml"}),  # probe asks NVML what GPUs there are, and nothing else
    ],
)
def test_each_command_imports_only_what_it_uses(
    tmp_path: Path, args: list[str], allowed: set[str]
) -> None:
    import subprocess
    import sys

    from tests.support.book import book

    ledger = tmp_path / "ledger.db"
    book(ledger).ledger.close()
    proc_stat(tmp_path / "proc", user=1, idle=1)
    env = subprocess_env(
        None,
        WATTWISE_LEDGER__PATH=str(ledger),
        WATTWISE_SYSFS_ROOT=str(tmp_path),
        WATTWISE_PROCFS_ROOT=str(tmp_path / "proc"),
    )
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("LOADED")]
    assert set(line.split()[1:]) <= allowed, line


def _probe_ledger_and_socket(tmp_path: Path, ledger: Path, sock: Path) -> dict[str, dict]:
    proc_stat(tmp_path / "proc", user=1, idle=1)
    env = subprocess_env(
        None,
        WATTWISE_JOBS__ENABLED="true",
        WATTWISE_LEDGER__PATH=str(ledger),
        WATTWISE_WORK__ENABLED="true",
        WATTWISE_WORK__SOCKET_PATH=str(sock),
        WATTWISE_NVML__ENABLED="false",
    )
    roots = ("--sysfs-root", str(tmp_path), "--procfs-root", str(tmp_path / "proc"))
    roots += ("--cgroup-root", str(tmp_path / "no-cgroups"))  # the ledger is probed all the same
    result = wattwise("probe", "--json", *roots, env=env)
    assert result.returncode == 0, result.stderr
    return {f["source"]: f for f in json.loads(result.stdout) if f["source"] in ("ledger", "work")}


def test_probe_refuses_a_ledger_that_is_a_directory_or_not_sqlite(tmp_path: Path) -> None:
    """Both were called "present, writable" (issue 16); the agent then could not open them."""
    (tmp_path / "dir.db").mkdir()
    found = _probe_ledger_and_socket(tmp_path, tmp_path / "dir.db", tmp_path / "w.sock")
    assert not found["ledger"]["ok"] and "directory" in found["ledger"]["detail"]
    too_long = tmp_path / ("x" * 300) / "ledger.db"  # a name over NAME_MAX: ENAMETOOLONG
    found = _probe_ledger_and_socket(tmp_path, too_long, tmp_path / "w.sock")
    assert not found["ledger"]["ok"] and found["ledger"]["detail"].startswith("cannot be checked:")
    assert found["ledger"]["fix"] == "fix the path"
    (tmp_path / "notes.db").write_text("my notes\n")
    found = _probe_ledger_and_socket(tmp_path, tmp_path / "notes.db", tmp_path / "w.sock")
    assert not found["ledger"]["ok"] and "not an SQLite database" in found["ledger"]["detail"]


def test_probe_checks_the_work_api_socket(tmp_path: Path) -> None:
    """It never did (issue 16): a file in the way, a path too long for a Unix socket, a
    directory that cannot be written, and a socket an agent listens on."""
    ledger = tmp_path / "ledger.db"
    found = _probe_ledger_and_socket(tmp_path, ledger, tmp_path / "run" / "w.sock")
    assert found["work"]["ok"] and found["work"]["detail"] == "will be created"
    (tmp_path / "file").write_text("")
    found = _probe_ledger_and_socket(tmp_path, ledger, tmp_path / "file")
    assert not found["work"]["ok"] and "not a socket" in found["work"]["detail"]
    found = _probe_ledger_and_socket(tmp_path, ledger, tmp_path / ("d" * 120) / "w.sock")
    assert not found["work"]["ok"] and "107 bytes" in found["work"]["detail"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listening:
        listening.bind(str(tmp_path / "live.sock"))
        listening.listen(1)
        found = _probe_ledger_and_socket(tmp_path, ledger, tmp_path / "live.sock")
    assert found["work"]["ok"] and found["work"]["detail"] == "an agent is listening on it now"
    found = _probe_ledger_and_socket(tmp_path, ledger, tmp_path / "live.sock")  # now stale
    assert found["work"]["ok"] and "replaced at start" in found["work"]["detail"]


COMMANDS = [
    ["run"], ["once"], ["probe"], ["health"], ["exec"], ["facility"], ["work"], ["report"],
    ["jobs"], ["job", "show"], ["ledger", "export"], ["config", "check"], ["slurm", "epilog"],
    ["slurm", "show"],
]  # fmt: skip


def test_help_shows_usage_choices_and_defaults_as_they_are() -> None:
    """What issue 16 found misleading in --help, each as a new operator reads it."""
    env = subprocess_env(None)
    helps = {" ".join(c): wattwise(*c, "--help", env=env).stdout for c in COMMANDS}
    for name, text in helps.items():
        assert text.startswith("Usage: wattwise"), name
        assert "<bool>" not in text, name  # a flag takes no value
        # an option's value is named for what it holds (URL, SECONDS, JOBID), not its type
        options = [line for line in text.splitlines() if line.lstrip().startswith("-")]
        assert not [o for o in options if re.search(r"<(str|float|int|float range)>", o)], name
    assert "Usage: wattwise exec [OPTIONS] -- CMD [ARGS]..." in helps["exec"]
    assert "--format <table|csv|json>" in helps["report"]
    assert "--group-by <job|user|scheduler|team|cluster>" in helps["report"]
    assert "--per <day|month>" in helps["report"]
    assert "--format <csv|jsonl>" in helps["ledger export"]
    assert "--format <prom|json>" in helps["once"]
    until = " ".join(helps["report"].split("--until", 1)[1].split()[:6])
    assert until == "TIME End, same forms. [default: now]"  # not "0s"
    assert "--no-insecure-skip-verify" not in helps["report"]
    assert "0.0.0.0:9878" in " ".join(helps["facility"].split())
    assert "/run/wattwise/wattwise.sock" in " ".join(helps["work"].split())


def test_shell_completion_offers_the_choices() -> None:
    env = subprocess_env(
        None,
        _WATTWISE_COMPLETE="complete_bash",
        COMP_WORDS="wattwise report --group-by ",
        COMP_CWORD="3",
    )
    result = wattwise(env=env)
    assert result.stdout.split() == ["job", "user", "scheduler", "team", "cluster"]


def test_a_section_given_as_a_scalar_names_its_keys_not_a_class(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rapl: false\n")
    result = wattwise("config", "check", str(path), env=subprocess_env(None))
    assert result.returncode == 2 and "Config" not in result.stderr
    assert "rapl = False: must be a section with keys enabled" in result.stderr
    assert "did you mean rapl: {enabled: false}" in result.stderr
    path.write_text("rapl: true\n")
    result = wattwise("config", "check", str(path), env=subprocess_env(None))
    assert result.returncode == 2 and "did you mean rapl: {enabled: true}" in result.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root to run probe as another user (setpriv)",
)
def test_probe_as_a_user_who_cannot_look_in_says_so(tmp_path: Path) -> None:
    """The unit's state directory is 0750: a user's probe of it raised PermissionError, a
    traceback (found by review)."""
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run([*as_nobody, *command("--version")], capture_output=True).returncode:
        pytest.skip("the virtual environment is not readable by uid 65534")
    state = tmp_path / "state"  # under pytest's root-only folders, as a 0750 state directory
    state.mkdir(mode=0o700)
    env = subprocess_env(
        None,
        WATTWISE_JOBS__ENABLED="true",
        WATTWISE_LEDGER__PATH=str(state / "ledger.db"),
        WATTWISE_WORK__ENABLED="true",
        WATTWISE_WORK__SOCKET_PATH=str(state / "w.sock"),
        WATTWISE_NVML__ENABLED="false",
    )
    result = subprocess.run(
        [*as_nobody, *command("probe", "--json", "--cgroup-root", "/nonexistent")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    found = {f["source"]: f for f in json.loads(result.stdout)}
    for source in ("ledger", "work"):
        assert not found[source]["ok"]
        assert found[source]["detail"].startswith("cannot be checked by this user"), found
