"""Throwaway certificates for tests: a CA and leaf certificates signed by it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Issued:
    cert: Path
    key: Path
    serial: int = 0


class TestCA:
    """A self-signed ECDSA P-256 CA that issues leaf certificates into a directory."""

    __test__ = False

    def __init__(self, directory: Path, name: str = "test-fabric") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_path = self.dir / f"{name}-ca.pem"
        self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def cert_pem(self) -> bytes:
        """This CA's certificate, PEM (what a peer puts in ``spec.trust.ca``)."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def fingerprint(self) -> str:
        """SHA-256 of this CA's certificate, lower-case hex."""
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def issue(
        self,
        name: str,
        *,
        dns: list[str] | None = None,
        days: int = 30,
        expired: bool = False,
        san: bool = True,
        not_yet_valid: bool = False,
        seconds: int | None = None,
    ) -> Issued:
        """A fabric certificate for ``name`` (CN), DNS SANs ``dns`` (default ``[name]``);
        ``san=False``: no SAN extension at all (a CN-only certificate, ``<name>-cn-only.crt``);
        ``seconds``: valid for that long from now (instead of ``days``)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        if expired:
            start, end = now - dt.timedelta(days=10), now - dt.timedelta(days=1)
        else:
            life = dt.timedelta(seconds=seconds) if seconds is not None else dt.timedelta(days=days)
            start, end = now - dt.timedelta(minutes=5), now + life
        if not_yet_valid:
            start = now + dt.timedelta(days=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
        )
        if san:  # san=False: a CN-only certificate
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in (dns or [name])]),
                critical=False,
            )
        cert = (
            builder.add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        stem = name if san else f"{name}-cn-only"
        out = Issued(self.dir / f"{stem}.crt", self.dir / f"{stem}.key", cert.serial_number)
        out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        out.key.chmod(0o600)
        return out

    def crl(self, path: Path, serials: list[int], *, der: bool = False) -> Path:
        """Write a CRL signed by this CA revoking ``serials`` (PEM, or DER)."""
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=7))
        )
        for serial in serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - dt.timedelta(minutes=1))
                .build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(crl.public_bytes(encoding))
        tmp.replace(path)  # atomic, as an operator's tooling would
        return path
