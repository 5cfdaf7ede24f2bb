#!/usr/bin/python
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ruff: noqa: E402  (Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
module: gateway_info
short_description: Read the status and the objects of a ClusterLink gateway
version_added: 0.1.0
description:
  - Reads, from the admin API of the ClusterLink gateway on the target host, its status
    (peer name, version, readiness, per-object status, invalid stored objects) and its
    objects (peers, exports, imports and access policies).
  - Changes nothing.
author:
  - ClusterLink contributors (!UNKNOWN)
extends_documentation_fragment:
  - clusterlink.fabric.gateway_api
  - clusterlink.fabric.attributes
  - clusterlink.fabric.attributes.actiongroup_gateway
attributes:
  check_mode:
    support: full
    details:
      - The module only reads, so check mode changes nothing about what it does.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  kinds:
    description:
      - The kinds of objects to return in RV(objects). V([]) returns only the status.
    type: list
    elements: str
    choices: [peers, exports, imports, policies]
    default: [peers, exports, imports, policies]
  cert_renew_before:
    description:
      - Renewal threshold of the gateway's own certificates (the fabric one and the admin
        listener's), for RV(expiry). A certificate that expires within this time is
        reported in RV(expiry.expiring) and the module warns.
      - A number followed by V(w), V(d), V(h), V(m) or V(s) (for example V(30d)), or a plain
        number of seconds. Use the pki role's C(clusterlink_pki_cert_renew_before).
      - Not set (with O(ca_renew_before) not set either) for no RV(expiry).
    type: str
  ca_renew_before:
    description:
      - Renewal threshold of the fabric CAs the gateway trusts, as O(cert_renew_before). Use
        the pki role's C(clusterlink_pki_ca_renew_before).
    type: str
seealso:
  - module: clusterlink.fabric.peer
  - module: clusterlink.fabric.exported_service
  - module: clusterlink.fabric.imported_service
  - module: clusterlink.fabric.access_policy
"""

EXAMPLES = r"""
- name: Everything the gateway knows
  clusterlink.fabric.gateway_info:
  register: gateway

- name: Peers that are not reachable
  ansible.builtin.debug:
    msg: "{{ gateway.objects.peers | rejectattr('status.reachable') | map(attribute='name') }}"

- name: Only the imports, over the admin TCP listener
  clusterlink.fabric.gateway_info:
    kinds: [imports]
    url: https://gw1.example.com:9443
    client_cert: /etc/clusterlink/admin/ops.crt
    client_key: /etc/clusterlink/admin/ops.key
    ca_path: /etc/clusterlink/admin/ca.pem
  delegate_to: localhost

- name: Warn about certificates that expire within the pki role's renewal thresholds
  clusterlink.fabric.gateway_info:
    kinds: []
    cert_renew_before: 30d
    ca_renew_before: 90d
  register: gateway

- name: Fail when one has expired
  ansible.builtin.assert:
    that: gateway.expiry.expired | length == 0
"""

RETURN = r"""
version:
  description: Version of the gateway daemon.
  returned: success
  type: str
  sample: 0.1.0
api_version:
  description: Version of the admin API the module used.
  returned: success
  type: str
  sample: v1
peer_name:
  description: Peer name of this gateway's site.
  returned: success
  type: str
  sample: east
ready:
  description: Whether the gateway is ready (its data plane runs every stored object).
  returned: success
  type: bool
  sample: true
status:
  description:
    - The gateway's status (C(GET /v1/status)) -- C(peer_name), C(labels), C(version),
      C(uptime_seconds), C(ready), the status of every peer, export, import and policy,
      and C(invalid) (stored objects the gateway could not load).
  returned: success
  type: dict
  sample:
    peer_name: east
    labels: {env: prod}
    version: 0.1.0
    uptime_seconds: 12.5
    ready: true
    peers: [{name: west, reachable: true, last_seen: "2026-01-01T10:00:00Z"}]
    exports: []
    imports: []
    policies: []
    invalid: []
expiry:
  description:
    - The certificates of C(status.certificates) that have expired, and those that expire
      within their renewal threshold (O(ca_renew_before) for C(kind=ca), O(cert_renew_before)
      for the others), each with its C(threshold_seconds). The module warns about every one.
  returned: when O(cert_renew_before) or O(ca_renew_before) is set
  type: dict
  contains:
    expired:
      description: Certificates past their notAfter.
      type: list
      elements: dict
      returned: success
    expiring:
      description: Certificates that expire within their threshold.
      type: list
      elements: dict
      returned: success
  sample:
    expired: []
    expiring:
      - kind: gateway
        subject: CN=east
        fingerprint_sha256: 3f0c...
        not_after: "2027-01-20T10:00:00Z"
        expires_in_seconds: 1641600
        expired: false
        threshold_seconds: 2592000
objects:
  description:
    - The objects of each kind asked for in O(kinds), as the API returns them (C(kind),
      C(name), C(labels), C(spec), C(status)), sorted by name.
  returned: success
  type: dict
  contains:
    peers:
      description: The peers.
      type: list
      elements: dict
      returned: when asked for
    exports:
      description: The exported services.
      type: list
      elements: dict
      returned: when asked for
    imports:
      description: The imported services.
      type: list
      elements: dict
      returned: when asked for
    policies:
      description: The access policies.
      type: list
      elements: dict
      returned: when asked for
  sample:
    peers:
      - kind: Peer
        name: west
        labels: {}
        spec: {dial: true, gateways: [{host: 198.18.0.21, port: 443}]}
        status: {reachable: true}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterlink.fabric.plugins.module_utils._api import (
    AdminAPI,
    APIError,
    Unreachable,
    api_argument_spec,
    fail_api_error,
)
from ansible_collections.clusterlink.fabric.plugins.module_utils._expiry import classify, describe
from ansible_collections.clusterlink.fabric.plugins.module_utils._pki import (
    PKIError,
    parse_duration,
)

KINDS = ["peers", "exports", "imports", "policies"]


def main():
    argument_spec = dict(
        kinds=dict(type="list", elements="str", choices=KINDS, default=list(KINDS)),
        cert_renew_before=dict(type="str"),
        ca_renew_before=dict(type="str"),
    )
    argument_spec.update(api_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    thresholds = {}
    for option, default in (("cert_renew_before", "30d"), ("ca_renew_before", "90d")):
        value = module.params[option]
        try:
            thresholds[option] = parse_duration(value or default, option).total_seconds()
        except PKIError as exc:
            module.fail_json(msg=str(exc))
    api = AdminAPI(module.params)
    try:
        status = api.request("GET", "/v1/status") or {}
        objects = {kind: api.list(kind) for kind in KINDS if kind in module.params["kinds"]}
    except Unreachable as exc:
        module.fail_json(msg=str(exc))
    except APIError as exc:
        fail_api_error(module, exc, f"the gateway admin API answered {exc.status}")
    extra = {}
    if module.params["cert_renew_before"] or module.params["ca_renew_before"]:
        expired, expiring = classify(
            status.get("certificates"),
            thresholds["cert_renew_before"],
            thresholds["ca_renew_before"],
        )
        extra["expiry"] = {"expired": expired, "expiring": expiring}
        where = status.get("peer_name") or "the gateway"
        for cert in expired:
            module.warn(f"{where}: {describe(cert)}")
        for cert in expiring:
            days = cert["threshold_seconds"] / 86400.0
            module.warn(
                f"{where}: {describe(cert)}, within the renewal threshold ({days:g} days); "
                "renew with playbooks/rotate_certificates.yml"
            )
    module.exit_json(
        changed=False,
        **extra,
        version=status.get("version"),
        api_version="v1",
        peer_name=status.get("peer_name"),
        ready=status.get("ready"),
        status=status,
        objects=objects,
    )


if __name__ == "__main__":
    main()
