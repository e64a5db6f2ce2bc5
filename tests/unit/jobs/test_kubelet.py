"""Pod names from a real local HTTP server shaped like the kubelet's /pods."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import trustme

from tests.support.fixtures.trees import make_v2, proc_stat
from wattwise.jobs.kubelet import PodNames
from wattwise.jobs.tracker import JobTracker

UID = "5b2d6f8e-1a3c-4e5f-9a8b-7c6d5e4f3a2b"
POD_LIST = {
    "kind": "PodList",
    "apiVersion": "v1",
    "metadata": {},
    "items": [
        {
            "metadata": {"name": "vllm-0", "namespace": "inference", "uid": UID},
            "spec": {"nodeName": "gpu-7"},
            "status": {"phase": "Running"},
        },
    ],
}


class Kubelet(BaseHTTPRequestHandler):
    mode = "ok"
    seen_auth: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Kubelet.seen_auth.append(self.headers.get("Authorization", ""))
        if Kubelet.mode == "slow":
            time.sleep(4.0)  # well past the 1 s timeout below
        if Kubelet.mode == "500":
            self.send_error(500)
            return
        body = b"{not json" if Kubelet.mode == "garbage" else json.dumps(POD_LIST).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kubelet() -> Iterator[str]:
    Kubelet.mode, Kubelet.seen_auth = "ok", []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Kubelet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_names_come_from_the_pod_list_with_the_bearer_token(kubelet: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    names = PodNames(kubelet, token_file=token)
    assert names.refresh_once()
    assert names.get(UID) == "inference/vllm-0" and names.get("other") is None
    assert Kubelet.seen_auth == ["Bearer s3cret"]
    names.stop()


@pytest.mark.parametrize("mode", ["500", "garbage", "slow"])
def test_a_failing_kubelet_keeps_the_last_good_names(
    kubelet: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    names = PodNames(kubelet, timeout_s=1.0)
    assert names.refresh_once()
    Kubelet.mode = mode
    assert not names.refresh_once()
    assert names.get(UID) == "inference/vllm-0"
    assert "keeping the last pod names" in caplog.text
    names.stop()


def test_an_unreachable_kubelet_is_not_an_error_for_the_tick(tmp_path: Path) -> None:
    names = PodNames("http://127.0.0.1:9", timeout_s=0.3)  # discard port: nothing listens
    assert not names.refresh_once() and names.get(UID) is None
    names.stop()


def test_a_ca_bundle_not_there_yet_is_said_and_tried_again(
    kubelet: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It stopped `once`, `probe` and `run` with a traceback; now the rest of the agent runs."""
    bundle = tmp_path / "ca.crt"
    names = PodNames(kubelet, ca_file=bundle)
    assert not names.refresh_once() and names.get(UID) is None
    assert f"cannot read the CA bundle {bundle}" in caplog.text
    trustme.CA().cert_pem.write_to_path(str(bundle))  # the projected volume appears
    assert names.refresh_once() and names.get(UID) == "inference/vllm-0"
    names.stop()


def test_the_tracker_names_pods(kubelet: str, tmp_path: Path) -> None:
    cg, procfs = tmp_path / "cg", tmp_path / "proc"
    make_v2(cg, {f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice": 10})
    proc_stat(procfs, user=1, idle=1)
    names = PodNames(kubelet)
    names.refresh_once()
    activity = JobTracker(cg, procfs, ["kubernetes"], names.get).observe()
    names.stop()
    assert activity.meta[f"kubernetes:{UID}"].name == "inference/vllm-0"
