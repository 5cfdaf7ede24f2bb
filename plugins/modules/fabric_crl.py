#!/usr/bin/python
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ruff: noqa: E402  (Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
module: fabric_crl
short_description: Keep the certificate revocation list (CRL) of a ClusterLink fabric
version_added: 0.2.0
description:
  - Creates and updates the X.509 CRL (PEM) signed by the fabric CA, the list of gateway
    certificates that no gateway of the fabric accepts any more (C(tls.revocation.crl) in
    C(gateway.yaml)).
  - Meant to run on the Ansible controller (with C(delegate_to) set to C(localhost)), next to
    the fabric CA, whose key signs the list.
  - Serials are only ever added; an entry stays in the list once revoked. An empty list (no
    entries) is valid and is written too, so that every gateway can always name the file.
  - The list is re-signed, with its entries kept, when it is missing or cannot be read, when it
    was not signed by the CA of O(ca_certificate_path) (after a CA rollover), when a serial of
    O(revoked_serials) is not in it yet, and when its next update is within O(renew_before).
    Each new version carries the next CRL number.
author:
  - ClusterLink contributors (!UNKNOWN)
requirements:
  - cryptography >= 3.4 (on the host that runs the module)
extends_documentation_fragment:
  - ansible.builtin.files
  - clusterlink.fabric.attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode the new list is built and returned in RV(crl), but nothing is written.
  diff_mode:
    support: full
    details:
      - The diff shows the parsed list (issuer, CRL number, next update, revoked serials).
  idempotent:
    support: full
options:
  path:
    description:
      - Path of the CRL (PEM).
      - The file options (O(mode), O(owner), O(group), ...) apply to it; O(mode) defaults to
        V(0644) (a CRL is public data).
    type: path
    required: true
  ca_certificate_path:
    description: Path of the fabric CA certificate (PEM) that issues the list.
    type: path
    required: true
  ca_privatekey_path:
    description: Path of the fabric CA private key (PEM) that signs the list. Never returned.
    type: path
    required: true
  ca_privatekey_passphrase:
    description: Passphrase of the CA private key, if it is encrypted.
    type: str
  revoked_serials:
    description:
      - Serial numbers of certificates to revoke, as decimal integers or as hexadecimal
        (with a V(0x) prefix, or with colons, as V(openssl x509 -serial) and the
        C(serial_number) returned by the certificate modules print them).
      - Serials already in the list are kept; nothing is ever removed.
    type: list
    elements: str
    default: []
  valid_days:
    description: Time from a new signature to the list's next update, in days.
    type: int
    default: 365
  renew_before:
    description:
      - Re-sign the list (same entries) when its next update is within this time.
      - A number followed by V(w), V(d), V(h), V(m) or V(s), or a plain number of seconds.
    type: str
    default: 30d
  backup:
    description: Keep a timestamped copy of the list before it is replaced.
    type: bool
    default: false
seealso:
  - module: clusterlink.fabric.fabric_ca
  - module: clusterlink.fabric.certificate_info
  - ref: clusterlink.fabric.pki
    description: The role that keeps the list and installs it on every gateway.
"""

EXAMPLES = r"""
- name: The fabric CRL, empty at first
  clusterlink.fabric.fabric_crl:
    path: ~/.clusterlink/pki/prod/revoked.crl
    ca_certificate_path: ~/.clusterlink/pki/prod/ca.crt
    ca_privatekey_path: ~/.clusterlink/pki/prod/ca.key
  delegate_to: localhost
  run_once: true
  become: false

- name: Revoke the certificate of a decommissioned site
  clusterlink.fabric.fabric_crl:
    path: ~/.clusterlink/pki/prod/revoked.crl
    ca_certificate_path: ~/.clusterlink/pki/prod/ca.crt
    ca_privatekey_path: ~/.clusterlink/pki/prod/ca.key
    revoked_serials:
      - "0x5a1f3c"
      - "4B:3E:11:02"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
crl:
  description: The list (PEM), as written (or, in check mode, as it would be written). Public data.
  returned: success
  type: str
  sample: "-----BEGIN X509 CRL-----\nMIIBLz...\n-----END X509 CRL-----\n"
info:
  description: Parsed facts of RV(crl).
  returned: success
  type: dict
  contains:
    issuer:
      description: Issuer, RFC 4514.
      type: str
      sample: CN=prod
    crl_number:
      description: CRL number.
      type: int
      sample: 3
    last_update:
      description: Time of the signature, UTC, ISO 8601.
      type: str
      sample: "2026-01-01T10:00:00Z"
    next_update:
      description: Next update, UTC, ISO 8601.
      type: str
      sample: "2026-01-31T10:00:00Z"
    revoked_serials:
      description: Revoked serial numbers, colon-separated hexadecimal, sorted.
      type: list
      elements: str
      sample: ["5A:1F:3C"]
added:
  description: Serials (colon-separated hexadecimal) added by this run.
  returned: success
  type: list
  elements: str
  sample: ["5A:1F:3C"]
reasons:
  description:
    - Why the list was (or in check mode would be) signed again. V(missing), V(unparseable),
      V(issuer), V(added), V(expiring). Empty when nothing changed.
    - V(ca_missing) in check mode when the CA does not exist yet (then RV(crl) is empty).
  returned: success
  type: list
  elements: str
  sample: [added]
backup_file:
  description: Name of the backup of the previous list.
  returned: changed and O(backup=true) and a list was replaced
  type: str
  sample: /home/ops/.clusterlink/pki/prod/revoked.crl.2417.2026-01-01@10:00:00~
"""

import datetime
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterlink.fabric.plugins.module_utils._pki import (
    PKIError,
    aware,
    check_valid_days,
    file_module_args,
    finish,
    iso,
    load_certificate,
    load_existing,
    load_private_key,
    parse_duration,
    read_bytes,
    run_module,
    same_public_key,
    serial_hex,
    utcnow,
    write_file,
)

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
except ImportError:  # reported by run_module
    pass

_HEX_RE = re.compile(r"^[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2})+$")


def parse_serial(value):
    """A serial from '123', '0x7b' or '7B:01' (colon hex); PKIError names the bad value."""
    text = str(value).strip()
    try:
        if text.lower().startswith("0x"):
            serial = int(text[2:], 16)
        elif _HEX_RE.match(text):
            serial = int(text.replace(":", ""), 16)
        else:
            serial = int(text, 10)
    except ValueError:
        raise PKIError(
            f"revoked_serials: {value!r} is not a serial number (decimal, 0x-hex or colon hex)"
        ) from None
    if serial <= 0:
        raise PKIError(f"revoked_serials: {value!r} is not a positive serial number")
    return serial


def load_crl(data):
    """A PEM CRL; PKIError when it cannot be read."""
    try:
        return x509.load_pem_x509_crl(data)
    except Exception:
        raise PKIError("not a PEM CRL") from None


def _next_update(crl):
    value = getattr(crl, "next_update_utc", None) or crl.next_update
    return aware(value) if value else None


def _last_update(crl):
    return aware(getattr(crl, "last_update_utc", None) or crl.last_update)


def _revocation_date(entry):
    return aware(getattr(entry, "revocation_date_utc", None) or entry.revocation_date)


def _crl_number(crl):
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def crl_facts(crl):
    if crl is None:
        return {}
    next_update = _next_update(crl)
    return {
        "issuer": crl.issuer.rfc4514_string(),
        "crl_number": _crl_number(crl),
        "last_update": iso(_last_update(crl)),
        "next_update": iso(next_update) if next_update else None,
        "revoked_serials": sorted(serial_hex(e.serial_number) for e in crl),
    }


def _signed_by_ca(crl, ca_cert):
    if crl.issuer != ca_cert.subject:
        return False
    try:
        return crl.is_signature_valid(ca_cert.public_key())
    except Exception:  # unsupported key type and friends: treat as not ours
        return False


def build_crl(ca_cert, ca_key, entries, number, valid_days, now):
    """A CRL over ``entries`` ({serial: revocation date}), signed by ca_key."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,
        )
    )
    for serial, when in sorted(entries.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    algorithm = None
    if not isinstance(ca_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        algorithm = hashes.SHA256()
    return builder.sign(private_key=ca_key, algorithm=algorithm)


def run(module):
    params = module.params
    check_valid_days(params["valid_days"])
    renew_before = parse_duration(params["renew_before"], "renew_before")
    wanted = [parse_serial(s) for s in params["revoked_serials"]]
    path = params["path"]
    now = utcnow()

    ca_data = read_bytes(params["ca_certificate_path"])
    if ca_data is None and module.check_mode:
        # A first check-mode run: the CA would be created by an earlier task.
        return {"changed": True, "crl": "", "info": {}, "added": [], "reasons": ["ca_missing"]}
    if ca_data is None:
        raise PKIError(f"ca_certificate_path: {params['ca_certificate_path']} does not exist")
    try:
        ca_cert = load_certificate(ca_data)
    except PKIError as exc:
        raise PKIError(f"ca_certificate_path: {exc}") from None

    old_data, crl, reasons = load_existing(path, load_crl)
    entries = {}
    if old_data is None:
        reasons.append("missing")
    elif crl is not None:
        entries = {e.serial_number: _revocation_date(e) for e in crl}
        if not _signed_by_ca(crl, ca_cert):
            reasons.append("issuer")
        next_update = _next_update(crl)
        if next_update is None or next_update - now <= renew_before:
            reasons.append("expiring")
    added = [s for s in dict.fromkeys(wanted) if s not in entries]
    if added:
        reasons.append("added")
    result = {"changed": False, "added": [serial_hex(s) for s in added], "reasons": reasons}
    before = crl_facts(crl)

    if reasons:
        key_data = read_bytes(params["ca_privatekey_path"])
        if key_data is None:
            raise PKIError(f"ca_privatekey_path: {params['ca_privatekey_path']} does not exist")
        try:
            ca_key = load_private_key(key_data, params["ca_privatekey_passphrase"])
        except PKIError as exc:
            raise PKIError(f"ca_privatekey_path: {exc}") from None
        if not same_public_key(ca_cert.public_key(), ca_key.public_key()):
            raise PKIError(
                "ca_privatekey_path: the key does not belong to the certificate of "
                "ca_certificate_path"
            )
        for serial in added:
            entries[serial] = now
        number = (_crl_number(crl) if crl is not None else 0) + 1
        crl = build_crl(ca_cert, ca_key, entries, number, params["valid_days"], now)

    pem = crl.public_bytes(serialization.Encoding.PEM)
    diff = {"before": {"crl": before}, "after": {"crl": crl_facts(crl)}}
    changed = write_file(
        module,
        result,
        path,
        pem if reasons else None,
        existed=old_data is not None,
        default_mode="0644",
        diff=diff,
    )
    result.update(changed=changed, crl=pem.decode("ascii"), info=crl_facts(crl))
    return finish(module, result, diff)


def main():
    module = AnsibleModule(
        **file_module_args(
            path=dict(type="path", required=True),
            ca_certificate_path=dict(type="path", required=True),
            ca_privatekey_path=dict(type="path", required=True),
            ca_privatekey_passphrase=dict(type="str", no_log=True),
            revoked_serials=dict(type="list", elements="str", default=[]),
            valid_days=dict(type="int", default=365),
            renew_before=dict(type="str", default="30d"),
        )
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
