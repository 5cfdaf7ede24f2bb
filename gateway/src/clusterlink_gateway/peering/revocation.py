"""Revoked fabric certificates: a CRL file signed by a fabric CA, serials, SHA-256 fingerprints.

Checked in Python after a handshake (never with OpenSSL's CRL flags: those refuse every peer
as soon as one CA of the bundle has no CRL). A certificate is revoked when

* its (issuer, serial) is an entry of the CRL (whose issuer is a CA of the fabric bundle and
  whose signature that CA verifies), or
* its serial is in ``serials`` (any issuer: the fabric CAs are one operator's), or
* the SHA-256 of its DER encoding is in ``fingerprints``.

``Revocation`` is an immutable value: a reload builds a new one and swaps it in.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

_HEX = set(string.hexdigits)


class RevocationError(ValueError):
    """A revocation setting or CRL file cannot be used; the message says which and why."""


def parse_serial(text: str) -> int:
    """A certificate serial written in hex (``0x``, colons and case are ignored)."""
    raw = text.strip().lower().removeprefix("0x").replace(":", "")
    if not raw or not set(raw) <= _HEX:
        raise RevocationError(f"serial {text!r}: not a hexadecimal number")
    return int(raw, 16)


def parse_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint in hex (64 digits; colons and case are ignored), normalised."""
    raw = text.strip().lower().replace(":", "")
    if len(raw) != 64 or not set(raw) <= _HEX:
        raise RevocationError(f"fingerprint {text!r}: not a SHA-256 in hex (64 digits)")
    return raw


def fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate's DER encoding, lower-case hex."""
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class Revocation:
    """The revoked certificates known now; empty by default."""

    crl_entries: frozenset[tuple[bytes, int]] = frozenset()  # (issuer DER name, serial)
    serials: frozenset[int] = frozenset()
    fingerprints: frozenset[str] = frozenset()
    crl_path: Path | None = None
    crl_digest: str | None = None  # SHA-256 of the CRL file, to tell a changed file

    @property
    def empty(self) -> bool:
        return not (self.crl_entries or self.serials or self.fingerprints)

    def reason(self, cert: x509.Certificate) -> str | None:
        """Why ``cert`` is revoked (no secrets: serial and source), or None."""
        if self.empty:
            return None
        serial = cert.serial_number
        if self.crl_entries and (cert.issuer.public_bytes(), serial) in self.crl_entries:
            return f"serial {serial:x} is listed in the CRL {self.crl_path}"
        if serial in self.serials:
            return f"serial {serial:x} is listed in tls.revocation.serials"
        if self.fingerprints:
            digest = fingerprint(cert.public_bytes(serialization.Encoding.DER))
            if digest in self.fingerprints:
                return f"fingerprint {digest} is listed in tls.revocation.fingerprints"
        return None

    def reason_der(self, der: bytes | None) -> str | None:
        """``reason`` for a DER certificate (as ``getpeercert(binary_form=True)`` gives it)."""
        if self.empty or not der:
            return None
        if self.fingerprints:
            digest = fingerprint(der)
            if digest in self.fingerprints:
                return f"fingerprint {digest} is listed in tls.revocation.fingerprints"
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        return self.reason(cert)


def load_crl(path: Path, cas: Sequence[x509.Certificate]) -> x509.CertificateRevocationList:
    """Read a PEM or DER CRL and verify it is signed by one of ``cas``; RevocationError if not."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RevocationError(f"CRL {path}: cannot read: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN" in data:
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise RevocationError(f"CRL {path}: not a PEM or DER X.509 CRL: {exc}") from None
    for ca in cas:
        if ca.subject != crl.issuer:
            continue
        try:
            if crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                return crl
        except TypeError:  # a key type CRLs cannot be signed with
            continue
    issuer = crl.issuer.rfc4514_string()
    raise RevocationError(f"CRL {path}: not signed by a CA of the fabric bundle (issuer {issuer})")


def build_revocation(
    crl: Path | None,
    serials: Iterable[str],
    fingerprints: Iterable[str],
    cas: Sequence[x509.Certificate],
) -> Revocation:
    """The revocation state from the settings; RevocationError names the bad one."""
    entries: frozenset[tuple[bytes, int]] = frozenset()
    digest = None
    if crl is not None:
        loaded = load_crl(crl, cas)
        issuer = loaded.issuer.public_bytes()
        entries = frozenset((issuer, entry.serial_number) for entry in loaded)
        digest = hashlib.sha256(loaded.public_bytes(serialization.Encoding.DER)).hexdigest()
    return Revocation(
        crl_entries=entries,
        serials=frozenset(parse_serial(s) for s in serials),
        fingerprints=frozenset(parse_fingerprint(f) for f in fingerprints),
        crl_path=crl,
        crl_digest=digest,
    )
