from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from wattwise.config import load_config
from wattwise.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wattwise.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config()
    assert config.interval_s == 1.0 and config.listen_port == 9877
    assert config.sysfs_root == Path("/sys") and config.nvml.power_poll_hz == 10


def test_shipped_config_is_valid_and_equals_the_defaults() -> None:
    shipped = load_config(ROOT / "config" / "wattwise.yaml")
    assert shipped == load_config()


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "interval_s: 2\nlisten: 127.0.0.1:9000\nnvml: {power_poll_hz: 5}\n")
    monkeypatch.setenv("WATTWISE_INTERVAL_S", "3")
    monkeypatch.setenv("WATTWISE_NVML__POWER_POLL_HZ", "20")
    config = load_config(path, {"listen": "127.0.0.1:9100", "sysfs_root": None})
    assert config.interval_s == 3.0  # environment beats the file
    assert config.nvml.power_poll_hz == 20.0  # nested environment key
    assert config.listen_port == 9100 and config.listen_host == "127.0.0.1"  # flag beats all
    assert config.sysfs_root == Path("/sys")  # an unset flag changes nothing


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("interval_s: fast\n", "interval_s = 'fast': Input should be a valid number"),
        ("interval_s: 300\n", "interval_s = 300: Input should be less than or equal to 60"),
        ("intervall_s: 1\n", "intervall_s: unknown key (allowed here: interval_s,"),
        ("nvml: {poll: 3}\n", "nvml.poll: unknown key (allowed here: enabled, power_poll_hz,"),
        (
            "estimate: {cpu_idle_ratio: 1.5}\n",
            "estimate.cpu_idle_ratio = 1.5: Input should be less",
        ),
        ("listen: localhost\n", "listen = 'localhost': must be HOST:PORT"),
        ("log_level: loud\n", "log_level = 'loud': must be one of debug, info, warning, error"),
        ("carbon: {providers: [file]}\n", "the file provider needs file_path"),
        ("carbon: {providers: [static]}\n", "the static provider needs static_g_per_kwh"),
        ("carbon: {zone: XX}\n", "carbon.zone = 'XX': unknown zone; the table has:"),
        ("interval_s: [1\n", "is not valid YAML"),
        ("- a\n- b\n", "the top level must be a mapping of keys, not a list"),
    ],
)
def test_errors_name_the_field_value_and_what_is_allowed(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert message in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*No such file"):
        load_config(tmp_path / "absent.yaml")


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == load_config()
