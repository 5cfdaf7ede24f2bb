"""Peering grants, sans I/O: the grant text, its signature, and the redemption decision.

A grant is ``clusterlink-grant:v1:<body>.<signature>`` where ``body`` is base64url (no padding)
of canonical JSON (sorted keys, no spaces) and ``signature`` base64url of the granting
gateway's signature over the body bytes. The body holds the grant id, the granting sites (name
and endpoints), the granting fabric's public CA bundle, the granting gateway's certificate (the
signature's key), the ``peer_name`` the redeemer will be known as, the expiry (unix seconds)
and a one-time secret (32 random bytes). Never a private key.

The granting side keeps a ``GrantRecord`` (only a hash of the secret, plus uses left, expiry,
revoked flag, redemptions); ``decide`` turns a redemption attempt into accept or a reason class.
Nothing here touches a socket or the store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

PREFIX = "clusterlink-grant:v1:"
SECRET_BYTES = 32
MAX_TEXT = 32768  # a grant text (bundle included) is refused above this size

# Reason classes of a refused redemption (``result`` label of clusterlink_grant_redemptions_total)
ACCEPTED = "accepted"
EXPIRED = "expired"  # the grant's expiry passed
USED_UP = "used-up"  # no uses left
REPLAYED = "replayed"  # the very same redemption request again after its last use
TAMPERED = "tampered"  # signature, body or the redeemer's proof does not verify
REVOKED = "revoked"  # revoked on the granting side
UNKNOWN = "unknown"  # no such grant here
BAD_REQUEST = "bad-request"  # malformed, oversized, or not for the redeemer that presents it
REASONS = (EXPIRED, USED_UP, REPLAYED, TAMPERED, REVOKED, UNKNOWN, BAD_REQUEST)
RESULTS = (ACCEPTED, *REASONS)


class GrantError(ValueError):
    """A grant text or redemption request that cannot be used; ``reason`` is a class above."""

    def __init__(self, message: str, reason: str = TAMPERED) -> None:
        super().__init__(message)
        self.reason = reason


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise GrantError(f"not base64url: {exc}") from None


def secret_hash(secret: str) -> str:
    """What the granting side stores instead of the secret."""
    return hashlib.sha256(b"clusterlink-grant-secret:" + secret.encode()).hexdigest()


def new_secret() -> str:
    return b64e(secrets.token_bytes(SECRET_BYTES))


def new_id() -> str:
    return "g-" + secrets.token_hex(8)


# -- signatures -------------------------------------------------------------------------------


def sign(key_pem: bytes, data: bytes) -> bytes:
    """Sign ``data`` with a PEM private key (EC: ECDSA-SHA256, RSA: PKCS#1 v1.5, Ed25519)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise GrantError(f"unsupported key type {type(key).__name__}", BAD_REQUEST)


def verify(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return True


def load_bundle(pem: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise GrantError(f"CA bundle: not PEM certificates: {exc}", BAD_REQUEST) from None
    if not certs:
        raise GrantError("CA bundle: no certificate", BAD_REQUEST)
    return certs


def load_cert(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise GrantError(f"certificate: not PEM: {exc}", BAD_REQUEST) from None


def issued_by(cert: x509.Certificate, bundle: list[x509.Certificate]) -> bool:
    """``cert`` is signed directly by one of the CAs of ``bundle`` (no intermediates)."""
    for ca in bundle:
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            continue
        return True
    return False


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.value.get_values_for_type(x509.DNSName)]


def fingerprint(cert_der: bytes) -> str:
    return hashlib.sha256(cert_der).hexdigest()


# -- the grant --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    name: str
    endpoints: tuple[str, ...]  # "host:port"


@dataclass(frozen=True)
class Grant:
    """The signed body of a grant."""

    id: str
    sites: tuple[Site, ...]
    ca: str  # the granting fabric's CA bundle, PEM (public)
    cert: str  # the granting gateway's certificate, PEM: the signature's key
    peer_name: str
    expires: int  # unix seconds
    secret: str  # base64url of SECRET_BYTES random bytes

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sites": [{"name": s.name, "endpoints": list(s.endpoints)} for s in self.sites],
            "ca": self.ca,
            "cert": self.cert,
            "peer_name": self.peer_name,
            "expires": self.expires,
            "secret": self.secret,
        }

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]


@dataclass(frozen=True)
class Decoded:
    grant: Grant
    text: str  # the grant text, whitespace removed
    body: bytes  # the signed bytes
    digest: str  # sha256 of the signed bytes


def encode(grant: Grant, key_pem: bytes) -> str:
    """The grant text, signed with the granting gateway's key."""
    body = canonical(grant.body())
    return PREFIX + b64e(body) + "." + b64e(sign(key_pem, body))


def decode(text: str) -> Decoded:
    """Parse and check a grant text: shape, then the signature against the certificate inside,
    which must be issued by the bundle inside and name a granting site. GrantError (reason
    ``tampered`` or ``bad-request``) otherwise. Expiry is not judged here."""
    text = "".join(text.split())  # copy-paste may wrap it
    if len(text) > MAX_TEXT:
        raise GrantError(f"grant text longer than {MAX_TEXT} characters", BAD_REQUEST)
    if not text.startswith(PREFIX):
        raise GrantError(f"not a grant: it does not start with {PREFIX!r}", BAD_REQUEST)
    body_b64, sep, sig_b64 = text[len(PREFIX) :].partition(".")
    if not sep:
        raise GrantError("grant text has no signature")
    body, signature = b64d(body_b64), b64d(sig_b64)
    try:
        doc = json.loads(body)
        grant = Grant(
            id=str(doc["id"]),
            sites=_sites(doc["sites"]),
            ca=str(doc["ca"]),
            cert=str(doc["cert"]),
            peer_name=str(doc["peer_name"]),
            expires=int(doc["expires"]),
            secret=str(doc["secret"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise GrantError(f"grant body is not a grant: {exc!r}") from None
    if canonical(grant.body()) != body:
        raise GrantError("grant body is not in canonical form")
    cert = load_cert(grant.cert)
    if not verify(cert, signature, body):
        raise GrantError("grant signature does not verify")
    if not issued_by(cert, load_bundle(grant.ca)):
        raise GrantError("grant signer is not issued by the CA bundle in the grant")
    if not set(dns_names(cert)) & set(grant.site_names):
        raise GrantError("grant signer does not name a granting site")
    return Decoded(grant, text, body, hashlib.sha256(body).hexdigest())


def _sites(items: Any) -> tuple[Site, ...]:
    """Sites from their JSON form (``[{name, endpoints}]``); KeyError/TypeError if malformed."""
    return tuple(Site(str(s["name"]), tuple(str(e) for e in s["endpoints"])) for s in items)


# -- the redemption request -------------------------------------------------------------------


@dataclass(frozen=True)
class Redemption:
    """What the redeemer sends over the grant connection, signed with its own key."""

    grant: str  # the grant text
    sites: tuple[Site, ...]  # the redeemer's sites (the first is the gateway that dials)
    ca: str  # the redeemer's CA bundle, PEM
    cert: str  # the redeemer's certificate, PEM (issued by ``ca``, names sites[0])
    binding: str  # sha256 of the granting gateway's certificate it saw in the handshake

    def body(self) -> dict[str, Any]:
        return {
            "grant": self.grant,
            "sites": [{"name": s.name, "endpoints": list(s.endpoints)} for s in self.sites],
            "ca": self.ca,
            "cert": self.cert,
            "binding": self.binding,
        }


def redemption_request(r: Redemption, key_pem: bytes) -> bytes:
    body = canonical(r.body())
    return canonical({"body": b64e(body), "signature": b64e(sign(key_pem, body))})


@dataclass(frozen=True)
class Presented:
    """A parsed, verified redemption request."""

    redemption: Redemption
    decoded: Decoded
    digest: str  # sha256 of the whole request (replay detection)


def parse_redemption(raw: bytes, *, binding: str) -> Presented:
    """Parse a redemption request and check the redeemer's proof: its certificate is issued by
    the bundle it hands over, names its first site, signed the request, and saw our certificate
    (``binding``). GrantError otherwise."""
    try:
        outer = json.loads(raw)
        body = b64d(outer["body"])
        signature = b64d(outer["signature"])
        doc = json.loads(body)
        r = Redemption(
            grant=str(doc["grant"]),
            sites=_sites(doc["sites"]),
            ca=str(doc["ca"]),
            cert=str(doc["cert"]),
            binding=str(doc["binding"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise GrantError(f"redemption request is malformed: {exc!r}", BAD_REQUEST) from None
    if not r.sites:
        raise GrantError("redemption request names no site", BAD_REQUEST)
    decoded = decode(r.grant)
    cert = load_cert(r.cert)
    if not verify(cert, signature, body):
        raise GrantError("redemption request signature does not verify")
    if not issued_by(cert, load_bundle(r.ca)):
        raise GrantError("redeemer certificate is not issued by the bundle it hands over")
    if r.sites[0].name not in dns_names(cert):
        raise GrantError("redeemer certificate does not name its first site")
    if r.binding != binding:
        raise GrantError("redemption request was made for another gateway's certificate")
    return Presented(r, decoded, hashlib.sha256(raw).hexdigest())


# -- the granting side's record and decision --------------------------------------------------


@dataclass
class GrantRecord:
    """What the granting side keeps of a grant (never the secret)."""

    id: str
    peer_name: str
    secret_hash: str
    body_digest: str
    expires: int
    uses: int
    uses_left: int
    created: int
    revoked: bool = False
    redemptions: list[dict[str, Any]] = field(default_factory=list)

    def metadata(self, now: float) -> dict[str, Any]:
        """The public view (API listings): no secret, no hash."""
        if self.revoked:
            state = "revoked"
        elif now >= self.expires:
            state = "expired"
        elif self.uses_left <= 0:
            state = "used-up"
        else:
            state = "active"
        return {
            "id": self.id,
            "peer_name": self.peer_name,
            "state": state,
            "created": self.created,
            "expires": self.expires,
            "uses": self.uses,
            "uses_left": self.uses_left,
            "revoked": self.revoked,
            "redemptions": [
                {k: v for k, v in r.items() if k != "request_digest"} for r in self.redemptions
            ],
        }


def decide(record: GrantRecord | None, presented: Presented, now: float) -> str:
    """ACCEPTED or the reason class refusing this redemption."""
    grant = presented.decoded.grant
    if record is None or record.id != grant.id:
        return UNKNOWN
    if presented.decoded.digest != record.body_digest:
        return TAMPERED
    if secret_hash(grant.secret) != record.secret_hash:
        return TAMPERED
    if record.revoked:
        return REVOKED
    if now >= record.expires:
        return EXPIRED
    if record.uses_left <= 0:
        seen = {r.get("request_digest") for r in record.redemptions}
        return REPLAYED if presented.digest in seen else USED_UP
    if presented.redemption.sites[0].name != record.peer_name:
        return BAD_REQUEST
    return ACCEPTED


def redeemed(record: GrantRecord, presented: Presented, now: float) -> GrantRecord:
    """The record after an accepted redemption."""
    r = presented.redemption
    record.uses_left -= 1
    record.redemptions.append(
        {
            "at": int(now),
            "sites": [s.name for s in r.sites],
            "ca_sha256": hashlib.sha256(r.ca.encode()).hexdigest(),
            "request_digest": presented.digest,
        }
    )
    return record
