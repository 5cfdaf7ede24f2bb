#!/usr/bin/python
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ruff: noqa: E402  (Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
module: peer
short_description: Manage a remote site (peer) on a ClusterLink gateway
version_added: 0.1.0
description:
  - Creates, updates or deletes a B(peer) in the admin API of the ClusterLink gateway on the
    target host. A peer is a remote site, with its name (the name in its gateways' certificates)
    and the endpoints of its gateways.
  - A peer with O(dial=false) is an outbound-only site (behind NAT or a firewall that allows
    only outgoing connections). This gateway never dials it, and uses the links it opens to
    this gateway instead. It needs no endpoints.
  - The object is compared on name, labels and spec only; its status (reachability, last
    heartbeat) never causes a change.
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
      - Peer name of the remote site, as in the DNS SAN of its gateways' certificates.
      - A DNS label (lowercase letters, digits and V(-), at most 63 characters).
    type: str
    required: true
  dial:
    description:
      - Whether this gateway dials the peer at its O(gateways).
      - V(false) for an outbound-only site (one that accepts no inbound connection). This
        gateway never dials it and reaches it over the links the peer opens to it (reverse
        links). O(gateways) may then be left out.
    type: bool
    default: true
  gateways:
    description:
      - The endpoints of the remote site's gateways (at least one when O(dial=true)).
      - Required when O(state=present) and O(dial=true). With O(dial=false) they are optional
        (the gateway does not dial them); omitted, the peer has none. The order is kept.
    type: list
    elements: dict
    suboptions:
      host:
        description:
          - IP address or DNS name of the gateway.
        type: str
        required: true
      port:
        description:
          - Peer port of the gateway.
        type: int
        default: 443
  client_attributes:
    description:
      - Whether this gateway, when it exports a service, uses the client attributes (the
        client's address, matched by C(clientCIDRs) in access policies) that this peer asserts
        for the connections it forwards. They are asserted by the importing site, not observed.
      - V(honor) uses them; V(ignore) evaluates the policies as if the client address were
        unknown (an allow restricted by C(clientCIDRs) then does not match).
      - Omitted, the gateway's default applies (the field is unset) - honour them only if the
        peer's certificate chains to the fabric CA, which is the case for every site of the
        fabric.
    type: str
    choices: [honor, ignore]
  trust:
    description:
      - The peer's own trust anchors, for a site run by another party with its own CA. Its
        gateways' certificates must then be issued directly by a CA of O(trust.ca), and are
        accepted for this peer's name only; the fabric CA no longer vouches for this name, and
        the party's CA vouches for no other name (not for this site's own, nor for the other
        sites of the fabric).
      - This gateway dials the peer verifying its certificate against these anchors only.
      - Omitted, the peer is a site of this fabric (its certificates chain to the fabric CA).
        Removing it (or changing the bundle) closes within seconds every link of the peer
        whose certificate no longer passes.
      - For a rotation of the party's CA, list the old and the new CA during the overlap.
      - The diff shows each anchor's SHA-256 fingerprint (and subject), never the PEM.
    type: dict
    suboptions:
      ca:
        description:
          - PEM bundle of the CA certificate(s) (public, never a key) that directly issue the
            peer's gateway certificates; at least one valid now, at most 16.
          - For example V("{{ lookup('file', 'partner-ca.pem') }}").
        type: str
        required: true
  via:
    description:
      - Relays (names of other peers of this gateway, at most 8) through which this gateway
        reaches the peer when it has no direct or reverse link to it, for example two
        outbound-only sites (O(dial=false) on both sides) that both reach a hub site.
      - The relay splices the bytes only - the two ends run their own mutual TLS inside the
        relayed stream, so the relay can neither read nor impersonate them. A direct path,
        where one exists, is preferred; an unreachable relay is skipped.
      - Each relay must be a site configured as a relay (C(relay.enabled) in its
        C(gateway.yaml), the gateway role's C(clusterlink_relay)); the peer itself may not be
        named.
      - Omitted or empty, the peer is reached directly (or over its reverse links) only.
    type: list
    elements: str
seealso:
  - module: clusterlink.fabric.gateway_info
  - module: clusterlink.fabric.imported_service
  - module: clusterlink.fabric.access_policy
"""

EXAMPLES = r"""
- name: Peer with the site west, which has two redundant gateways
  clusterlink.fabric.peer:
    name: west
    labels:
      env: prod
      region: eu-west
    gateways:
      - host: 198.18.0.21
      - host: gw2.west.example.com
        port: 8443

- name: Peer with a partner site whose claimed client addresses must not count in policies
  clusterlink.fabric.peer:
    name: partner
    gateways:
      - host: 203.0.113.7
    client_attributes: ignore

- name: Peer with a site of another team, which has its own CA
  clusterlink.fabric.peer:
    name: partner
    gateways:
      - host: 203.0.113.9
    trust:
      ca: "{{ lookup('file', 'partner-ca.pem') }}"

- name: Peer with an outbound-only site (behind NAT), reached over the links it opens to us
  clusterlink.fabric.peer:
    name: edge
    dial: false

- name: Peer with an outbound-only site that this outbound-only site reaches through two hubs
  clusterlink.fabric.peer:
    name: spoke-2
    dial: false
    via: [hub-a, hub-b]

- name: Set the admin socket once for every ClusterLink module of a play
  module_defaults:
    group/clusterlink.fabric.gateway:
      socket: /run/clusterlink/admin.sock
  block:
    - name: Forget the site east
      clusterlink.fabric.peer:
        name: east
        state: absent
"""

RETURN = r"""
operation:
  description: What was (or in check mode would be) done.
  returned: always
  type: str
  choices: [create, update, delete, none]
  sample: create
peer:
  description:
    - The peer as stored by the gateway, with its status (in check mode, the predicted object).
  returned: when O(state=present)
  type: dict
  contains:
    kind:
      description: V(Peer).
      type: str
      returned: always
    name:
      description: Name of the peer.
      type: str
      returned: always
    labels:
      description: Labels of the peer.
      type: dict
      returned: always
    spec:
      description:
        - C(dial) (whether this gateway dials the peer), the endpoints, C(gateways), each
          with C(host) and C(port), C(client_attributes) if it is set, C(trust) (with
          C(ca), the canonical PEM bundle) if the peer has its own anchors, and C(via) (the
          relays) if it has any.
      type: dict
      returned: always
    status:
      description:
        - Read-only state of the peer, C(reachable) (null until the first heartbeat),
          C(last_seen), C(labels) learned from the peer, C(rtt_ms), C(error), C(links), and
          C(trust) (C(subject), C(fingerprint_sha256) and C(not_after) of each own anchor),
          and C(via) (the path in use, V(direct), V(reverse) or the name of the relay).
      type: dict
      returned: when the object exists on the gateway
  sample:
    kind: Peer
    name: west
    labels: {env: prod}
    spec:
      dial: true
      gateways: [{host: 198.18.0.21, port: 443}]
    status: {reachable: true, last_seen: "2026-01-01T10:00:00Z", labels: {}, rtt_ms: 0.8,
             error: null, links: 2}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterlink.fabric.plugins.module_utils._anchors import (
    canonical_bundle,
    describe_bundle,
)
from ansible_collections.clusterlink.fabric.plugins.module_utils._api import GatewayResource


class Peer(GatewayResource):
    kind = "peers"
    kind_name = "Peer"
    singular = "peer"
    result_key = "peer"
    spec_options = dict(
        dial=dict(type="bool", default=True),
        gateways=dict(
            type="list",
            elements="dict",
            options=dict(
                host=dict(type="str", required=True),
                port=dict(type="int", default=443),
            ),
        ),
        client_attributes=dict(type="str", choices=["honor", "ignore"]),
        trust=dict(type="dict", options=dict(ca=dict(type="str", required=True))),
        via=dict(type="list", elements="str"),
    )
    # gateways: required when state=present and dial=true, checked in run() (required_if
    # takes one condition only).

    def run(self):
        params = self.params
        if params["state"] == "present" and params["dial"] and not params["gateways"]:
            self.module.fail_json(
                msg="gateways: at least one endpoint is required when dial is true (the "
                f"default); set dial: false for an outbound-only site {params['name']!r}",
                changed=False,
                operation="none",
                field="gateways",
            )
        return super().run()

    def spec_from_params(self):
        spec = {"dial": self.params["dial"], "gateways": self.params["gateways"] or []}
        if self.params["client_attributes"] is not None:  # unset: the gateway's default
            spec["client_attributes"] = self.params["client_attributes"]
        if self.params["trust"] is not None:
            spec["trust"] = {"ca": self.params["trust"]["ca"]}
        if self.params["via"]:  # none: absent, as the gateway stores a peer without relays
            spec["via"] = list(self.params["via"])
        return spec

    def normalize_spec(self, spec):
        out = {
            "dial": spec.get("dial", True) is not False,  # absent: the default, true
            "gateways": [
                {"host": gw.get("host"), "port": 443 if gw.get("port") is None else gw["port"]}
                for gw in spec.get("gateways") or []
            ],
        }
        if spec.get("client_attributes") is not None:  # unset: absent, as the API shows it
            out["client_attributes"] = spec["client_attributes"]
        trust = spec.get("trust")
        if isinstance(trust, dict) and trust.get("ca") is not None:  # unset: absent
            out["trust"] = {"ca": canonical_bundle(str(trust["ca"]))}
        if spec.get("via"):  # empty: absent (the order is kept: the relays are tried in order)
            out["via"] = [str(relay) for relay in spec["via"]]
        return out

    def diff_view(self, comparable):
        """The anchors as fingerprints and subjects, never the PEM."""
        trust = (comparable.get("spec") or {}).get("trust")
        if not trust:
            return comparable
        spec = dict(comparable["spec"], trust={"ca": describe_bundle(trust["ca"])})
        return dict(comparable, spec=spec)


def main():
    Peer.main(AnsibleModule)


if __name__ == "__main__":
    main()
