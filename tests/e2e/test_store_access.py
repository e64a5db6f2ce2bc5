"""The way into the fleet's store, for `report --prometheus`, `slurm epilog` and `health`: a
bearer token, basic auth and a CA bundle against a real local HTTPS server (trustme
certificates). Files that cannot be used are named and refused with exit 2, before any
request and before the epilog's wait, never a traceback."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.conftest import subprocess_env
from tests.support.cli import wattwise
from tests.support.providers import Script, serve

EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}
WINDOW = ("--since", "2026-11-01", "--until", "2026-11-02")


@dataclass
class Store:
    url: str
    ca: Path
    script: Script


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    script = Script(body=EMPTY)
    with serve(script, tls=context) as url:
        yield Store(url, tmp_path / "ca.pem", script)


def run(*args: str) -> tuple[int, str]:
    result = wattwise(*args, env=subprocess_env(None))
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stderr


def test_the_report_sends_the_token_or_login_it_is_given(store: Store, tmp_path: Path) -> None:
    token, password = tmp_path / "token", tmp_path / "password"
    token.write_text("s3cret-token\n")
    password.write_text("hunter2\n")
    fleet = ("report", *WINDOW, "--prometheus", store.url, "--ca-file", str(store.ca))
    code, err = run(*fleet, "--bearer-token-file", str(token))
    assert code == 0, err
    assert store.script.requests[-1][1]["Authorization"] == "Bearer s3cret-token"
    code, err = run(*fleet, "--basic-auth-user", "ops", "--basic-auth-password-file", str(password))
    assert code == 0, err
    login = base64.b64encode(b"ops:hunter2").decode()
    assert store.script.requests[-1][1]["Authorization"] == f"Basic {login}"


def test_the_store_certificate_is_checked_unless_told_otherwise(store: Store) -> None:
    asked = len(store.script.requests)
    code, err = run("report", *WINDOW, "--prometheus", store.url)  # the system's CAs only
    assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err, err
    assert len(store.script.requests) == asked  # refused at the handshake
    code, err = run("report", *WINDOW, "--prometheus", store.url, "--insecure-skip-verify")
    assert code == 0, err
    assert len(store.script.requests) > asked


def test_unusable_files_are_named_before_anything_is_asked(store: Store, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = tmp_path / "missing"
    fleet = ("report", *WINDOW, "--prometheus", store.url)
    epilog = ("slurm", "epilog", "--prometheus", store.url, "--job", "7", "--settle-s", "600")
    for command in (fleet, epilog):
        code, err = run(*command, "--ca-file", str(missing))
        assert code == 2 and f"cannot read the CA bundle {missing}" in err, err
        code, err = run(*command, "--ca-file", str(junk))
        assert code == 2 and f"the CA bundle {junk} holds no usable certificate" in err, err
        code, err = run(*command, "--bearer-token-file", str(missing))
        assert code == 2 and f"cannot read the bearer token from {missing}" in err, err
    assert store.script.requests == []  # and the epilog never waited its 600 s
    health = ("health", "--url", f"{store.url}/metrics")
    code, err = run(*health, "--ca-file", str(missing))
    assert code == 2 and f"cannot read the CA bundle {missing}" in err, err  # not "unhealthy"


def test_nonsense_numbers_are_refused_at_the_command_line() -> None:
    code, err = run("work", "--units", "tokens", "--socket", "/nonexistent.sock", "nan")
    assert code == 2 and "COUNT must be a number from 0 to 1e+15, not nan" in err
    code, err = run("work", "--units", "tokens", "--socket", "/nonexistent.sock", "--", "-3")
    assert code == 2 and "not -3" in err
    for settle in ("nan", "inf", "-1"):
        code, err = run(
            "slurm", "epilog", "--prometheus", "http://x", "--job", "7", "--settle-s", settle
        )
        assert code == 2 and "--settle-s" in err, (settle, err)
