"""The import contracts in pyproject.toml ([tool.importlinter]): stages import only the stages below
them, and exporters only the model. import-linter reads a package from one folder, so it runs on
the package as the wheel installs it: agent/ as wattwise/, exporters/ as wattwise/exporters/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def _installed_layout(into: Path) -> Path:
    package = into / "wattwise"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "agent", package, ignore=ignore)
    shutil.copytree(ROOT / "exporters", package / "exporters", ignore=ignore)
    return package


def _lint_imports(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(path)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_import_contracts_hold(tmp_path: Path) -> None:
    _installed_layout(tmp_path)
    result = _lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_backwards_import_breaks_them(tmp_path: Path) -> None:
    package = _installed_layout(tmp_path)
    with (package / "exporters" / "prometheus.py").open("a") as f:
        f.write("\nimport wattwise.sources.nvml  # an exporter that reaches for hardware\n")
    with (package / "model.py").open("a") as f:
        f.write("\nimport wattwise.app.daemon  # the foundation importing the top\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1
    assert "0 kept, 2 broken" in result.stdout
