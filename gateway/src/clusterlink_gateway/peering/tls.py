"""Fabric mTLS material: the gateway's certificate and key and the fabric CA bundle.

The listener keeps one ``SSLContext`` for its whole life; its SNI callback swaps in the newest
context at the start of every handshake, so reloaded files apply to new connections while
established ones are untouched, and refuses a client whose SNI is not our name. Key material is
never logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

log = logging.getLogger("clusterlink.peering")

ALPN = ["h2"]


class TLSError(Exception):
    """Certificate, key or CA bundle cannot be used; the message names the file and reason."""


@dataclass(frozen=True)
class _Material:
    server: ssl.SSLContext
    client: ssl.SSLContext
    name: str
    not_after: dt.datetime | None
    digest: str


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TLSError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise TLSError(f"{what} {path}: file is empty")
    return data


def _decode_cert(path: Path) -> dict[str, Any]:
    """The certificate as ``SSLSocket.getpeercert()`` would describe it."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - cryptography is optional at runtime
        decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
        if decode is None:
            return {}
        try:
            return dict(decode(str(path)))
        except (ssl.SSLError, OSError) as exc:
            raise TLSError(f"certificate {path}: not a PEM certificate: {exc}") from None
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise TLSError(f"certificate {path}: not a PEM certificate: {exc}") from None
    common_names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    info: dict[str, Any] = {
        "subject": tuple((("commonName", str(attr.value)),) for attr in common_names),
        "notAfter": cert.not_valid_after_utc,
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        info["subjectAltName"] = tuple(
            ("DNS", name) for name in san.value.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        pass
    return info


def _name_from(cert: dict[str, Any]) -> str | None:
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS" and value:
            return str(value)
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and value:
                return str(value)
    return None


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The verified peer name: first DNS SAN of its certificate; None if it has none (a CN is
    never a peer's identity)."""
    if ssl_object is None:
        return None
    try:
        cert = ssl_object.getpeercert()
    except (ValueError, ssl.SSLError):
        return None
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind == "DNS" and value:
            return str(value)
    return None


def _not_after(cert: dict[str, Any]) -> dt.datetime | None:
    value = cert.get("notAfter")
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        return dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(value), dt.UTC)
    return None


def _base_context(protocol: int, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(ALPN)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TLSError(f"key {key} does not match certificate {cert}") from None
        raise TLSError(
            f"certificate {cert} / key {key}: cannot load: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise TLSError(f"certificate {cert} / key {key}: cannot load: {exc}") from None
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        raise TLSError(f"CA bundle {ca}: cannot load: {exc}") from None
    if not ctx.get_ca_certs():
        raise TLSError(f"CA bundle {ca}: contains no CA certificate")
    return ctx


def _server_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, cert, key, ca)
    ctx.num_tickets = 0  # links are long-lived; tickets would only cost CPU
    return ctx


def _client_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca)
    ctx.check_hostname = True
    return ctx


class TLSContexts:
    """Fabric mTLS material (gateway cert+key, CA bundle), reloadable without restart."""

    def __init__(self, cert: Path, key: Path, ca: Path, *, handshake_timeout: float = 10.0) -> None:
        self.cert, self.key, self.ca = Path(cert), Path(key), Path(ca)
        self.handshake_timeout = handshake_timeout
        self._signature = self._stat()
        self._current = self._load()
        self._listener = _server_context(self.cert, self.key, self.ca)
        self._listener.sni_callback = self._select_context

    @property
    def local_name(self) -> str:
        """Our peer name, from our own certificate (first DNS SAN, else CN)."""
        return self._current.name

    @property
    def not_after(self) -> dt.datetime | None:
        """When our certificate expires."""
        return self._current.not_after

    def server_context(self) -> ssl.SSLContext:
        """The listener's context; stable across reloads."""
        return self._listener

    def client_context(self) -> ssl.SSLContext:
        """The current context for dialing a peer (pass ``server_hostname=<peer name>``)."""
        return self._current.client

    def reload(self) -> bool:
        """Re-read the files; True if their content changed. Bad files: TLSError, old kept."""
        signature = self._stat()
        material = self._load(unless=self._current.digest)
        self._signature = signature
        if material is None:
            return False
        self._current = material
        log.info(
            "TLS material reloaded",
            extra={"peer_name": material.name, "not_after": str(material.not_after)},
        )
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Reload whenever a file's mtime, size or inode changes; errors are logged, not raised."""
        failed: tuple[Any, ...] | None = None
        while True:
            await asyncio.sleep(interval)
            signature = self._stat()
            if signature == self._signature or signature == failed:
                continue
            try:
                self.reload()
                failed = None
            except TLSError as exc:
                failed = signature
                log.error(
                    "TLS reload failed; keeping the current material", extra={"error": str(exc)}
                )

    # -- internals -----------------------------------------------------------------------------

    def _select_context(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _: Any
    ) -> int | None:
        """SNI callback: refuse a client that asks for another name (or none); the handshake
        then fails with CALLBACK_FAILED, which the peer port counts as ``bad-name``."""
        current = self._current
        if server_name != current.name:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_object.context = current.server
        return None

    def _stat(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for path in (self.cert, self.key, self.ca):
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    @overload
    def _load(self) -> _Material: ...
    @overload
    def _load(self, unless: str) -> _Material | None: ...

    def _load(self, unless: str | None = None) -> _Material | None:
        """Build contexts from the files; None if their digest is ``unless`` (unchanged)."""
        digest = hashlib.sha256()
        for path, what in ((self.cert, "certificate"), (self.key, "key"), (self.ca, "CA bundle")):
            digest.update(_read(path, what))
        if digest.hexdigest() == unless:
            return None
        info = _decode_cert(self.cert)
        name = _name_from(info)
        if not name:
            raise TLSError(f"certificate {self.cert}: has neither a DNS SAN nor a CN")
        not_after = _not_after(info)
        if not_after is not None and not_after < dt.datetime.now(dt.UTC):
            raise TLSError(f"certificate {self.cert}: expired at {not_after.isoformat()}")
        server = _server_context(self.cert, self.key, self.ca)
        client = _client_context(self.cert, self.key, self.ca)
        return _Material(server, client, name, not_after, digest.hexdigest())
