"""The file provider: a site's own series, looked up by time, reread when it changes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from wattwise.carbon.file import FileProvider, read_series
from wattwise.carbon.grid import GridIntensity
from wattwise.carbon.intensity import MARGINAL, ProviderError
from wattwise.carbon.table import StaticProvider

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z; a half-hour series starts here

CSV = """timestamp,grams_per_kwh,note
2026-11-18T11:06:40Z,210,from the utility
2026-11-18T11:36:40+00:00,180.5,
2026-11-18T13:06:40+01:00,400,same instant as 12:06:40Z
"""


def write(path: Path, text: str, bump_s: int = 0) -> Path:
    path.write_text(text)
    if bump_s:  # a new version within the same second still has a new mtime
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump_s * 1_000_000_000))
    return path


def test_csv_values_hold_from_their_timestamp_until_the_next(tmp_path: Path) -> None:
    provider = FileProvider(write(tmp_path / "grid.csv", CSV), zone="DE")
    assert provider.fetch(T0).grams_per_kwh == 210.0
    assert provider.fetch(T0 + 1799).grams_per_kwh == 210.0
    second = provider.fetch(T0 + 1800)
    assert (second.grams_per_kwh, second.valid_at_unix_s) == (180.5, T0 + 1800)
    assert provider.fetch(T0 + 3600 + 10).grams_per_kwh == 400.0  # the +01:00 row, in UTC
    assert (second.zone, second.provider) == ("DE", "file")


def test_json_series_and_unix_seconds(tmp_path: Path) -> None:
    rows = [{"timestamp": T0 + 300 * i, "grams_per_kwh": 100 + i} for i in range(5)]
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(rows[::-1]))  # order in the file does not matter
    provider = FileProvider(path, signal=MARGINAL)
    value = provider.fetch(T0 + 650)
    assert (value.grams_per_kwh, value.signal) == (102.0, MARGINAL)


def test_before_the_start_or_past_the_end_there_is_nothing_for_now(tmp_path: Path) -> None:
    provider = FileProvider(write(tmp_path / "grid.csv", CSV))
    with pytest.raises(ProviderError, match="starts after now"):
        provider.fetch(T0 - 1)
    assert provider.fetch(T0 + 3600 + 1799).grams_per_kwh == 400.0  # one typical step
    with pytest.raises(ProviderError, match="ends at"):
        provider.fetch(T0 + 3600 + 1800)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time,value\n1,2\n", "header needs timestamp,grams_per_kwh"),
        ("timestamp,grams_per_kwh\n2026-11-18T09:00:00,200\n", "line 2: .* no UTC offset"),
        ("timestamp,grams_per_kwh\nyesterday,200\n", "line 2: not a timestamp"),
        ("timestamp,grams_per_kwh\n1795000000,lots\n", "line 2: needs a number"),
        ("timestamp,grams_per_kwh\n1795000000,nan\n", "not a finite number"),
        ("timestamp,grams_per_kwh\n1,2\n1,3\n", "two values for the same time"),
        ("timestamp,grams_per_kwh\n", "no rows"),
    ],
)
def test_broken_csv_names_the_line_at_fault(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        read_series(write(tmp_path / "grid.csv", text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ('{"timestamp": 1}', "expected a list"),
        ('[{"timestamp": 1}]', "item 0: needs a number grams_per_kwh"),
        ("[3]", "item 0: not an object"),
    ],
)
def test_broken_json_names_the_item_at_fault(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        read_series(write(tmp_path / "grid.json", text))


def test_a_new_version_is_picked_up_and_a_broken_one_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "grid.csv", CSV)
    provider = FileProvider(path)
    assert provider.fetch(T0).grams_per_kwh == 210.0
    write(path, CSV.replace(",210,", ",99,"), bump_s=1)
    assert provider.fetch(T0).grams_per_kwh == 99.0
    write(path, "timestamp,grams_per_kwh\n2026-11-18T11:06:40Z,oops\n", bump_s=2)
    assert provider.fetch(T0).grams_per_kwh == 99.0
    assert "line 2" in caplog.text and "previous version stays in use" in caplog.text
    path.unlink()
    with pytest.raises(ProviderError, match="No such file"):
        provider.fetch(T0)


def test_a_version_written_in_place_within_one_mtime_tick_is_still_picked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's `cat new.csv > grid.csv` truncates and writes: a read can catch it half
    written, and the rest can land with the same mtime (the kernel's clock for it is coarse).
    Keyed on mtime alone, the half version was served until the next edit."""
    import wattwise.carbon.file as file_module
    import wattwise.filestamp as filestamp

    path = tmp_path / "grid.csv"
    mtime_ns = 1_800_000_000 * 10**9
    wall = [mtime_ns / 1e9 + 0.5]  # the file's clock, pinned: half a second after the write
    monkeypatch.setattr(filestamp, "time", SimpleNamespace(time=lambda: wall[0]))

    def rewrite(text: str) -> None:
        path.write_text(text)
        os.utime(path, ns=(mtime_ns, mtime_ns))

    rewrite("\n".join(CSV.split("\n", 2)[:2]) + "\n")  # header and first row: valid, short
    provider = FileProvider(path)
    assert provider.fetch(T0).grams_per_kwh == 210.0
    rewrite(CSV)  # the rest, within the same tick
    assert provider.fetch(T0 + 1800).grams_per_kwh == 180.5
    rewrite(CSV.replace(",210,", ",099,"))  # the same size, the same mtime
    assert provider.fetch(T0).grams_per_kwh == 99.0
    reads: list[Path] = []
    real_read = file_module.read_series
    monkeypatch.setattr(file_module, "read_series", lambda p: reads.append(p) or real_read(p))
    assert provider.fetch(T0).grams_per_kwh == 99.0 and reads == []  # settling, unchanged
    wall[0] += 10  # settled: read once more (it cannot tell a write it missed), then trusted
    for _ in range(3):
        assert provider.fetch(T0).grams_per_kwh == 99.0
    assert len(reads) == 1
    future_ns = mtime_ns + 86_400 * 10**9  # `touch -d tomorrow`, or a server clock ahead
    os.utime(path, ns=(future_ns, future_ns))
    for _ in range(3):
        assert provider.fetch(T0).grams_per_kwh == 99.0
    assert len(reads) == 2


def test_the_chain_falls_back_when_the_file_runs_out_and_rejects_absurd_rows(
    tmp_path: Path,
) -> None:
    text = "timestamp,grams_per_kwh\n1795000000,150\n1795001800,9000\n"
    grid = GridIntensity([FileProvider(write(tmp_path / "grid.csv", text)), StaticProvider(300.0)])
    assert grid.refresh(T0).provider == "file"
    assert grid.refresh(T0 + 1800).grams_per_kwh == 150.0  # 9000 rejected; last good kept
    assert not grid.states()[0].up and "outside" in (grid.states()[0].error or "")
    assert grid.refresh(T0 + 4 * 3600).provider == "static"  # last good too old
