"""A Peer's own trust anchors (``spec.trust.ca``): a foreign party's public CA bundle.

``check_ca_bundle`` is the validation rule: PEM ``CERTIFICATE`` blocks only (a private key
pasted by mistake is refused and never echoed), each a CA (basicConstraints CA true), at least
one valid now, at most ``MAX_BUNDLE_CHARS`` characters and ``MAX_ANCHORS`` certificates. The
stored form is canonical (each certificate re-wrapped at 64 columns, one newline after each),
so the same bundle pasted with other line breaks compares equal. ``anchor_facts`` is what
``gwctl get peers`` shows of it: subject, SHA-256 fingerprint and not_after per anchor.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes

MAX_BUNDLE_CHARS = 65536
MAX_ANCHORS = 16
_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END ([A-Z0-9 ]+)-----", re.S)


def _blocks(text: str) -> list[bytes]:
    """The DER of each CERTIFICATE block; ValueError naming what else is there."""
    ders: list[bytes] = []
    rest = _BLOCK.sub("", text)
    if rest.strip():
        raise ValueError("holds text outside PEM CERTIFICATE blocks (only certificates allowed)")
    for label, body, end in _BLOCK.findall(text):
        if label != "CERTIFICATE" or end != label:
            raise ValueError(
                f"holds a PEM {label} block: only CERTIFICATE blocks are allowed (a CA bundle "
                "is public; never paste a private key)"
            )
        try:
            ders.append(base64.b64decode("".join(body.split()), validate=True))
        except (binascii.Error, ValueError):
            raise ValueError("a CERTIFICATE block is not valid base64") from None
    return ders


def load_anchors(text: str) -> list[x509.Certificate]:
    """The certificates of a (validated) bundle."""
    return [x509.load_der_x509_certificate(der) for der in _blocks(text)]


def canonical_pem(ders: list[bytes]) -> str:
    out = []
    for der in ders:
        b64 = base64.b64encode(der).decode()
        lines = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
        out.append(f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n")
    return "".join(out)


def check_ca_bundle(text: str, now: dt.datetime | None = None) -> str:
    """The canonical bundle; ValueError saying what is wrong (the caller names the field)."""
    if len(text) > MAX_BUNDLE_CHARS:
        raise ValueError(f"is larger than {MAX_BUNDLE_CHARS} characters")
    ders = _blocks(text)
    if not ders:
        raise ValueError("holds no PEM certificate")
    if len(ders) > MAX_ANCHORS:
        raise ValueError(f"holds {len(ders)} certificates (at most {MAX_ANCHORS})")
    now = now or dt.datetime.now(dt.UTC)
    valid = 0
    for index, der in enumerate(ders):
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise ValueError(f"certificate #{index + 1} cannot be parsed (not X.509)") from None
        subject = cert.subject.rfc4514_string() or "(empty subject)"
        try:
            ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            ca = False
        if not ca:
            raise ValueError(
                f"certificate #{index + 1} ({subject}) is not a CA (basicConstraints CA:TRUE "
                "missing): put the party's CA here, not a gateway certificate"
            )
        if cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            valid += 1
    if not valid:
        raise ValueError("no certificate of the bundle is valid now (all expired or not yet valid)")
    return canonical_pem(ders)


def anchor_facts(text: str) -> list[dict[str, str]]:
    """Subject, SHA-256 fingerprint and not_after of each anchor (``status.trust``)."""
    return [
        {
            "subject": cert.subject.rfc4514_string(),
            "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex(),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for cert in load_anchors(text)
    ]
