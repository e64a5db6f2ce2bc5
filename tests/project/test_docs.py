"""The generated references (docs/configuration.md, docs/metrics.md) are current, and complete
against what the code really does: every key of the loaded configuration, and every family the
whole chain and the exporter put on /metrics."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import GOLDEN, ROOT
from wattwise.config import Config

DOCS = ROOT / "docs"


def test_the_generated_references_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(DOCS / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr + " (run: make docs)"


def _leaf_keys(values: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, value in values.items():
        if isinstance(value, dict) and value and name != "gpu_embodied_g":
            keys |= _leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_every_configuration_key_is_in_the_reference() -> None:
    documented = set(re.findall(r"^\| `([^`]+)` \|", (DOCS / "configuration.md").read_text(), re.M))
    loaded = _leaf_keys(Config().model_dump(mode="json"))
    assert loaded - documented == set()


def _families(exposition: Path) -> set[str]:
    names = re.findall(r"^# TYPE (\S+)", exposition.read_text(), re.M)
    return {name.removesuffix("_total") for name in names}


def test_every_family_on_metrics_is_in_the_reference() -> None:
    text = (DOCS / "metrics.md").read_text()
    documented = {
        name.removesuffix("_total")
        for name in re.findall(r"^\| `(wattwise_[a-z_]+)` \|", text, re.M)
    }
    shown = _families(GOLDEN / "once.prom") | _families(GOLDEN / "metrics.prom")
    assert len(shown) > 30
    assert shown - documented == set()


def _shell_blocks(page: Path) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", page.read_text(), flags=re.S)


def test_the_install_steps_name_what_exists() -> None:
    """Every repository path, make target and wheel name in docs/install.md's commands is
    real (issue 16: the docs installed a package published nowhere)."""
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    makefile = (ROOT / "Makefile").read_text()
    steps = "\n".join(_shell_blocks(DOCS / "install.md"))
    for path in re.findall(r"\b((?:config|deploy|dist)/[\w./-]+)", steps):
        if path.startswith("dist/"):
            assert path == f"dist/wattwise-{version}-py3-none-any.whl", path
        else:
            assert (ROOT / path).exists(), path
    for target in re.findall(r"\bmake (\w+)", steps):
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"make {target}"
    pages = [ROOT / "README.md", *DOCS.glob("*.md"), *(ROOT / "deploy").rglob("*")]
    for page in pages + list((ROOT / "agent").rglob("*.py")):  # and the hints the agent prints
        if page.is_file() and page.suffix in ("", ".md", ".service", ".yaml", ".py"):
            text = page.read_text(errors="replace")
            assert not re.search(r"(?<!not `)pipx? install '?wattwise\b", text), page
            # nothing is published there: a link to it is a link to whoever registers it
            assert "github.com/wattwise/" not in text, page
