# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A Peer's own trust anchors (``spec.trust.ca``) as the peer module compares and shows them.

Private to the collection. Standard library only: the canonical form is the one the gateway
stores (each CERTIFICATE block re-wrapped at 64 columns, one newline after each), so a bundle
read with ``lookup('file', ...)`` (trailing newline stripped) compares equal to the stored one.
Diffs show anchors as SHA-256 fingerprints (and subjects when ``cryptography`` is importable),
never the PEM.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


def _ders(text):
    out = []
    for body in _BLOCK.findall(text or ""):
        try:
            out.append(base64.b64decode("".join(body.split()), validate=True))
        except (binascii.Error, ValueError):
            return None
    return out


def canonical_bundle(text):
    """The stored form of a bundle; the text itself when it cannot be read (the gateway then
    refuses it, naming the field)."""
    ders = _ders(text)
    if not ders or _BLOCK.sub("", text).strip():
        return text
    out = []
    for der in ders:
        b64 = base64.b64encode(der).decode()
        lines = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
        out.append(f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n")
    return "".join(out)


def _subject(der):
    try:
        from cryptography import x509
    except ImportError:  # optional: the fingerprint alone identifies the anchor
        return None
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return None


def describe_bundle(text):
    """``["sha256:<hex> <subject>", ...]``: what a diff shows of a bundle."""
    ders = _ders(text)
    if ders is None:
        return ["(unreadable PEM)"]
    out = []
    for der in ders:
        subject = _subject(der)
        fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()
        out.append(f"{fingerprint} {subject}" if subject else fingerprint)
    return out
