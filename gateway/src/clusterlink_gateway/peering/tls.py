"""Fabric mTLS material: the gateway's certificate and key, the fabric CA bundle, revocation.

The listener keeps one ``SSLContext`` for its whole life; its SNI callback swaps in the newest
context at the start of every handshake, so reloaded files apply to new connections while
established ones are untouched, and refuses a client whose SNI is not our name. Key material is
never logged.

Every load goes through ``trust.accept_material`` (the one acceptance rule). Peers with their
own trust anchors (``set_peer_bundles``, see ``anchors``) add those to the listener's verify
store and get a client context of their own (verifying against their anchors only); the
binding rule (``bind``) then decides which name a foreign-issued certificate may speak for.
There is one reload path: ``TLSContexts.reload`` (called by SIGHUP and by ``watch``, the file
watcher); subscribers (the data plane) hear of every change. A refusal keeps the old material,
is counted through ``on_outcome`` and logged by the watcher once per distinct failure. Reloads
keep the Peers' anchors.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509

from .admission import Admitted, Refused
from .anchors import PeerBundles, bind, changed_names, direct_issuer, holds
from .contexts import (
    ALPN,
    GRANT_ALPN,
    GRANT_SNI,
    REVERSE_ALPN,
    SERVER_ALPN,
    base_context,
    grant_server_context,
    peer_clients,
    peer_der,
    server_context,
)
from .revocation import Revocation, RevocationError, build_revocation
from .trust import (
    CertificateFacts,
    Material,
    TLSError,
    TrustAnchors,
    accept_material,
    read_file,
)

log = logging.getLogger("clusterlink.peering")

REVOKED_LOG_INTERVAL = 60.0  # seconds between two "certificate revoked" dial lines per peer

__all__ = [
    "ALPN",
    "GRANT_ALPN",
    "GRANT_SNI",
    "REVERSE_ALPN",
    "SERVER_ALPN",
    "AdminTLS",
    "CertificateFacts",
    "TLSChange",
    "TLSContexts",
    "TLSError",
    "TLSSettings",
]


@dataclass(frozen=True)
class TLSSettings:
    """What ``tls`` in gateway.yaml names, plus the name our certificate must carry."""

    cert: Path
    key: Path
    ca: Path
    expected_name: str | None = None  # peer_name; None: the first DNS SAN (tests, tools)
    crl: Path | None = None
    serials: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()

    def watched(self) -> tuple[Path, ...]:
        return (self.cert, self.key, self.ca) + ((self.crl,) if self.crl else ())


@dataclass(frozen=True)
class TLSChange:
    """What a reload changed: our material (cert/key/CA) and/or the revocation state."""

    material: bool
    revocation: bool


@dataclass(frozen=True)
class _State:
    settings: TLSSettings
    material: Material
    revocation: Revocation
    server: ssl.SSLContext = field(repr=False)
    client: ssl.SSLContext = field(repr=False)
    reverse_client: ssl.SSLContext = field(repr=False)
    grant_server: ssl.SSLContext | None = field(default=None, repr=False)
    signature: tuple[Any, ...] = ()  # the watched files' stat when they were read
    bundles: PeerBundles = field(default_factory=dict, repr=False)  # anchors built in
    # peer name -> (bundle digest, forward client context, reverse client context)
    peer_clients: dict[str, tuple[str, ssl.SSLContext, ssl.SSLContext]] = field(
        default_factory=dict, repr=False
    )

    @property
    def name(self) -> str:
        assert self.material.name is not None
        return self.material.name


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


def _unchanged_since(material: Material, cert: Path, key: Path, ca: Path) -> None:
    """The contexts were built from the paths: refuse if the files changed since they were
    checked (a renewal caught half-written); the next change is tried again."""
    digest = hashlib.sha256()
    for path, what in ((cert, "certificate"), (key, "key"), (ca, "CA bundle")):
        digest.update(hashlib.sha256(read_file(path, what)).digest())
    if digest.hexdigest() != material.digest:
        raise TLSError(f"certificate {cert}: files changed while being loaded", "changed")


def load_state(settings: TLSSettings, bundles: PeerBundles | None = None) -> _State:
    """Apply the acceptance rule to the files and settings and build the contexts (with the
    Peers' own anchors ``bundles``)."""
    bundles = dict(bundles or {})
    anchors = TrustAnchors.from_bundle(read_file(settings.ca, "CA bundle"), settings.ca)
    try:
        revocation = build_revocation(
            settings.crl, settings.serials, settings.fingerprints, anchors.fabric
        )
    except RevocationError as exc:
        raise TLSError(f"tls.revocation: {exc}", "bad-crl") from None
    material = accept_material(
        settings.cert,
        settings.key,
        settings.ca,
        expected_name=settings.expected_name,
        revocation=revocation,
    )
    server = server_context(settings.cert, settings.key, settings.ca, bundles)
    client = base_context(ssl.PROTOCOL_TLS_CLIENT, settings.cert, settings.key, settings.ca)
    client.set_alpn_protocols(ALPN)
    client.check_hostname = True
    reverse = base_context(ssl.PROTOCOL_TLS_CLIENT, settings.cert, settings.key, settings.ca)
    reverse.set_alpn_protocols([REVERSE_ALPN])
    reverse.check_hostname = True
    per_peer = peer_clients(settings.cert, settings.key, settings.ca, bundles)
    grant = grant_server_context(settings.cert, settings.key, settings.ca)
    _unchanged_since(material, settings.cert, settings.key, settings.ca)
    return _State(
        settings, material, revocation, server, client, reverse, grant, (), bundles, per_peer
    )


Outcome = Callable[[str, "TLSError | None"], None]
Subscriber = Callable[[TLSChange], None]


def _stat(paths: tuple[Path, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class TLSContexts:
    """Fabric mTLS material (gateway cert+key, CA bundle, revocation), reloadable without
    restart."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        ca: Path,
        *,
        handshake_timeout: float = 10.0,
        expected_name: str | None = None,
        crl: Path | None = None,
        serials: tuple[str, ...] = (),
        fingerprints: tuple[str, ...] = (),
    ) -> None:
        settings = TLSSettings(
            Path(cert), Path(key), Path(ca), expected_name, crl, tuple(serials), tuple(fingerprints)
        )
        self.handshake_timeout = handshake_timeout
        self._signature = _stat(settings.watched())
        self._bundles: PeerBundles = {}  # Peers' own anchors, as the registry holds them now
        self._current = load_state(settings)
        self._listener = base_context(
            ssl.PROTOCOL_TLS_SERVER, settings.cert, settings.key, settings.ca
        )
        self._listener.set_alpn_protocols(SERVER_ALPN)
        # The verify mode of a connection is the listener's, whatever context SNI swaps in: a
        # certificate, when sent, must verify; a missing one is refused after the handshake
        # (``accept.admission_refusal``, reason no-certificate) except for a grant redemption.
        self._listener.verify_mode = ssl.CERT_OPTIONAL
        self._listener.sni_callback = self._select_context
        self.subscribers: list[Subscriber] = []
        self.on_outcome: Outcome | None = None  # ("success" | "failure", error): metrics
        self._logged_failure: str | None = None
        self._revoked_logged: dict[str, float] = {}

    @property
    def settings(self) -> TLSSettings:
        return self._current.settings

    @property
    def local_name(self) -> str:
        """Our peer name: the configured one, which our certificate carries as a DNS SAN."""
        return self._current.name

    @property
    def not_after(self) -> dt.datetime | None:
        """When our certificate expires."""
        return self._current.material.not_after

    @property
    def revocation(self) -> Revocation:
        return self._current.revocation

    def certificates(self) -> tuple[CertificateFacts, ...]:
        """Expiry facts of the installed material: our certificate, then each fabric CA;
        follows reloads (no file is read here)."""
        return self._current.material.expiry

    def server_context(self) -> ssl.SSLContext:
        """The listener's context; stable across reloads."""
        return self._listener

    def client_context(self, *, reverse: bool = False, peer: str | None = None) -> ssl.SSLContext:
        """The current context for dialing ``peer`` (pass ``server_hostname=<peer name>``); with
        ``reverse``, for a reverse link (ALPN ``REVERSE_ALPN`` only). A Peer with its own
        anchors gets a context verifying against them only; TLSError if they are not built
        into the installed contexts (yet)."""
        bundle = self._bundles.get(peer) if peer is not None else None
        if bundle is None:
            return self._current.reverse_client if reverse else self._current.client
        built = self._current.peer_clients.get(peer or "")
        if built is None or built[0] != bundle.digest:
            raise TLSError(f"the trust anchors of peer {peer!r} are not installed", "unreadable")
        return built[2] if reverse else built[1]

    # -- per-peer trust anchors ----------------------------------------------------------------

    @property
    def peer_bundles(self) -> PeerBundles:
        return self._bundles

    def bound(self, peer: str) -> bool:
        """Whether ``peer`` has its own trust anchors (a foreign party's site)."""
        return peer in self._bundles

    def set_peer_bundles(self, bundles: PeerBundles) -> set[str]:
        """The Peers' own anchors changed: the binding rule uses them at once; the listener's
        verify store and the per-peer client contexts are rebuilt (new handshakes get them
        through the SNI swap). Returns the names whose anchors changed."""
        changed = changed_names(self._bundles, bundles)
        self._bundles = dict(bundles)
        if not changed:
            return changed
        try:
            if _stat(self._current.settings.watched()) != self._signature:
                self.reload()  # the files changed too: one full reload with the new anchors
            else:
                state = load_state(self._current.settings, self._bundles)
                self._current = replace(state, signature=self._current.signature)
            log.info("peer trust anchors installed", extra={"peers": sorted(changed)})
        except TLSError as exc:  # the rule still refuses what the new anchors refuse
            log.error(
                "peer trust anchors not installed; keeping the current contexts",
                extra={"reason": exc.reason, "error": str(exc)},
            )
        return changed

    def bind(self, ssl_object: Any, name: str) -> Admitted | Refused | None:
        """The binding rule (``anchors.bind``) for an accepted certificate claiming ``name``;
        None when no Peer has its own anchors (nothing to check, as before)."""
        bundles = self._bundles
        if not bundles:
            return None
        der = peer_der(ssl_object)
        if der is None:
            return Refused("wrong-anchor", "no certificate to check", name)
        try:
            leaf = x509.load_der_x509_certificate(der)
        except ValueError:
            return Refused("wrong-anchor", "certificate cannot be parsed", name)
        return bind(leaf, name, self._current.material.anchors.fabric, bundles)

    def holds(self, der: bytes | None, name: str) -> bool:
        """Whether an established link's certificate still passes the binding for ``name``."""
        return holds(der, name, self._current.material.anchors.fabric, self._bundles)

    def dial_refusal(self, ssl_object: Any, peer: str) -> str | None:
        """After dialing ``peer``: why its certificate must be refused (a Peer with its own
        anchors: the leaf must be issued directly by one of them), or None."""
        bundle = self._bundles.get(peer)
        if bundle is None:
            return None
        der = peer_der(ssl_object)
        try:
            leaf = x509.load_der_x509_certificate(der) if der else None
        except ValueError:
            leaf = None
        if leaf is None or direct_issuer(leaf, bundle.certs) is None:
            return f"certificate of {peer!r} is not issued directly by one of its trust anchors"
        return None

    def certificate_der(self) -> bytes:
        """Our installed certificate (DER), the one the listener serves: a grant redemption is
        bound to it."""
        from cryptography.hazmat.primitives import serialization

        return self._current.material.certificate.public_bytes(serialization.Encoding.DER)

    def material_pem(self) -> tuple[bytes, bytes, bytes]:
        """The installed key, certificate and CA bundle (PEM), as accepted: grants are signed
        with and carry these (the key never leaves this process)."""
        material = self._current.material
        return material.key_pem, material.cert_pem, material.ca_pem

    def revoked(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
        """Why the peer certificate of a completed handshake is revoked, or None."""
        revocation = self._current.revocation
        if revocation.empty or ssl_object is None:
            return None
        try:
            der = ssl_object.getpeercert(binary_form=True)
        except (ValueError, ssl.SSLError):
            return None
        return revocation.reason_der(der)

    def report_revoked_dial(self, peer: str, address: str, why: str) -> None:
        """Log a dial refused because the peer's certificate is revoked: once a minute per peer
        (its pool and heartbeats keep redialing)."""
        now = time.monotonic()
        if now - self._revoked_logged.get(peer, -REVOKED_LOG_INTERVAL) < REVOKED_LOG_INTERVAL:
            return
        self._revoked_logged[peer] = now
        log.warning(
            "peer link refused: certificate revoked",
            extra={"peer": peer, "address": address, "reason": why},
        )

    # -- reload --------------------------------------------------------------------------------

    def prepare(self, settings: TLSSettings | None = None) -> _State:
        """Load and check new material (default: the current settings, files re-read) without
        installing it; TLSError (counted) if refused."""
        settings = settings or self._current.settings
        signature = _stat(settings.watched())
        try:
            state = load_state(settings, self._bundles)
        except Exception as exc:
            self._signature = signature  # the watcher retries once the files change again
            if isinstance(exc, TLSError):
                self._outcome("failure", exc)
                raise
            log.exception("TLS material could not be checked")
            error = TLSError(f"cannot check the TLS material: {exc!r}")
            self._outcome("failure", error)
            raise error from None
        return replace(state, signature=signature)

    def commit(self, state: _State) -> TLSChange | None:
        """Install prepared material; the change (None if nothing changed), told to subscribers."""
        old = self._current
        if state.signature:
            self._signature = state.signature
        change = TLSChange(
            material=state.material.digest != old.material.digest or state.name != old.name,
            revocation=state.revocation != old.revocation
            or state.material.anchors != old.material.anchors,
        )
        self._logged_failure = None
        if not (change.material or change.revocation or state.settings != old.settings):
            return None
        self._current = state
        self._outcome("success", None)
        log.info(
            "TLS material reloaded",
            extra={
                "peer_name": state.name,
                "not_after": str(state.material.not_after),
                "material_changed": change.material,
                "revocation_changed": change.revocation,
                "revoked_entries": len(state.revocation.crl_entries)
                + len(state.revocation.serials)
                + len(state.revocation.fingerprints),
            },
        )
        for subscriber in list(self.subscribers):
            try:
                subscriber(change)
            except Exception:
                log.exception("TLS change subscriber failed")
        return change

    def reload(self, settings: TLSSettings | None = None) -> bool:
        """Re-read the files (with new ``settings``, e.g. on SIGHUP); True if anything changed.
        A refusal raises TLSError and keeps the old material."""
        return self.commit(self.prepare(settings)) is not None

    async def watch(self, interval: float = 1.0) -> None:
        """The certificate file watcher: reload when a watched file (cert, key, CA bundle, CRL)
        changes its mtime, size or inode. Refusals are logged once per distinct failure."""
        while True:
            await asyncio.sleep(interval)
            if _stat(self._current.settings.watched()) == self._signature:
                continue
            try:
                self.reload()
            except TLSError as exc:
                if str(exc) != self._logged_failure:
                    self._logged_failure = str(exc)
                    log.error(
                        "TLS reload refused; keeping the current material",
                        extra={"reason": exc.reason, "error": str(exc)},
                    )

    # -- internals -----------------------------------------------------------------------------

    def _outcome(self, result: str, exc: TLSError | None) -> None:
        if self.on_outcome is not None:
            self.on_outcome(result, exc)

    def _select_context(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _: Any
    ) -> int | None:
        """SNI callback: refuse a client that asks for another name (or none); the handshake
        then fails with CALLBACK_FAILED, which the peer port counts as ``bad-name``."""
        current = self._current
        if server_name == GRANT_SNI and current.grant_server is not None:
            ssl_object.context = current.grant_server
            return None
        if server_name != current.name:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_object.context = current.server
        return None


@dataclass(frozen=True)
class AdminMaterial:
    """Accepted admin listener material: its server context and what was learned from it."""

    context: ssl.SSLContext = field(repr=False)
    material: Material = field(repr=False)


class AdminTLS:
    """The admin TCP listener's material (server cert+key, admin client CA), reloadable: the
    listening context's SNI callback swaps in the newest context at every handshake (a live
    ``SSLContext`` cannot drop a CA, so a replaced client CA needs a fresh context)."""

    def __init__(self, cert: Path, key: Path, client_ca: Path) -> None:
        self._current = self.prepare(cert, key, client_ca)
        self._listener = self.prepare(cert, key, client_ca).context
        self._listener.sni_callback = self._select_context

    @staticmethod
    def prepare(cert: Path, key: Path, client_ca: Path) -> AdminMaterial:
        """A server context from the files, through the acceptance rule; TLSError if refused."""
        material = accept_material(cert, key, client_ca, expected_name=None, purpose="admin")
        context = base_context(ssl.PROTOCOL_TLS_SERVER, Path(cert), Path(key), Path(client_ca))
        return AdminMaterial(context, material)

    def context(self) -> ssl.SSLContext:
        """The listening context; stable across reloads."""
        return self._listener

    def commit(self, staged: AdminMaterial) -> None:
        self._current = staged

    def certificates(self) -> tuple[CertificateFacts, ...]:
        """Expiry facts of the installed admin server certificate (``kind`` "admin")."""
        return self._current.material.expiry

    def _select_context(self, ssl_object: ssl.SSLObject, _name: str | None, _: Any) -> None:
        ssl_object.context = self._current.context
