#!/usr/bin/python
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ruff: noqa: E402  (Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
module: fabric_ca
short_description: Create and renew the fabric root CA of a ClusterLink fabric
version_added: 0.1.0
description:
  - Creates the private key (ECDSA P-256) and the self-signed certificate of the fabric CA,
    the root that every gateway certificate of a ClusterLink fabric is issued by.
  - Meant to run on the Ansible controller (with C(delegate_to) set to C(localhost)); the CA
    key never leaves it.
  - The certificate has the fabric name as its only subject attribute (CN), is a CA with
    path length 0, may sign certificates and CRLs, and carries a subject key identifier.
  - An existing private key is never replaced. If it cannot be read (wrong
    O(privatekey_passphrase), damaged file) the module fails instead of creating a new CA,
    because a new CA key would make every gateway certificate of the fabric untrusted.
    To move a fabric to a new CA without downtime, create a second CA with this module at
    other paths and follow the rollover procedure of the C(clusterlink.fabric.pki) role.
  - The certificate is re-created, with the same key, when it is missing or cannot be read,
    when it does not belong to the key, when the fabric name changed, when it is not a CA
    certificate, or when it expires within O(renew_before). Gateway certificates stay valid
    across such a renewal, because the key, the name and the key identifier stay the same.
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
      - In check mode a certificate that would be (re-)created is built in memory and
        returned in RV(certificate), but nothing is written.
  diff_mode:
    support: full
    details:
      - The diff shows parsed certificate facts (subject, issuer, serial, validity,
        fingerprints), never key material.
  idempotent:
    support: partial
    details:
      - Not idempotent with O(regenerate=always).
options:
  certificate_path:
    description:
      - Path of the CA certificate (PEM).
      - The file options (O(mode), O(owner), O(group), ...) apply to this file; O(mode)
        defaults to V(0644).
    type: path
    required: true
  privatekey_path:
    description:
      - Path of the CA private key (PKCS#8 PEM).
      - Always written with mode V(0600); O(owner) and O(group) apply to it as well.
    type: path
    required: true
  privatekey_passphrase:
    description:
      - Passphrase that encrypts the CA private key. When set, a new key is written encrypted
        with it, and an existing key is read with it.
    type: str
  fabric_name:
    description:
      - Name of the fabric, the common name (CN) of the CA certificate. At most 64 characters.
    type: str
    required: true
  valid_days:
    description:
      - Validity of a newly created CA certificate, in days.
      - Changing it does not by itself re-create an existing certificate.
    type: int
    default: 3650
  renew_before:
    description:
      - Re-create the certificate when it expires within this time.
      - A number followed by V(w), V(d), V(h), V(m) or V(s) (for example V(90d), V(2w), V(1d12h)),
        or a plain number of seconds. V(0) renews only expired certificates.
    type: str
    default: 90d
  regenerate:
    description:
      - What to do with an existing certificate (the private key is never replaced).
      - V(never) keeps any readable certificate, whatever it looks like; it fails if the
        certificate cannot be read.
      - V(fail) fails when an existing certificate would have to be re-created.
      - V(full_idempotence) re-creates the certificate when one of the reasons in the
        description applies.
      - V(always) re-creates the certificate on every run.
    type: str
    choices: [never, fail, full_idempotence, always]
    default: full_idempotence
  backup:
    description:
      - Keep a timestamped copy of the certificate before it is replaced.
    type: bool
    default: false
seealso:
  - module: clusterlink.fabric.gateway_key
  - module: clusterlink.fabric.gateway_certificate
  - ref: clusterlink.fabric.pki
    description: The role that runs the CA, key and certificate modules together.
"""

EXAMPLES = r"""
- name: Create the fabric CA on the controller
  clusterlink.fabric.fabric_ca:
    certificate_path: ~/.clusterlink/pki/prod/ca.crt
    privatekey_path: ~/.clusterlink/pki/prod/ca.key
    fabric_name: prod
    renew_before: 90d
    backup: true
  delegate_to: localhost
  run_once: true
  become: false
  register: fabric_ca

- name: Show when the CA expires
  ansible.builtin.debug:
    msg: "{{ fabric_ca.info.subject }} expires {{ fabric_ca.info.not_after }}"

- name: CA key protected by a passphrase from a vault
  clusterlink.fabric.fabric_ca:
    certificate_path: /srv/pki/ca.crt
    privatekey_path: /srv/pki/ca.key
    privatekey_passphrase: "{{ vault_fabric_ca_passphrase }}"
    fabric_name: prod
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
certificate:
  description:
    - The CA certificate (PEM), as written (or, in check mode, as it would be written).
    - Public data, meant for the gateways' trust bundle.
  returned: success
  type: str
  sample: "-----BEGIN CERTIFICATE-----\nMIIBdz...\n-----END CERTIFICATE-----\n"
info:
  description: Parsed facts of RV(certificate).
  returned: success
  type: dict
  contains:
    subject:
      description: Subject, RFC 4514.
      type: str
      sample: CN=prod
    issuer:
      description: Issuer, RFC 4514 (the same as the subject, the CA is self-signed).
      type: str
      sample: CN=prod
    subject_alt_names:
      description: DNS subject alternative names (none for the CA).
      type: list
      elements: str
      sample: []
    serial_number:
      description: Serial number.
      type: int
      sample: 461209538762209879174230936823541023859018340151
    not_before:
      description: Start of validity, UTC, ISO 8601.
      type: str
      sample: "2026-01-01T09:55:00Z"
    not_after:
      description: End of validity, UTC, ISO 8601.
      type: str
      sample: "2036-01-01T10:00:00Z"
    is_ca:
      description: Whether the certificate is a CA certificate.
      type: bool
      sample: true
    fingerprint_sha256:
      description: SHA-256 fingerprint of the certificate (DER).
      type: str
      sample: "3A:1F:...:9C"
    public_key_fingerprint:
      description: SHA-256 fingerprint of the DER SubjectPublicKeyInfo.
      type: str
      sample: "8E:02:...:71"
    subject_key_identifier:
      description: Subject key identifier.
      type: str
      sample: "5B:0C:...:E1"
    authority_key_identifier:
      description: Authority key identifier.
      type: str
      sample: "5B:0C:...:E1"
reasons:
  description:
    - Why the key or certificate was (or in check mode would be) created.
    - V(missing), V(unparseable), V(public_key), V(names), V(profile), V(expiring),
      V(not_yet_valid), V(forced).
    - Empty when nothing had to be created.
  returned: success
  type: list
  elements: str
  sample: [expiring]
key_created:
  description: Whether a new private key was (or in check mode would be) created.
  returned: success
  type: bool
  sample: false
backup_file:
  description: Name of the backup of the previous certificate.
  returned: changed and O(backup=true) and a certificate was replaced
  type: str
  sample: /home/ops/.clusterlink/pki/prod/ca.crt.2417.2026-01-01@10:00:00~
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterlink.fabric.plugins.module_utils._pki import (
    REGENERATE_OPTION,
    PKIError,
    build_ca_certificate,
    ca_reasons,
    certificate_facts,
    certificate_pem,
    check_valid_days,
    file_module_args,
    finish,
    generate_key,
    load_certificate,
    load_existing,
    load_private_key,
    parse_duration,
    private_key_pem,
    read_bytes,
    regenerate_decision,
    run_module,
    utcnow,
    write_file,
)


def run(module):
    params = module.params
    fabric_name = params["fabric_name"]
    if not 1 <= len(fabric_name) <= 64:
        raise PKIError("fabric_name: must be 1 to 64 characters long")
    check_valid_days(params["valid_days"])
    renew_before = parse_duration(params["renew_before"], "renew_before")
    cert_path, key_path = params["certificate_path"], params["privatekey_path"]
    passphrase = params["privatekey_passphrase"]
    now = utcnow()
    result = {"changed": False, "key_created": False}

    key_data = read_bytes(key_path)
    if key_data is None:
        key = generate_key()
        result["key_created"] = True
    else:
        try:
            key = load_private_key(key_data, passphrase)
        except PKIError as exc:
            raise PKIError(
                f"privatekey_path: {key_path} is {exc}; refusing to replace an existing CA key "
                f"(check privatekey_passphrase, or move the file away to start a new CA)"
            ) from None

    cert_data, cert, findings = load_existing(cert_path, load_certificate)
    if cert is not None:
        findings = ca_reasons(cert, key, fabric_name, renew_before, now)
    reasons = regenerate_decision(
        module, params["regenerate"], cert_data is not None, findings, f"CA certificate {cert_path}"
    )
    if result["key_created"] and not reasons:
        # regenerate=never, but the certificate cannot belong to a key that does not exist yet.
        raise PKIError(
            f"privatekey_path: {key_path} is missing while {cert_path} exists, and regenerate=never"
        )

    before = certificate_facts(cert)
    if reasons:
        cert = build_ca_certificate(key, fabric_name, params["valid_days"], now)
        result["changed"] = True
    pem = certificate_pem(cert)

    diff = {"before": {"certificate": before}, "after": {"certificate": certificate_facts(cert)}}
    key_diff = {"before": {}, "after": {}}
    key_changed = write_file(
        module,
        result,
        key_path,
        private_key_pem(key, passphrase) if result["key_created"] else None,
        existed=False,
        default_mode="0600",
        mode="0600",
        diff=key_diff,
        secret=True,
        option="privatekey_path",
    )
    cert_changed = write_file(
        module,
        result,
        cert_path,
        pem if reasons else None,
        existed=cert_data is not None,
        default_mode="0644",
        diff=diff,
        option="certificate_path",
    )
    if key_diff["before"] or key_diff["after"]:  # owner/group/mode of the key file changed
        diff["before"]["privatekey_file"] = key_diff["before"]
        diff["after"]["privatekey_file"] = key_diff["after"]
    result.update(
        changed=key_changed or cert_changed,
        certificate=pem.decode("ascii"),
        info=certificate_facts(cert),
        reasons=reasons,
    )
    return finish(module, result, diff)


def main():
    module = AnsibleModule(
        **file_module_args(
            certificate_path=dict(type="path", required=True),
            privatekey_path=dict(type="path", required=True),
            privatekey_passphrase=dict(type="str", no_log=True),
            fabric_name=dict(type="str", required=True),
            valid_days=dict(type="int", default=3650),
            renew_before=dict(type="str", default="90d"),
            regenerate=dict(REGENERATE_OPTION),
        )
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
