#!/usr/bin/python
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ruff: noqa: E402  (Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
module: access_policy
short_description: Manage an access policy on a ClusterLink gateway
version_added: 0.1.0
description:
  - Creates, updates or deletes an B(access policy) in the admin API of the ClusterLink
    gateway on the target host.
  - Connections are denied by default and need an allow on both ends (the importing and the
    exporting gateway). Decision order is privileged deny, privileged allow, deny, allow,
    default deny.
  - Selectors are Kubernetes label selectors over the connection's attributes
    C(peer.clusterlink.net/name), C(peer.clusterlink.net/labels.<key>),
    C(export.clusterlink.net/name), C(export.clusterlink.net/labels.<key>) and
    C(client.clusterlink.net/ip). An empty selector V({}) matches everything; a policy
    matches when one O(from) selector and one O(to) selector match.
  - The object is compared on name, labels and spec only.
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
      - Name of the policy. A DNS label (lowercase letters, digits and V(-), at most 63
        characters).
    type: str
    required: true
  action:
    description:
      - Whether matching connections are allowed or denied. Required when O(state=present).
    type: str
    choices: [allow, deny]
  privileged:
    description:
      - Whether the policy is in the privileged tier, which is decided before all regular
        policies.
    type: bool
    default: false
  from:
    description:
      - Selectors for the client side (the importing peer and the client).
      - When omitted, one empty selector that matches everything.
    type: list
    elements: dict
    suboptions:
      matchLabels:
        description:
          - Attributes that must have exactly these values, for example the key
            C(peer.clusterlink.net/name) with the value C(west).
        type: dict
      matchExpressions:
        description:
          - Requirements that must all hold.
        type: list
        elements: dict
        suboptions:
          key:
            description: Attribute name.
            type: str
            required: true
          operator:
            description:
              - V(In) and V(NotIn) need O(from[].matchExpressions[].values); V(Exists) and
                V(DoesNotExist) take none.
            type: str
            required: true
            choices: [In, NotIn, Exists, DoesNotExist]
          values:
            description: Values for V(In) and V(NotIn).
            type: list
            elements: str
      clientCIDRs:
        description:
          - Client addresses or networks; when set, the client's address must be in one of
            them.
        type: list
        elements: str
  to:
    description:
      - Selectors for the service side (the exporting peer and the export).
      - When omitted, one empty selector that matches everything.
    type: list
    elements: dict
    suboptions:
      matchLabels:
        description:
          - Attributes that must have exactly these values, for example the key
            C(export.clusterlink.net/name) with the value C(db).
        type: dict
      matchExpressions:
        description:
          - Requirements that must all hold.
        type: list
        elements: dict
        suboptions:
          key:
            description: Attribute name.
            type: str
            required: true
          operator:
            description:
              - V(In) and V(NotIn) need O(to[].matchExpressions[].values); V(Exists) and
                V(DoesNotExist) take none.
            type: str
            required: true
            choices: [In, NotIn, Exists, DoesNotExist]
          values:
            description: Values for V(In) and V(NotIn).
            type: list
            elements: str
seealso:
  - module: clusterlink.fabric.exported_service
  - module: clusterlink.fabric.imported_service
"""

EXAMPLES = r"""
- name: Let the site west use the export db, from clients in 10.1.0.0/16 only
  clusterlink.fabric.access_policy:
    name: west-to-db
    action: allow
    from:
      - matchLabels:
          peer.clusterlink.net/name: west
        clientCIDRs: [10.1.0.0/16]
    to:
      - matchLabels:
          export.clusterlink.net/name: db

- name: Never let test sites in, whatever other policies say
  clusterlink.fabric.access_policy:
    name: no-test-sites
    action: deny
    privileged: true
    from:
      - matchExpressions:
          - key: peer.clusterlink.net/labels.env
            operator: In
            values: [test, dev]

- name: Allow everything (both selectors default to match-all)
  clusterlink.fabric.access_policy:
    name: allow-all
    action: allow
"""

RETURN = r"""
operation:
  description: What was (or in check mode would be) done.
  returned: always
  type: str
  choices: [create, update, delete, none]
  sample: create
access_policy:
  description: The policy as stored by the gateway (in check mode, the predicted object).
  returned: when O(state=present)
  type: dict
  contains:
    kind:
      description: V(Policy).
      type: str
      returned: always
    name:
      description: Name of the policy.
      type: str
      returned: always
    labels:
      description: Labels of the policy.
      type: dict
      returned: always
    spec:
      description:
        - C(action), C(privileged), C(from) and C(to), with the selectors' defaults filled
          in.
      type: dict
      returned: always
    status:
      description: Read-only state (empty for policies).
      type: dict
      returned: when the object exists on the gateway
  sample:
    kind: Policy
    name: west-to-db
    labels: {}
    spec:
      action: allow
      privileged: false
      from: [{matchLabels: {peer.clusterlink.net/name: west}, matchExpressions: [],
              clientCIDRs: [10.1.0.0/16]}]
      to: [{matchLabels: {export.clusterlink.net/name: db}, matchExpressions: []}]
    status: {}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterlink.fabric.plugins.module_utils._api import (
    GatewayResource,
    normalize_selector,
)


def _selector_options(client_cidrs):
    options = dict(
        matchLabels=dict(type="dict"),
        matchExpressions=dict(
            type="list",
            elements="dict",
            options=dict(
                key=dict(type="str", required=True, no_log=False),
                operator=dict(
                    type="str", required=True, choices=["In", "NotIn", "Exists", "DoesNotExist"]
                ),
                values=dict(type="list", elements="str"),
            ),
        ),
    )
    if client_cidrs:
        options["clientCIDRs"] = dict(type="list", elements="str")
    return options


class AccessPolicy(GatewayResource):
    kind = "policies"
    kind_name = "Policy"
    singular = "policy"
    result_key = "access_policy"
    spec_options = {
        "action": dict(type="str", choices=["allow", "deny"]),
        "privileged": dict(type="bool", default=False),
        "from": dict(type="list", elements="dict", options=_selector_options(True)),
        "to": dict(type="list", elements="dict", options=_selector_options(False)),
    }
    required_for_present = ["action"]

    def spec_from_params(self):
        spec = {key: self.params[key] for key in ("action", "privileged", "from", "to")}
        for key in ("from", "to"):
            if spec[key] is None:
                spec[key] = [{}]
        return spec

    def normalize_spec(self, spec):
        return {
            "action": spec.get("action"),
            "privileged": bool(spec.get("privileged")),
            "from": [normalize_selector(s, client_cidrs=True) for s in spec.get("from") or []],
            "to": [normalize_selector(s) for s in spec.get("to") or []],
        }


def main():
    AccessPolicy.main(AnsibleModule)


if __name__ == "__main__":
    main()
