"""Trust per peer: which anchors may vouch for which peer name (the binding rule).

A Peer with ``spec.trust`` (a foreign party) binds its name to its own anchors: a certificate
for that name must come from them, never from the fabric CA. Every other name (a Peer without
``spec.trust``, this gateway's own name, any name under ``listen.open_fabric``) needs the fabric
CA. The listener verifies against fabric CAs plus every foreign anchor (one store), so after
the handshake this rule decides from the leaf alone: Python 3.11 exposes no verified chain, so
the leaf's DIRECT issuer must be an anchor bound to its name (checked by signature). A foreign
bundle must therefore hold the CA that directly issues that party's gateway certificates, and
fabric certificates must then be issued directly by a CA of the fabric bundle: otherwise an
intermediate missing from the bundles could chain a leaf named like our site to a foreign
root in the shared store. With no foreign anchor, nothing here runs (cost as before).

Pure functions over ``cryptography`` objects; no socket.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from .admission import WRONG_ANCHOR, Admitted, Refused


@dataclass(frozen=True)
class Bundle:
    """One Peer's own anchors, and their PEM (for the TLS verify stores)."""

    certs: tuple[x509.Certificate, ...]
    pem: bytes = field(repr=False)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.pem).hexdigest()

    @classmethod
    def of(cls, certs: Iterable[x509.Certificate]) -> Bundle:
        certs = tuple(certs)
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
        return cls(certs, pem)


PeerBundles = Mapping[str, Bundle]  # peer name -> its own anchors


def direct_issuer(
    leaf: x509.Certificate, anchors: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    """The anchor that signed ``leaf`` itself (name and signature), or None."""
    for anchor in anchors:
        if leaf.issuer != anchor.subject:
            continue
        try:
            leaf.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return anchor
    return None


def _valid(anchor: x509.Certificate, now: dt.datetime) -> bool:
    return anchor.not_valid_before_utc <= now <= anchor.not_valid_after_utc


def bind(
    leaf: x509.Certificate,
    name: str,
    fabric: tuple[x509.Certificate, ...],
    bundles: PeerBundles,
    now: dt.datetime | None = None,
) -> Admitted | Refused:
    """May ``leaf`` (already verified against fabric + foreign anchors) speak for ``name``?

    ``name`` bound (a key of ``bundles``): its direct issuer must be one of that Peer's valid
    anchors (admitted with ``fabric=False``). Otherwise its direct issuer must be a valid
    fabric CA (``fabric=True``).
    """
    now = now or dt.datetime.now(dt.UTC)
    own = bundles.get(name)
    allowed = own.certs if own is not None else fabric
    issuer = direct_issuer(leaf, allowed)
    if issuer is not None and _valid(issuer, now):
        return Admitted(name, fabric=own is None)
    return Refused(WRONG_ANCHOR, _why(leaf, name, fabric, bundles, own is not None), name)


def _why(
    leaf: x509.Certificate,
    name: str,
    fabric: tuple[x509.Certificate, ...],
    bundles: PeerBundles,
    bound: bool,
) -> str:
    """The log detail of a ``wrong-anchor`` refusal (only on refusal: costs signatures)."""
    issuer = leaf.issuer.rfc4514_string()
    if direct_issuer(leaf, fabric) is not None:
        source = "the fabric CA"
    else:
        owners = sorted(n for n, b in bundles.items() if direct_issuer(leaf, b.certs) is not None)
        source = f"the anchors of {', '.join(owners)}" if owners else f"{issuer} (not an anchor)"
    wanted = f"Peer {name!r}'s own anchors" if bound else "the fabric CA"
    return f"certificate for {name!r} is issued by {source}; {name!r} needs {wanted}"


def holds(
    der: bytes | None,
    name: str,
    fabric: tuple[x509.Certificate, ...],
    bundles: PeerBundles,
    now: dt.datetime | None = None,
) -> bool:
    """Whether an established link's peer certificate (DER) still passes ``bind`` for
    ``name``; False without a certificate."""
    if not der:
        return False
    try:
        leaf = x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    return isinstance(bind(leaf, name, fabric, bundles, now), Admitted)


def changed_names(old: PeerBundles, new: PeerBundles) -> set[str]:
    """Peer names whose anchors were added, changed or removed."""
    return {
        n
        for n in set(old) | set(new)
        if (old.get(n).digest if n in old else None) != (new.get(n).digest if n in new else None)
    }
