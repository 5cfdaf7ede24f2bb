# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which of a gateway's certificates (``/v1/status`` ``certificates``) have expired or expire
within their renewal threshold.

Private module_utils (leading underscore): not a public API, it may change at any time.
Pure functions, no I/O: the gateway reports ``expires_in_seconds`` and ``expired`` itself.
"""

from __future__ import annotations

# The kinds the gateway reports: its fabric certificate, each CA of its fabric bundle, and the
# admin listener's certificate. CAs are renewed earlier (the pki role's ca renew-before).
CA_KINDS = ("ca",)


def classify(certificates, cert_renew_before, ca_renew_before):
    """Split ``certificates`` into (expired, expiring), each a list of the entries (with
    ``threshold_seconds`` added) in the gateway's order. A certificate expires "soon" when its
    ``expires_in_seconds`` is at most the threshold of its kind (seconds: ``ca_renew_before``
    for CAs, ``cert_renew_before`` for the others)."""
    expired, expiring = [], []
    for cert in certificates or []:
        threshold = ca_renew_before if cert.get("kind") in CA_KINDS else cert_renew_before
        left = int(cert.get("expires_in_seconds", 0))
        entry = dict(cert, threshold_seconds=int(threshold))
        if cert.get("expired") or left <= 0:
            expired.append(entry)
        elif left <= threshold:
            expiring.append(entry)
    return expired, expiring


def describe(cert):
    """One line for an operator: what, which, when."""
    days = int(cert.get("expires_in_seconds", 0)) / 86400.0
    when = f"expired {-days:.1f} days ago" if days <= 0 else f"expires in {days:.1f} days"
    what = {"ca": "fabric CA", "gateway": "gateway certificate", "admin": "admin certificate"}
    return (
        f"{what.get(cert.get('kind'), cert.get('kind'))} {cert.get('subject')} {when} "
        f"(not after {cert.get('not_after')})"
    )
