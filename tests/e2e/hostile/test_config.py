"""Issue item 7: no configuration, however broken or oversized, ends in a traceback; every error
names the variable, file or flag its value came from, and unknown WATTWISE_ variables are
refused like misspelt keys in the file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tests.support.cli import wattwise
from wattwise.config import load_config
from wattwise.errors import ConfigError


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WATTWISE_JOBS", "not json", "WATTWISE_JOBS='not json' is not valid JSON"),
        ("WATTWISE_EMBODIED__GPU_EMBODIED_G", "{bad", "WATTWISE_EMBODIED__GPU_EMBODIED_G"),
        ("WATTWISE_PLATFORM", "[1", "WATTWISE_PLATFORM='[1' is not valid JSON"),
        ("WATTWISE_INTERVAL_S", "fast", "(from WATTWISE_INTERVAL_S)"),
        ("WATTWISE_INTERVL_S", "1", "WATTWISE_INTERVL_S: no such setting"),
        ("WATTWISE_NVML__POLL", "3", "known in nvml: enabled, power_poll_hz"),
        ("WATTWISE_INTERVAL_S__X", "3", "WATTWISE_INTERVAL_S__X: no such setting"),
        ("WATTWISE_CARBON__PROVIDERS", "uk grid", "WATTWISE_CARBON__PROVIDERS='uk grid'"),
        ("WATTWISE_CARBON__PROVIDERS", '["nope"]', "(from WATTWISE_CARBON__PROVIDERS)"),
    ],
)
def test_item7_a_bad_variable_is_an_error_that_names_it(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={variable: value})
    assert message in str(caught.value)


def test_item7_a_list_of_words_may_be_written_with_commas() -> None:
    config = load_config(
        environ={
            "WATTWISE_CARBON__PROVIDERS": "ukgrid,table",
            "WATTWISE_JOBS__SCHEDULERS": "slurm",
        }
    )
    assert config.carbon.providers == ("ukgrid", "table")
    assert config.jobs.schedulers == ("slurm",)


def test_item7_errors_say_whether_the_file_the_environment_or_a_flag_is_at_fault(
    tmp_path: Path,
) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("interval_s: 2\n")
    with pytest.raises(ConfigError, match=r"listen = 'garbage'.*\(from the command line\)"):
        load_config(base, {"listen": "garbage"})
    with pytest.raises(ConfigError, match=r"\(from WATTWISE_INTERVAL_S\)"):
        load_config(base, environ={"WATTWISE_INTERVAL_S": "fast"})
    base.write_text("interval_s: fast\n")
    with pytest.raises(ConfigError, match=rf"interval_s = 'fast'.*\(from {base}\)"):
        load_config(base)


def test_item7_the_cli_names_the_flag_the_variable_or_the_file(tmp_path: Path) -> None:
    """As an operator sees it (issue 16): `run --config base.yaml --listen garbage` blamed
    base.yaml; now the flag, the variable or the file is named, whichever gave the value."""
    base = tmp_path / "base.yaml"
    base.write_text('listen: "127.0.0.1:9877"\n')
    run = ("run", "--config", str(base))
    result = wattwise(*run, "--listen", "garbage", env=subprocess_env(None))
    assert result.returncode == 2 and "listen = 'garbage'" in result.stderr
    assert "(from the command line)" in result.stderr and str(base) not in result.stderr
    result = wattwise(*run, env=subprocess_env(None, WATTWISE_INTERVAL_S="fast"))
    assert result.returncode == 2 and "(from WATTWISE_INTERVAL_S)" in result.stderr
    base.write_text("interval_s: fast\n")
    result = wattwise(*run, env=subprocess_env(None))
    assert result.returncode == 2 and f"(from {base})" in result.stderr


def bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"interval_s: 1\n# caf\xe9\n", "is not UTF-8 text"),
        (b"a: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "nested too deeply"),
        (bomb(9).encode(), "holds more than 100000 values"),
        (b"".join(b"k%07d: 1\n" % i for i in range(400_000)), "larger than 1048576 bytes"),
    ],
    ids=["latin-1", "deep", "alias-bomb", "huge"],
)
def test_item7_a_hostile_file_is_refused_quickly_and_briefly(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "wattwise.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert time.monotonic() - started < 20  # the alias bomb once took 74 s and 3 GB
    assert len(str(caught.value)) < 2_000


def test_item7_many_unknown_keys_give_a_short_message(tmp_path: Path) -> None:
    path = tmp_path / "wattwise.yaml"
    path.write_bytes(b"".join(b"k%05d: 1\n" % i for i in range(20_000)))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "k00000: unknown key" in message and "... and 19980 more" in message
    assert len(message) < 20_000  # once 85 MB for 400k keys


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WATTWISE_CARBON__PROVIDERS", "[ukgrid"),
        ("WATTWISE_JOBS", "not json"),
        ("WATTWISE_EMBODIED__GPU_EMBODIED_G", "{bad"),
        ("WATTWISE_COLOUR", "blue"),
    ],
)
def test_item7_the_real_cli_exits_2_naming_the_variable_never_a_traceback(
    tmp_path: Path, variable: str, value: str
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    result = wattwise("config", "check", str(empty), env=subprocess_env(None, **{variable: value}))
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr and "Traceback" not in result.stderr


def test_item7_the_real_cli_refuses_a_non_utf8_file_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"log_level: info  # r\xe9sum\xe9\n")
    result = wattwise("config", "check", str(path), env=subprocess_env(None))
    assert result.returncode == 2 and "not UTF-8" in result.stderr
    assert "Traceback" not in result.stderr
