"""Pod names, and the wattwise.io/ annotations with the pod's IP, from the kubelet's pods API
(GET <kubelet>/pods, a v1 PodList).

Refreshed on a thread of its own, never in the tick. A failed refresh keeps the last good names
and is logged once per change, so a kubelet outage never stops measurement; pods are then known
by their UID only.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

ANNOTATION_PREFIX = "wattwise.io/"


class PodNames:
    def __init__(
        self,
        url: str,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        verify: bool = True,
        refresh_s: float = 30.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/") + "/pods"
        self.token_file = token_file
        self.refresh_s = refresh_s
        self._names: dict[str, str] = {}
        self._annotated: dict[str, tuple[str, dict[str, str]]] = {}  # uid -> (pod IP, ours)
        self._lock = threading.Lock()
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet-pods", daemon=True)
        tls: bool | str = str(ca_file) if ca_file else verify
        # Retries cover failed connections; timeouts bound every request.
        self._client = httpx.Client(
            timeout=timeout_s, verify=tls, transport=httpx.HTTPTransport(retries=2, verify=tls)
        )

    def get(self, pod_uid: str) -> str | None:
        """ "namespace/name" of a pod, or None while unknown."""
        with self._lock:
            return self._names.get(pod_uid)

    def annotations(self, pod_uid: str) -> tuple[str, dict[str, str]] | None:
        """(pod IP, its wattwise.io/ annotations) of a pod that has some, else None."""
        with self._lock:
            return self._annotated.get(pod_uid)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.refresh_once()
            if self._stop.wait(self.refresh_s):
                return

    def refresh_once(self) -> bool:
        try:
            response = self._client.get(self.url, headers=self._headers())
            response.raise_for_status()
            items = response.json()["items"]
            names = {
                item["metadata"][
                    "uid"
                ]: f"{item['metadata']['namespace']}/{item['metadata']['name']}"
                for item in items
            }
            annotated = {}
            for item in items:
                ours = {
                    k: str(v)
                    for k, v in (item["metadata"].get("annotations") or {}).items()
                    if k.startswith(ANNOTATION_PREFIX)
                }
                if ours:
                    pod_ip = (item.get("status") or {}).get("podIP") or ""
                    annotated[item["metadata"]["uid"]] = (pod_ip, ours)
        except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError) as exc:
            self._note(
                f"kubelet pods API {self.url} failed ({type(exc).__name__}: {exc}); "
                "keeping the last pod names"
            )
            return False
        with self._lock:
            self._names, self._annotated = names, annotated
        self._note(None)
        return True

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        token = self.token_file.read_text().strip()  # re-read: projected tokens rotate
        return {"Authorization": f"Bearer {token}"}

    def _note(self, error: str | None) -> None:
        if error != self._error:
            if error:
                log.warning("%s", error)
            else:
                log.info("kubelet pods API %s answers", self.url)
            self._error = error

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._client.close()
