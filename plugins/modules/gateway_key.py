#!/usr/bin/python
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ruff: noqa: E402  (Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
module: gateway_key
short_description: Create a gateway's private key and return a CSR for it
version_added: 0.1.0
description:
  - Runs on a ClusterLink gateway. Makes sure the gateway's private key (ECDSA P-256, PKCS#8 PEM)
    exists at O(path) with the wanted owner, group and mode (V(0600) by default), creating it
    when it is missing or unusable. The key never leaves the gateway.
  - Returns a certificate signing request (CSR) for the key, with O(peer_name) as the common
    name and DNS subject alternative name, for M(clusterlink.fabric.gateway_certificate) to
    sign on the controller. The CSR is public data; the key bytes are never returned.
  - The CSR is built anew on every run (CSR signatures are randomized); this does not count
    as a change.
author:
  - ClusterLink contributors (!UNKNOWN)
requirements:
  - cryptography >= 3.4 (on the gateway; for example the C(python3-cryptography) package)
extends_documentation_fragment:
  - ansible.builtin.files
  - clusterlink.fabric.attributes
attributes:
  check_mode:
    support: full
    details:
      - When a key would be created, the returned CSR is for a throw-away key made in memory,
        so that a certificate step that follows also predicts its change. Nothing is written.
  diff_mode:
    support: full
    details:
      - The diff shows the key type and the fingerprint of the public key, and file
        attributes; never key material.
  idempotent:
    support: partial
    details:
      - Not idempotent with O(regenerate=always).
options:
  path:
    description:
      - Path of the private key. The directory must exist.
    type: path
    required: true
  peer_name:
    description:
      - Peer name of the gateway's site, the CN and DNS SAN of the CSR.
      - A DNS label (lowercase letters, digits and V(-), at most 63 characters).
    type: str
    required: true
  mode:
    description:
      - Mode of the key file. Defaults to V(0600).
    type: raw
  regenerate:
    description:
      - When to replace an existing key.
      - V(never) keeps any readable key; it fails if the key cannot be read.
      - V(fail) fails when an existing key would have to be replaced.
      - V(full_idempotence) replaces the key when it cannot be read or is not an ECDSA P-256 key.
      - V(always) creates a new key on every run (this forces the certificate to be re-issued).
    type: str
    choices: [never, fail, full_idempotence, always]
    default: full_idempotence
  backup:
    description:
      - Keep a timestamped copy (same mode and owner) of a key before it is replaced.
    type: bool
    default: false
seealso:
  - module: clusterlink.fabric.gateway_certificate
  - module: clusterlink.fabric.fabric_ca
"""

EXAMPLES = r"""
- name: Gateway key, owned by the service user, and a CSR for the site's peer name
  clusterlink.fabric.gateway_key:
    path: /etc/clusterlink/tls/gateway.key
    peer_name: "{{ clusterlink_peer_name | default(inventory_hostname) }}"
    owner: clusterlink
    group: clusterlink
    mode: "0600"
  register: gateway_key

- name: Sign the CSR on the controller
  clusterlink.fabric.gateway_certificate:
    csr_content: "{{ gateway_key.csr }}"
    peer_name: "{{ clusterlink_peer_name | default(inventory_hostname) }}"
    ca_certificate_path: ~/.clusterlink/pki/prod/ca.crt
    ca_privatekey_path: ~/.clusterlink/pki/prod/ca.key
  delegate_to: localhost
  become: false
"""

RETURN = r"""
csr:
  description: Certificate signing request for the key (PEM). Public data.
  returned: success
  type: str
  sample: "-----BEGIN CERTIFICATE REQUEST-----\nMIHg...\n-----END CERTIFICATE REQUEST-----\n"
public_key_fingerprint:
  description: SHA-256 fingerprint of the DER SubjectPublicKeyInfo of the key.
  returned: success
  type: str
  sample: "8E:02:...:71"
key_type:
  description: Type of the key.
  returned: success
  type: str
  sample: ECDSA secp256r1
reasons:
  description:
    - Why the key was (or in check mode would be) created.
    - V(missing), V(unparseable), V(key_type), V(forced); empty when the key was kept.
  returned: success
  type: list
  elements: str
  sample: [missing]
backup_file:
  description: Name of the backup of the previous key.
  returned: changed and O(backup=true) and a key was replaced
  type: str
  sample: /etc/clusterlink/tls/gateway.key.3121.2026-01-01@10:00:00~
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterlink.fabric.plugins.module_utils._pki import (
    REGENERATE_OPTION,
    build_csr,
    check_peer_name,
    file_module_args,
    finish,
    generate_key,
    is_p256,
    key_facts,
    key_type,
    load_existing,
    load_private_key,
    private_key_pem,
    public_key_fingerprint,
    regenerate_decision,
    run_module,
    write_file,
)


def run(module):
    params = module.params
    path = params["path"]
    check_peer_name(params["peer_name"])

    data, key, findings = load_existing(path, load_private_key)
    if key is not None and not is_p256(key):
        findings = ["key_type"]
    reasons = regenerate_decision(
        module, params["regenerate"], data is not None, findings, f"private key {path}"
    )

    result = {"changed": bool(reasons), "reasons": reasons}
    diff = {"before": key_facts(key), "after": {}}
    if reasons:
        key = generate_key()
    diff["after"] = key_facts(key)
    result["changed"] = write_file(
        module,
        result,
        path,
        private_key_pem(key) if reasons else None,
        existed=data is not None,
        default_mode="0600",
        diff=diff,
        secret=True,
    )
    result.update(
        csr=build_csr(key, params["peer_name"]).decode("ascii"),
        public_key_fingerprint=public_key_fingerprint(key.public_key()),
        key_type=key_type(key),
    )
    return finish(module, result, diff)


def main():
    module = AnsibleModule(
        **file_module_args(
            path=dict(type="path", required=True),
            peer_name=dict(type="str", required=True),
            mode=dict(type="raw"),
            regenerate=dict(REGENERATE_OPTION),
        )
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
