#!/usr/bin/python
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ruff: noqa: E402  (Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
module: imported_service
short_description: Manage a remote service a ClusterLink gateway makes local (an import)
version_added: 0.1.0
description:
  - Creates, updates or deletes an B(imported service) in the admin API of the ClusterLink
    gateway on the target host. An import is a local listening port that stands for a
    service exported by one or more remote sites (the sources), chosen by a load-balancing
    scheme.
  - The gateway listens on the port before the call returns; deleting the import closes it.
  - The object is compared on name, labels and spec only, never on its status. With
    O(port=0) the gateway picks a port from its range and keeps it; that port is in the
    returned C(status), and re-runs with O(port=0) do not change it.
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
      - Name of the import. A DNS label (lowercase letters, digits and V(-), at most 63
        characters).
      - Sources without O(sources[].export) import the export of this name.
    type: str
    required: true
  port:
    description:
      - Local listening port (1-65535), or V(0) to let the gateway allocate one from its
        import port range and keep it.
    type: int
    default: 0
  bind:
    description:
      - IP address to listen on. Default from the gateway's configuration (C(imports.bind),
        V(127.0.0.1) unless set, so that only applications on the gateway host reach the import).
      - Any other address exposes the imported service to that network; restrict it with a
        firewall.
      - V(auto) gives the import an address of its own from the gateway's
        C(imports.address_range) (kept until the import is deleted), so that O(port) can be the
        service's real port; clients reach it as C(<name>.<zone>) (C(clusterlink.internal)).
    type: str
  sources:
    description:
      - Where connections go, one or more exports of remote peers. Required when
        O(state=present). The order matters for O(lb_scheme=static).
    type: list
    elements: dict
    suboptions:
      peer:
        description:
          - Name of the peer that exports the service.
        type: str
        required: true
      export:
        description:
          - Name of the export at that peer. Defaults to the import's O(name).
        type: str
  lb_scheme:
    description:
      - How a source is chosen for each connection. V(static) tries the sources in order
        (failover). Unreachable peers are tried last; a failed source moves on to the next.
    type: str
    choices: [round-robin, random, static]
    default: round-robin
seealso:
  - module: clusterlink.fabric.exported_service
  - module: clusterlink.fabric.peer
  - module: clusterlink.fabric.access_policy
"""

EXAMPLES = r"""
- name: Make the database of the site west (falling back to east) reachable on port 15432
  clusterlink.fabric.imported_service:
    name: db
    port: 15432
    bind: 127.0.0.1
    lb_scheme: static
    sources:
      - peer: west
      - peer: east
        export: db-replica

- name: Import with a port allocated by the gateway
  clusterlink.fabric.imported_service:
    name: web
    sources: [{peer: west}]
  register: web_import

- name: Show the allocated port
  ansible.builtin.debug:
    msg: "web is on port {{ web_import.imported_service.status.port }}"
"""

RETURN = r"""
operation:
  description: What was (or in check mode would be) done.
  returned: always
  type: str
  choices: [create, update, delete, none]
  sample: create
imported_service:
  description:
    - The import as stored by the gateway, with its status (in check mode, the predicted
      object).
  returned: when O(state=present)
  type: dict
  contains:
    kind:
      description: V(Import).
      type: str
      returned: always
    name:
      description: Name of the import.
      type: str
      returned: always
    labels:
      description: Labels of the import.
      type: dict
      returned: always
    spec:
      description: C(port), C(bind), C(sources) and C(lb_scheme).
      type: dict
      returned: always
    status:
      description:
        - Read-only state. C(listen) and C(port) are the effective listen address and port,
          C(listening) whether the port is open, C(error) why not, C(active_connections).
      type: dict
      returned: when the object exists on the gateway
  sample:
    kind: Import
    name: web
    labels: {}
    spec: {port: 0, bind: null, sources: [{peer: west, export: null}], lb_scheme: round-robin}
    status: {listen: "127.0.0.1:41000", port: 41000, listening: true, error: null,
             active_connections: 0}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterlink.fabric.plugins.module_utils._api import GatewayResource


class ImportedService(GatewayResource):
    kind = "imports"
    kind_name = "Import"
    singular = "import"
    result_key = "imported_service"
    spec_options = dict(
        port=dict(type="int", default=0),
        bind=dict(type="str"),
        sources=dict(
            type="list",
            elements="dict",
            options=dict(
                peer=dict(type="str", required=True),
                export=dict(type="str"),
            ),
        ),
        lb_scheme=dict(
            type="str", default="round-robin", choices=["round-robin", "random", "static"]
        ),
    )
    required_for_present = ["sources"]

    def spec_from_params(self):
        return {key: self.params[key] for key in ("port", "bind", "sources", "lb_scheme")}

    def normalize_spec(self, spec):
        return {
            "port": spec.get("port") or 0,
            "bind": spec.get("bind") or None,
            "sources": [
                {"peer": src.get("peer"), "export": src.get("export") or None}
                for src in spec.get("sources") or []
            ],
            "lb_scheme": spec.get("lb_scheme") or "round-robin",
        }


def main():
    ImportedService.main(AnsibleModule)


if __name__ == "__main__":
    main()
