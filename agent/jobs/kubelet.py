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
from typing import TYPE_CHECKING, Any

from wattwise.errors import ConfigError, KubeletError
from wattwise.net.http import HttpClient, get_json
from wattwise.service import Service

if TYPE_CHECKING:
    from wattwise.config import JobsConfig

log = logging.getLogger(__name__)

ANNOTATION_PREFIX = "wattwise.io/"
MAX_PODS_BYTES = 64 * 1024 * 1024  # a node's PodList: 110 pods take a few MB
MAX_TOKEN_BYTES = 64 * 1024


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
        self._tls: bool | str = str(ca_file) if ca_file else verify
        self._timeout_s = timeout_s
        self._client: HttpClient | None = None  # made at the first refresh that can
        self.service = Service("kubelet-pods", self.refresh_once, refresh_s)

    def get(self, pod_uid: str) -> str | None:
        """ "namespace/name" of a pod, or None while unknown."""
        with self._lock:
            return self._names.get(pod_uid)

    def annotations(self, pod_uid: str) -> tuple[str, dict[str, str]] | None:
        """(pod IP, its wattwise.io/ annotations) of a pod that has some, else None."""
        with self._lock:
            return self._annotated.get(pod_uid)

    def start(self) -> None:
        self.service.start()

    def refresh_once(self) -> bool:
        try:
            if self._client is None:  # a CA bundle not there yet is tried again next time
                self._client = HttpClient(self._timeout_s, MAX_PODS_BYTES, self._tls)
            items = get_json(self._client, self.url, error=KubeletError, headers=self._headers())
            names, annotated = _pods(items)
        except (KubeletError, ConfigError, OSError) as exc:
            self._note(f"{exc}; keeping the last pod names")
            return False
        with self._lock:
            self._names, self._annotated = names, annotated
        self._note(None)
        return True

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        with open(self.token_file, "rb") as file:  # re-read: projected tokens rotate
            token = file.read(MAX_TOKEN_BYTES).decode("ascii", "replace").strip()
        return {"Authorization": f"Bearer {token}"}

    def _note(self, error: str | None) -> None:
        if error != self._error:
            if error:
                log.warning("%s", error)
            else:
                log.info("kubelet pods API %s answers", self.url)
            self._error = error

    def stop(self) -> None:
        self.service.stop()
        if self._client is not None:
            self._client.close()


def _pods(body: Any) -> tuple[dict[str, str], dict[str, tuple[str, dict[str, str]]]]:
    """(uid -> "namespace/name", uid -> (pod IP, its wattwise.io/ annotations)) of a v1 PodList;
    KubeletError on any other shape."""
    try:
        names, annotated = {}, {}
        for item in body["items"]:
            meta = item["metadata"]
            uid = str(meta["uid"])
            names[uid] = f"{meta['namespace']}/{meta['name']}"
            ours = {
                str(k): str(v)
                for k, v in (meta.get("annotations") or {}).items()
                if str(k).startswith(ANNOTATION_PREFIX)
            }
            if ours:
                pod_ip = (item.get("status") or {}).get("podIP") or ""
                annotated[uid] = (str(pod_ip), ours)
    except (KeyError, TypeError, AttributeError) as exc:
        raise KubeletError(f"not a PodList ({type(exc).__name__}: {exc})") from None
    return names, annotated


def start_pod_names(config: JobsConfig) -> PodNames:
    """The kubelet's pod names as the jobs section configures them, refreshed from now on."""
    assert config.kubelet_url is not None
    token = config.kubelet_token_file
    pod_names = PodNames(
        config.kubelet_url,
        token_file=token if token and token.is_file() else None,
        ca_file=config.kubelet_ca_file,
        verify=not config.kubelet_insecure_skip_verify,
    )
    pod_names.start()
    return pod_names
