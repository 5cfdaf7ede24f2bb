#!/usr/bin/python
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ruff: noqa: E402  (Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
module: exported_service
short_description: Manage a service a ClusterLink gateway offers to other sites (an export)
version_added: 0.1.0
description:
  - Creates, updates or deletes an B(exported service) in the admin API of the ClusterLink
    gateway on the target host. An export is a local C(host:port) service that this site
    offers to other sites, optionally only to named consumer peers.
  - Other sites still need an access policy that allows the connection, on both ends
    (M(clusterlink.fabric.access_policy)).
  - The object is compared on name, labels and spec only, never on its status.
author:
  - ClusterLink contributors (!UNKNOWN)
extends_documentation_fragment:
  - clusterlink.fabric.gateway_api
  - clusterlink.fabric.attributes
  - clusterlink.fabric.attributes.actiongroup_gateway
  - clusterlink.fabric.resource
options:
  name:
    description:
      - Name of the export, which importing sites name in their sources.
      - A DNS label (lowercase letters, digits and V(-), at most 63 characters).
    type: str
    required: true
  host:
    description:
      - IP address or DNS name of the service, as the gateway reaches it.
    type: str
    default: 127.0.0.1
  port:
    description:
      - TCP port of the service (1-65535). Required when O(state=present).
    type: int
  allowed_peers:
    description:
      - Names of the peers that may import this service. Empty means any peer (subject to
        access policies).
    type: list
    elements: str
    default: []
seealso:
  - module: clusterlink.fabric.imported_service
  - module: clusterlink.fabric.access_policy
"""

EXAMPLES = r"""
- name: Offer the local PostgreSQL to the site west only
  clusterlink.fabric.exported_service:
    name: db
    port: 5432
    allowed_peers: [west]
    labels:
      tier: data

- name: Offer a service that runs on another host of this site
  clusterlink.fabric.exported_service:
    name: web
    host: 10.0.0.12
    port: 8080

- name: Stop offering it
  clusterlink.fabric.exported_service:
    name: web
    state: absent
"""

RETURN = r"""
operation:
  description: What was (or in check mode would be) done.
  returned: always
  type: str
  choices: [create, update, delete, none]
  sample: update
exported_service:
  description:
    - The export as stored by the gateway, with its status (in check mode, the predicted
      object).
  returned: when O(state=present)
  type: dict
  contains:
    kind:
      description: V(Export).
      type: str
      returned: always
    name:
      description: Name of the export.
      type: str
      returned: always
    labels:
      description: Labels of the export.
      type: dict
      returned: always
    spec:
      description: C(host), C(port) and C(allowed_peers).
      type: dict
      returned: always
    status:
      description: Read-only state, C(error).
      type: dict
      returned: when the object exists on the gateway
  sample:
    kind: Export
    name: db
    labels: {tier: data}
    spec: {host: 127.0.0.1, port: 5432, allowed_peers: [west]}
    status: {error: null}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterlink.fabric.plugins.module_utils._api import GatewayResource


class ExportedService(GatewayResource):
    kind = "exports"
    kind_name = "Export"
    singular = "export"
    result_key = "exported_service"
    spec_options = dict(
        host=dict(type="str", default="127.0.0.1"),
        port=dict(type="int"),
        allowed_peers=dict(type="list", elements="str", default=[]),
    )
    required_for_present = ["port"]

    def spec_from_params(self):
        return {key: self.params[key] for key in ("host", "port", "allowed_peers")}

    def normalize_spec(self, spec):
        return {
            "host": spec.get("host") or "127.0.0.1",
            "port": spec.get("port"),
            "allowed_peers": list(spec.get("allowed_peers") or []),
        }


def main():
    ExportedService.main(AnsibleModule)


if __name__ == "__main__":
    main()
