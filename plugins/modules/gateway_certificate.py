#!/usr/bin/python
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ruff: noqa: E402  (Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
module: gateway_certificate
short_description: Issue or renew a gateway certificate from the fabric CA
version_added: 0.1.0
description:
  - Runs where the fabric CA key lives, normally the controller (with C(delegate_to) set to
    C(localhost)).
    Takes a gateway's CSR (from M(clusterlink.fabric.gateway_key)) and the gateway's current
    certificate, and decides whether a new certificate must be issued.
  - A certificate is issued when there is no current certificate or it cannot be read, when
    its public key is not the CSR's, when its names are not exactly O(peer_name) (CN) and
    O(subject_alt_names) (SANs), when it was not issued by the CA at O(ca_certificate_path)
    (issuer name, authority key identifier and signature are checked; this is how a CA change
    is detected), when it lacks the extended key usages of O(profile), or when it expires
    within O(renew_before).
  - Otherwise the current certificate is returned unchanged with C(changed=false).
  - The names in the certificate come from O(peer_name), chosen by the controller; the names
    in the CSR are ignored. Only the CSR's public key is used, after checking its signature.
  - Issued certificates have CN O(peer_name) and DNS SAN O(peer_name) (or O(subject_alt_names)),
    the extended key usages of O(profile) (serverAuth and clientAuth for a gateway), key usage
    digitalSignature, basic constraints CA:FALSE, subject and authority key identifiers and a
    random serial number. Their validity ends at the latest when the CA certificate expires.
  - The module writes no file; install RV(certificate) on the gateway with M(ansible.builtin.copy).
  - With O(profile) and O(subject_alt_names) it also issues the certificates of the admin API
    over TCP from a separate admin CA, the admin listener's server certificate (serverAuth only)
    and the operator's client certificate (clientAuth only).
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
      - The module changes nothing anywhere, so in check mode it computes the same result.
        If the CA files do not exist yet (a CA that check mode did not create), it reports
        a change and returns an empty RV(certificate).
  diff_mode:
    support: full
    details:
      - The diff shows parsed certificate facts (subject, SANs, issuer, serial, validity,
        fingerprints).
  idempotent:
    support: partial
    details:
      - Idempotent as long as the installed certificate is passed back as O(current_certificate).
        Not idempotent with O(regenerate=always).
options:
  csr_content:
    description: The gateway's certificate signing request (PEM).
    type: str
    required: true
  peer_name:
    description:
      - Peer name of the gateway's site, the CN and only DNS SAN of the certificate.
      - A DNS label (lowercase letters, digits and V(-), at most 63 characters).
    type: str
    required: true
  subject_alt_names:
    description:
      - Subject alternative names of the certificate, each V(DNS:name) or V(IP:address) (a bare
        name or address is accepted). The certificate has exactly these.
      - Empty (the default) for V(DNS:<peer_name>) only, as a gateway certificate needs.
    type: list
    elements: str
    default: []
  profile:
    description:
      - Extended key usages of the certificate.
      - V(gateway) (serverAuth and clientAuth) for a gateway's fabric certificate.
      - V(admin_server) (serverAuth only) for the admin API's TCP listener.
      - V(admin_client) (clientAuth only) for an operator's admin client certificate.
      - A current certificate with other extended key usages is re-issued.
    type: str
    choices: [gateway, admin_server, admin_client]
    default: gateway
  current_certificate:
    description:
      - The certificate the gateway has now (PEM), or an empty string when it has none.
    type: str
    default: ''
  ca_certificate_path:
    description: Path of the fabric CA certificate that signs.
    type: path
    required: true
  ca_privatekey_path:
    description: Path of the fabric CA private key.
    type: path
    required: true
  ca_privatekey_passphrase:
    description: Passphrase of the CA private key, if it is encrypted.
    type: str
  valid_days:
    description:
      - Validity of a newly issued certificate, in days (capped at the CA's expiry).
      - Changing it does not by itself cause a re-issue.
    type: int
    default: 365
  renew_before:
    description:
      - Issue a new certificate when the current one expires within this time.
      - A number followed by V(w), V(d), V(h), V(m) or V(s) (for example V(30d)), or a plain
        number of seconds.
    type: str
    default: 30d
  regenerate:
    description:
      - V(never) keeps any readable current certificate; it fails if it cannot be read.
      - V(fail) fails when the current certificate would have to be replaced.
      - V(full_idempotence) issues a new certificate when one of the reasons in the
        description applies.
      - V(always) issues a new certificate on every run.
    type: str
    choices: [never, fail, full_idempotence, always]
    default: full_idempotence
seealso:
  - module: clusterlink.fabric.gateway_key
  - module: clusterlink.fabric.fabric_ca
"""

EXAMPLES = r"""
- name: Read the gateway's current certificate, if any
  ansible.builtin.slurp:
    src: /etc/clusterlink/tls/gateway.crt
  register: current_cert
  failed_when: false

- name: Issue or renew the certificate on the controller
  clusterlink.fabric.gateway_certificate:
    csr_content: "{{ gateway_key.csr }}"
    peer_name: "{{ clusterlink_peer_name | default(inventory_hostname) }}"
    current_certificate: "{{ current_cert.content | default('') | b64decode }}"
    ca_certificate_path: ~/.clusterlink/pki/prod/ca.crt
    ca_privatekey_path: ~/.clusterlink/pki/prod/ca.key
    valid_days: 365
    renew_before: 30d
  delegate_to: localhost
  become: false
  register: gateway_cert

- name: Install it on the gateway
  ansible.builtin.copy:
    content: "{{ gateway_cert.certificate }}"
    dest: /etc/clusterlink/tls/gateway.crt
    mode: "0644"

- name: Admin listener certificate from the separate admin CA (server only)
  clusterlink.fabric.gateway_certificate:
    csr_content: "{{ admin_key.csr }}"
    peer_name: "{{ clusterlink_peer_name | default(inventory_hostname) }}"
    subject_alt_names: ["DNS:{{ inventory_hostname }}", "IP:{{ ansible_host }}"]
    profile: admin_server
    ca_certificate_path: ~/.clusterlink/pki/prod/admin-ca.crt
    ca_privatekey_path: ~/.clusterlink/pki/prod/admin-ca.key
  delegate_to: localhost
  become: false
  register: admin_cert
"""

RETURN = r"""
certificate:
  description:
    - The certificate to install (PEM), the new one or the current one when nothing had to change.
    - Empty only in check mode when the CA does not exist yet.
  returned: success
  type: str
  sample: "-----BEGIN CERTIFICATE-----\nMIIB4j...\n-----END CERTIFICATE-----\n"
info:
  description:
    - Parsed facts of RV(certificate); same keys as RV(clusterlink.fabric.fabric_ca#module:info).
  returned: success
  type: dict
  sample:
    subject: CN=site-a
    issuer: CN=prod
    subject_alt_names: ["DNS:site-a"]
    serial_number: 58262198624911072135981526413087402637871929837
    not_before: "2026-01-01T09:55:00Z"
    not_after: "2027-01-01T10:00:00Z"
    is_ca: false
    fingerprint_sha256: "C4:...:0A"
    public_key_fingerprint: "8E:...:71"
    subject_key_identifier: "77:...:3D"
    authority_key_identifier: "5B:...:E1"
reasons:
  description:
    - Why a certificate was (or in check mode would be) issued.
    - V(missing), V(unparseable), V(public_key), V(names), V(issuer), V(profile), V(expiring),
      V(not_yet_valid), V(forced), V(ca_missing). Empty when the current certificate was kept.
  returned: success
  type: list
  elements: str
  sample: [issuer]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterlink.fabric.plugins.module_utils._pki import (
    REGENERATE_OPTION,
    PKIError,
    build_gateway_certificate,
    certificate_facts,
    certificate_pem,
    check_peer_name,
    check_valid_days,
    finish,
    leaf_reasons,
    load_certificate,
    load_csr,
    load_private_key,
    parse_duration,
    parse_subject_alt_names,
    read_bytes,
    regenerate_decision,
    run_module,
    utcnow,
)


def run(module):
    params = module.params
    peer_name = params["peer_name"]
    check_peer_name(peer_name)
    check_valid_days(params["valid_days"])
    renew_before = parse_duration(params["renew_before"], "renew_before")
    sans = parse_subject_alt_names(params["subject_alt_names"]) or [f"DNS:{peer_name}"]
    profile = params["profile"]
    csr = load_csr(params["csr_content"])
    now = utcnow()

    current_pem = (params["current_certificate"] or "").strip()
    current, findings = None, []
    if current_pem:
        try:
            current = load_certificate(current_pem)
        except PKIError:
            findings = ["unparseable"]

    ca_cert_data = read_bytes(params["ca_certificate_path"])
    ca_key_data = read_bytes(params["ca_privatekey_path"])
    if ca_cert_data is None or ca_key_data is None:
        option = "ca_certificate_path" if ca_cert_data is None else "ca_privatekey_path"
        missing = f"{option}: the fabric CA file {params[option]} does not exist"
        if not module.check_mode:
            raise PKIError(missing)
        module.warn(f"{missing} (yet); predicting a new certificate")
        return {"changed": True, "certificate": "", "info": {}, "reasons": ["ca_missing"]}
    try:
        ca_cert = load_certificate(ca_cert_data)
    except PKIError as exc:
        raise PKIError(f"ca_certificate_path: {exc}") from None
    try:
        ca_key = load_private_key(ca_key_data, params["ca_privatekey_passphrase"])
    except PKIError as exc:
        raise PKIError(f"ca_privatekey_path: {exc}") from None

    if current is not None:
        findings = leaf_reasons(
            current, ca_cert, csr.public_key(), peer_name, renew_before, now, sans, profile
        )
    reasons = regenerate_decision(
        module, params["regenerate"], bool(current_pem), findings, f"the certificate of {peer_name}"
    )
    cert = current
    if reasons:
        cert = build_gateway_certificate(
            ca_cert, ca_key, csr.public_key(), peer_name, params["valid_days"], now, sans, profile
        )
    result = {
        "changed": bool(reasons),
        "certificate": certificate_pem(cert).decode("ascii") if reasons else current_pem + "\n",
        "info": certificate_facts(cert),
        "reasons": reasons,
    }
    return finish(module, result, {"before": certificate_facts(current), "after": result["info"]})


def main():
    module = AnsibleModule(
        argument_spec=dict(
            csr_content=dict(type="str", required=True),
            peer_name=dict(type="str", required=True),
            subject_alt_names=dict(type="list", elements="str", default=[]),
            profile=dict(
                type="str", default="gateway", choices=["gateway", "admin_server", "admin_client"]
            ),
            current_certificate=dict(type="str", default=""),
            ca_certificate_path=dict(type="path", required=True),
            ca_privatekey_path=dict(type="path", required=True),
            ca_privatekey_passphrase=dict(type="str", no_log=True),
            valid_days=dict(type="int", default=365),
            renew_before=dict(type="str", default="30d"),
            regenerate=dict(REGENERATE_OPTION),
        ),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
