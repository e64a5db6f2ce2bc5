"""The exporter-toolkit web configuration file (node_exporter's, dcgm-exporter's, Kepler's and
CEEMS' --web.config.file): TLS, client certificates, basic auth with bcrypt hashes, response
headers and a rate limit, for every wattwise listener.

The format and its checks follow prometheus/exporter-toolkit docs/web-configuration.md. Relative
paths are relative to the file. The file and the certificates it names are read again when any
of them changes (checked per connection), so certificates can be rotated without a restart; a
change that does not load is logged and the last good settings stay in use.

Python's ssl module cannot do three things the Go toolkit can; each is refused with a message
rather than ignored: client_auth_type RequestClientCert and RequireAnyClientCert (asking for a
certificate without verifying it, which the toolkit's own docs call insecure) and
curve_preferences.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import ssl
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt

from wattwise.errors import ConfigError
from wattwise.filestamp import file_stamp, same_content_likely
from wattwise.net.listen import Request, Response
from wattwise.net.webconfig_file import (
    CIPHER_SUITES,
    TLS_VERSIONS,
    TlsServerConfig,
    WebConfigFile,
    load_file,
    parse_duration,
)

log = logging.getLogger(__name__)

AUTH_CACHE_SIZE = 256
# bcrypt of "fakepassword": unknown users cost the same time as known ones (no user enumeration).
DECOY_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
BCRYPT_HASH = re.compile(rb"\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}")
MAX_WAITING_CHECKS = 4  # uncached password checks queued at once; more are told to retry
UNAUTHORIZED = Response(401, b"Unauthorized\n", (("WWW-Authenticate", "Basic"),))
# bcrypt is slow on purpose: one check at a time, off the I/O loop, so a flood of wrong
# passwords queues here instead of taking every core (the toolkit serialises it too).
_BCRYPT = ThreadPoolExecutor(1, thread_name_prefix="bcrypt")


class Settings:
    """One loaded version of the file: what a connection is served with."""

    def __init__(self, parsed: WebConfigFile, directory: Path) -> None:
        self.users = {
            user: secret.get_secret_value().encode()
            for user, secret in parsed.basic_auth_users.items()
        }
        for user, hashed in self.users.items():
            if not BCRYPT_HASH.fullmatch(hashed):
                raise ConfigError(f"basic_auth_users: the hash of {user!r} is not a bcrypt hash")
            try:  # a hash of the right shape that bcrypt still refuses ("Invalid salt")
                bcrypt.checkpw(b"", hashed)
            except ValueError as exc:
                raise ConfigError(f"basic_auth_users: the hash of {user!r}: {exc}") from None
        self.files: list[Path] = []  # read to build these settings: a change reloads them
        self.headers = tuple(parsed.http_server_config.headers.items())
        self.tls: ssl.SSLContext | None = None
        self.allowed_sans: set[str] | None = None
        if parsed.tls_server_config is not None:
            tls = parsed.tls_server_config
            self.tls = _ssl_context(tls, directory)
            named = (tls.cert_file, tls.key_file, tls.client_ca_file)
            self.files = [directory / name for name in named if name is not None]
            sans = parsed.tls_server_config.client_allowed_sans
            self.allowed_sans = set(sans) if sans is not None else None
        rate = parsed.rate_limit
        interval_s = parse_duration(rate.interval) if rate else 0.0
        self._bucket = _TokenBucket(interval_s, rate.burst) if rate and interval_s > 0 else None
        self._auth_cache: OrderedDict[bytes, bool] = OrderedDict()  # hits and misses alike
        self._checking = 0  # password checks waiting for or on the bcrypt thread

    def check_peer(self, ssl_object: ssl.SSLObject | None) -> None:
        """Raises PermissionError when client_allowed_sans is set and the client's certificate
        has none of them."""
        if self.allowed_sans is None:
            return
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        names = {value for _kind, value in (cert or {}).get("subjectAltName", ())}
        if not names & self.allowed_sans:
            raise PermissionError("no allowed SAN in the client certificate")

    async def admit(self, request: Request) -> Response | None:
        """None to serve the request, else the refusal: 429 (rate limit, or too many password
        checks waiting) or 401."""
        if self._bucket is not None and not self._bucket.take():
            return Response(429, b"Too Many Requests\n")
        if not self.users:
            return None
        credentials = _basic_credentials(request.headers.get("authorization", ""))
        if credentials is None:
            return UNAUTHORIZED
        user, password = credentials
        name = user.decode("utf-8", "replace")
        hashed = self.users.get(name, DECOY_HASH)
        key = hashlib.sha256(b"\0".join((user, hashed, password))).digest()
        verdict = self._auth_cache.get(key)  # on the loop: a known answer waits for nothing
        if verdict is None:
            if self._checking >= MAX_WAITING_CHECKS:
                return Response(429, b"Too Many Requests: password checks are queued\n")
            self._checking += 1
            try:
                loop = asyncio.get_running_loop()
                verdict = await loop.run_in_executor(_BCRYPT, _matches, password, hashed)
            finally:
                self._checking -= 1
            verdict = verdict and name in self.users
            self._auth_cache[key] = verdict
            while len(self._auth_cache) > AUTH_CACHE_SIZE:
                self._auth_cache.popitem(last=False)
        return None if verdict else UNAUTHORIZED


def _matches(password: bytes, hashed: bytes) -> bool:
    """bcrypt's comparison; it reads at most 72 bytes of a password, as Go's and htpasswd's do."""
    try:
        return bcrypt.checkpw(password[:72], hashed)
    except ValueError:
        return False


def _basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None


class _TokenBucket:
    def __init__(self, interval_s: float, burst: int) -> None:
        self.interval_s, self.burst = interval_s, max(burst, 1)
        self._tokens = float(self.burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) / self.interval_s)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


def _ssl_context(tls: TlsServerConfig, directory: Path) -> ssl.SSLContext:
    def path(value: Path | None) -> Path | None:
        return None if value is None else directory / value

    if not (tls.cert or tls.cert_file):
        raise ConfigError("tls_server_config: missing one of cert or cert_file")
    if not (tls.key or tls.key_file):
        raise ConfigError("tls_server_config: missing one of key or key_file")
    if tls.client_auth_type in ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert"):
        raise ConfigError(
            f"tls_server_config: client_auth_type {tls.client_auth_type} asks for a client "
            "certificate without verifying it, which Python's ssl cannot do (and the toolkit "
            "calls insecure): use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
        )
    if tls.curve_preferences:
        raise ConfigError(
            "tls_server_config: curve_preferences cannot be set through Python's ssl module; "
            "remove it (OpenSSL's default curves are used)"
        )
    verify = {
        "": ssl.CERT_NONE,
        "NoClientCert": ssl.CERT_NONE,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }[tls.client_auth_type]
    has_ca = bool(tls.client_ca or tls.client_ca_file)
    if has_ca and verify == ssl.CERT_NONE:
        raise ConfigError(
            "tls_server_config: client CA's have been configured without a client_auth_type"
        )
    if verify != ssl.CERT_NONE and not has_ca:
        raise ConfigError(f"tls_server_config: {tls.client_auth_type} needs client_ca_file")
    if tls.client_allowed_sans is not None and verify != ssl.CERT_REQUIRED:
        raise ConfigError(
            "tls_server_config: client_allowed_sans requires client_auth_type "
            "RequireAndVerifyClientCert"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.cipher_suites:
        context.set_ciphers(":".join(CIPHER_SUITES[name] for name in tls.cipher_suites))
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        _load_chain(context, tls, path(tls.cert_file), path(tls.key_file))
        if verify != ssl.CERT_NONE:
            context.verify_mode = verify
            ca_file = path(tls.client_ca_file)
            context.load_verify_locations(
                cafile=str(ca_file) if ca_file else None,
                cadata=None if ca_file else tls.client_ca,
            )
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"tls_server_config: {exc}") from None
    return context


def _load_chain(
    context: ssl.SSLContext, tls: TlsServerConfig, cert_file: Path | None, key_file: Path | None
) -> None:
    """Loads the certificate and key, from files or inline PEM (through private temporary
    files: the ssl module reads chains only from files)."""
    inline: list[str] = []
    try:
        if cert_file is None:
            cert_file = Path(_private_file(tls.cert or "", inline))
        if key_file is None:
            key_file = Path(_private_file(tls.key.get_secret_value() if tls.key else "", inline))
        context.load_cert_chain(cert_file, key_file)
    finally:
        for name in inline:
            os.unlink(name)


def _private_file(text: str, created: list[str]) -> str:
    fd, name = tempfile.mkstemp(prefix="wattwise-tls-")  # mode 0600
    created.append(name)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    return name


class WebConfig:
    """The file at `path`, loaded now (ConfigError if it is not usable) and again whenever it
    or a file it names changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._settings = load_settings(path)
        self._stamp = self._files_stamp()
        self._error: str | None = None

    def current(self) -> Settings:
        stamp = self._files_stamp()
        with self._lock:
            if stamp != self._stamp:
                # Not said again when the only news is that the files settled.
                news = len(stamp) != len(self._stamp) or not all(
                    map(same_content_likely, self._stamp, stamp)
                )
                self._stamp = stamp
                try:
                    self._settings = load_settings(self.path)
                    if news or self._error is not None:
                        log.info("web configuration %s reloaded", self.path)
                    self._error = None
                except ConfigError as exc:
                    if str(exc) != self._error:
                        log.error("%s; the last good web configuration stays in use", exc)
                    self._error = str(exc)
            return self._settings

    def _files_stamp(self) -> tuple:
        stamps = []
        for name in (self.path, *self._settings.files):
            try:
                stamps.append(file_stamp(name))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    @property
    def uses_tls(self) -> bool:
        return self._settings.tls is not None


def load_settings(path: Path) -> Settings:
    parsed = load_file(path)
    try:
        return Settings(parsed, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"web configuration {path}: {exc}") from None
