from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings

# Property tests judge results, not speed: a stall of a loaded 2-core CI machine is no failure.
settings.register_profile("wattwise", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("wattwise")

ROOT = Path(__file__).resolve().parent.parent
FAKES = ROOT / "tests" / "support" / "fakes"
GOLDEN = ROOT / "tests" / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="Rewrite golden files from current output."
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake pynvml, put where `import pynvml` finds it (the one NVML seam)."""
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    import pynvml

    assert pynvml.__file__.startswith(str(FAKES))
    pynvml.configure({"gpus": []})
    yield pynvml
    sys.modules.pop("pynvml", None)


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if nvidia-ml-py were not installed."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


def subprocess_env(nvml_state: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for the real CLI in a subprocess: the fake NVML first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTWISE_")}
    # Node-energy tests must not see this machine's cgroups nor write /var/lib/wattwise.
    env["WATTWISE_JOBS__ENABLED"] = "false"
    env["WATTWISE_WORK__ENABLED"] = "false"  # tests that use the work API give it a socket
    if nvml_state is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(FAKES), env.get("PYTHONPATH", "")])
        env["FAKE_PYNVML_STATE"] = str(nvml_state)
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def psutil_reads_this_machine() -> Iterator[None]:
    """The agent points psutil at its procfs root, process-wide: a fixture tree's root must not
    outlive the test that set it."""
    import psutil

    root = psutil.PROCFS_PATH
    yield
    psutil.PROCFS_PATH = root
