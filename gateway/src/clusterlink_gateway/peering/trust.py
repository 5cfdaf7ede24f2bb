"""The one rule deciding whether a certificate, key and CA bundle may be installed.

Every path that installs TLS material (start-up, ``config check``, SIGHUP, the certificate file
watcher, the admin listener) calls ``accept_material``; a refusal raises ``TLSError`` whose
``reason`` is a short class (the ``reason`` label of the reload-failure counter) and whose
message names the file and what is wrong. Nothing here touches a socket.

Trust anchors are an input (``TrustAnchors``): today the fabric CAs of the bundle, valid for any
name; a per-peer anchor (a foreign party's CA valid for named peers only) is one more entry
there, not a second rule.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

from .revocation import Revocation

MAX_CHAIN = 5  # intermediates followed from the leaf to an anchor

# Refusal classes (the ``reason`` label of clusterlink_tls_reload_failures_total).
REASONS = (
    "unreadable",  # a file is missing, unreadable or empty
    "malformed",  # not a PEM certificate / key / CA bundle / CRL
    "key-mismatch",  # the key is not the certificate's
    "unknown-ca",  # the certificate does not chain to a trust anchor
    "expired",  # expired or not valid yet (leaf or anchor)
    "no-san",  # no DNS subjectAltName (CN-only certificates are refused)
    "wrong-name",  # the DNS SANs do not carry this gateway's peer_name
    "revoked",  # the certificate itself is revoked
    "bad-crl",  # the revocation settings or CRL cannot be used
    "changed",  # the files changed while they were loaded (retried on the next change)
)


class TLSError(Exception):
    """Certificate, key or CA bundle cannot be used; the message names the file and reason."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TrustAnchors:
    """CAs a certificate may chain to: ``per_peer[name]`` (a foreign party's own CAs, Peer
    ``spec.trust``) for that peer name only, ``fabric`` for every other name."""

    fabric: tuple[x509.Certificate, ...]
    per_peer: Mapping[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)

    def for_name(self, name: str | None) -> tuple[x509.Certificate, ...]:
        """The anchors a certificate for ``name`` may chain to: its own if it has any (the
        fabric CA cannot speak for a foreign party's site), else the fabric CAs."""
        own = self.per_peer.get(name) if name else None
        return tuple(own) if own else self.fabric

    @classmethod
    def from_bundle(cls, data: bytes, path: Path) -> TrustAnchors:
        try:
            cas = tuple(x509.load_pem_x509_certificates(data))
        except ValueError as exc:
            raise TLSError(f"CA bundle {path}: not a PEM certificate bundle: {exc}") from None
        if not cas:
            raise TLSError(f"CA bundle {path}: contains no CA certificate")
        return cls(cas)


@dataclass(frozen=True)
class CertificateFacts:
    """What an operator needs to tell a certificate apart and see it expire."""

    kind: str  # "gateway" (our certificate), "ca" (a CA of the fabric bundle), "admin"
    subject: str  # RFC 4514, e.g. "CN=west"
    fingerprint: str  # SHA-256 of the DER certificate, lower-case hex
    not_after: dt.datetime  # UTC

    @classmethod
    def of(cls, kind: str, cert: x509.Certificate) -> CertificateFacts:
        return cls(
            kind,
            cert.subject.rfc4514_string(),
            cert.fingerprint(hashes.SHA256()).hex(),
            cert.not_valid_after_utc,
        )

    def seconds_left(self, now: dt.datetime | None = None) -> float:
        """Seconds until ``not_after``; negative once expired."""
        return (self.not_after - (now or dt.datetime.now(dt.UTC))).total_seconds()

    def document(self, now: dt.datetime | None = None) -> dict[str, object]:
        """The ``/v1/status`` ``certificates[]`` entry."""
        left = self.seconds_left(now)
        return {
            "kind": self.kind,
            "subject": self.subject,
            "fingerprint_sha256": self.fingerprint,
            "not_after": self.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expires_in_seconds": int(left // 1),
            "expired": left <= 0,
        }


@dataclass(frozen=True)
class Material:
    """Accepted material: the bytes to build contexts from and what was learned from them."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    certificate: x509.Certificate
    name: str | None  # the DNS SAN this gateway is known by (fabric material)
    not_after: dt.datetime
    anchors: TrustAnchors
    digest: str  # SHA-256 over the three files, to tell changed files

    @cached_property
    def expiry(self) -> tuple[CertificateFacts, ...]:
        """Our certificate (``kind`` "gateway", or "admin" for admin material) and, for fabric
        material, every CA of the bundle (``kind`` "ca"); computed once per material."""
        if self.name is None:  # admin material: the CA bundle is the admin *client* CA
            return (CertificateFacts.of("admin", self.certificate),)
        own = CertificateFacts.of("gateway", self.certificate)
        return (own, *(CertificateFacts.of("ca", ca) for ca in self.anchors.fabric))


def read_file(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TLSError(f"{what} {path}: cannot read: {exc.strerror or exc}", "unreadable") from None
    if not data.strip():
        raise TLSError(f"{what} {path}: file is empty", "unreadable")
    return data


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.value.get_values_for_type(x509.DNSName) if n]


def _check_validity(cert: x509.Certificate, what: str, now: dt.datetime) -> None:
    if cert.not_valid_after_utc < now:
        raise TLSError(f"{what}: expired at {cert.not_valid_after_utc.isoformat()}", "expired")
    if cert.not_valid_before_utc > now:
        raise TLSError(
            f"{what}: not valid before {cert.not_valid_before_utc.isoformat()}", "expired"
        )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchors: tuple[x509.Certificate, ...],
    what: str,
    now: dt.datetime,
) -> x509.Certificate:
    """The anchor ``leaf`` chains to (through ``intermediates``); TLSError if none."""
    current = leaf
    for _ in range(MAX_CHAIN):
        for anchor in anchors:
            if _issued_by(current, anchor):
                _check_validity(anchor, f"{what}: its CA {anchor.subject.rfc4514_string()}", now)
                return anchor
        step = next((c for c in intermediates if c is not current and _issued_by(current, c)), None)
        if step is None:
            break
        _check_validity(step, f"{what}: intermediate {step.subject.rfc4514_string()}", now)
        current = step
    raise TLSError(
        f"{what}: not issued by a CA of the bundle (issuer {leaf.issuer.rfc4514_string()})",
        "unknown-ca",
    )


def check_name(cert: x509.Certificate, what: str, expected: str | None) -> str:
    """The name the certificate is accepted under: ``expected`` if it is one of its DNS SANs
    (any DNS SAN, the first, when no name is expected)."""
    names = dns_names(cert)
    if not names:
        raise TLSError(
            f"{what}: has no DNS subjectAltName (a certificate with only a CN is not accepted)",
            "no-san",
        )
    if expected is None:
        return names[0]
    if expected not in names:
        raise TLSError(
            f"{what}: is for {', '.join(names)}, not for this gateway's peer_name {expected!r}",
            "wrong-name",
        )
    return expected


def _check_key(cert: x509.Certificate, key_pem: bytes, cert_path: Path, key_path: Path) -> None:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except UnsupportedAlgorithm as exc:
        raise TLSError(f"key {key_path}: unsupported key type: {exc}") from None
    except TypeError:
        raise TLSError(
            f"key {key_path}: is encrypted (a key without passphrase is needed)"
        ) from None
    except ValueError as exc:
        raise TLSError(f"key {key_path}: not a PEM private key: {exc}") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise TLSError(f"key {key_path} does not match certificate {cert_path}", "key-mismatch")


def accept_material(
    cert: Path,
    key: Path,
    ca: Path,
    *,
    expected_name: str | None,
    revocation: Revocation | None = None,
    purpose: Literal["fabric", "admin"] = "fabric",
    now: dt.datetime | None = None,
) -> Material:
    """Decide whether ``cert``/``key``/``ca`` may be installed; TLSError (with ``reason``) if not.

    Fabric material: the certificate chains to a CA of ``ca`` (the fabric bundle), its key
    matches, ``expected_name`` (the configured ``peer_name``) is one of its DNS SANs, it is
    valid now, and ``revocation`` does not list it. Admin material (``purpose="admin"``): ``ca``
    is the admin *client* CA, so the chain and name are not checked; key, validity and a usable
    CA bundle are.
    """
    now = now or dt.datetime.now(dt.UTC)
    cert_pem = read_file(cert, "certificate")
    key_pem = read_file(key, "key")
    ca_pem = read_file(ca, "CA bundle")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise TLSError(f"certificate {cert}: not a PEM certificate: {exc}") from None
    leaf, intermediates = chain[0], chain[1:]
    what = f"certificate {cert}"
    anchors = TrustAnchors.from_bundle(ca_pem, ca)
    _check_key(leaf, key_pem, cert, key)
    _check_validity(leaf, what, now)
    name: str | None = None
    if purpose == "fabric":
        name = check_name(leaf, what, expected_name)
        check_chain(leaf, intermediates, anchors.for_name(name), what, now)
        why = revocation.reason(leaf) if revocation is not None else None
        if why is not None:
            raise TLSError(f"{what}: is revoked ({why})", "revoked")
    digest = hashlib.sha256()
    for data in (cert_pem, key_pem, ca_pem):
        digest.update(hashlib.sha256(data).digest())
    return Material(
        cert_pem, key_pem, ca_pem, leaf, name, leaf.not_valid_after_utc, anchors, digest.hexdigest()
    )
