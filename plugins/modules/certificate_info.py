#!/usr/bin/python
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ruff: noqa: E402  (Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
module: certificate_info
short_description: Parsed facts of the certificates in a PEM bundle
version_added: 0.2.0
description:
  - Parses every certificate of a PEM text (one certificate, or a bundle such as a gateway's
    C(ca-bundle.pem)) and returns its public facts (subject, issuer, serial, validity,
    SHA-256 fingerprints).
  - Used by the C(clusterlink.fabric.pki) role to compare the fabric CA the gateways trust with
    the one on the controller, and by the decommission playbook to find the serial of a site's
    certificate. Changes nothing.
author:
  - ClusterLink contributors (!UNKNOWN)
requirements:
  - cryptography >= 3.4 (on the host that runs the module)
extends_documentation_fragment:
  - clusterlink.fabric.attributes
attributes:
  check_mode:
    support: full
    details:
      - The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  content:
    description:
      - PEM text with zero or more certificates. Text that is not inside a certificate block is
        ignored; a certificate block that cannot be parsed fails the module.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Read a gateway's trust bundle
  ansible.builtin.slurp:
    src: /etc/clusterlink/tls/ca-bundle.pem
  register: bundle

- name: The CAs in it
  clusterlink.fabric.certificate_info:
    content: "{{ bundle.content | b64decode }}"
  delegate_to: localhost
  register: cas

- name: Show them
  ansible.builtin.debug:
    msg: "{{ cas.certificates | map(attribute='fingerprint_sha256') | list }}"
"""

RETURN = r"""
certificates:
  description: Facts of each certificate, in the order of O(content).
  returned: success
  type: list
  elements: dict
  contains:
    subject:
      description: Subject, RFC 4514.
      type: str
      sample: CN=prod
    issuer:
      description: Issuer, RFC 4514.
      type: str
      sample: CN=prod
    subject_alt_names:
      description: DNS subject alternative names.
      type: list
      elements: str
      sample: ["DNS:site-a"]
    serial_number:
      description: Serial number (an integer).
      type: int
      sample: 461209538762209879174230936823541023859018340151
    serial_hex:
      description: Serial number, colon-separated hexadecimal (as the CRL module takes it).
      type: str
      sample: "50:C8:..:37"
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
      description: SHA-256 fingerprint of the certificate (DER), colon-separated hexadecimal.
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
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterlink.fabric.plugins.module_utils._pki import (
    PKIError,
    certificate_facts,
    load_certificate,
    run_module,
    serial_hex,
)

_PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)


def run(module):
    certificates = []
    for index, block in enumerate(_PEM_CERT_RE.findall(module.params["content"])):
        try:
            facts = certificate_facts(load_certificate(block))
        except PKIError as exc:
            raise PKIError(f"content: certificate {index + 1}: {exc}") from None
        facts["serial_hex"] = serial_hex(facts["serial_number"])
        certificates.append(facts)
    return {"changed": False, "certificates": certificates}


def main():
    module = AnsibleModule(
        argument_spec=dict(content=dict(type="str", required=True)),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
