#!/usr/bin/python
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ruff: noqa: E402  (Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
module: peering_grant
short_description: Redeem another party's peering grant on a ClusterLink gateway
version_added: 0.1.0
description:
  - Redeems a B(peering grant) issued by another party's gateway (C(gwctl grant create)) on the
    gateway of the target host, through its admin API (C(POST /v1/grants/redeem)). The gateway
    checks the grant's signature, creates a peer for each granting site with the other party's
    CA bundle as its trust anchor (C(spec.trust.ca)), and redeems the grant once over the
    granting gateway's peer port; the granting side then holds a peer for this site with this
    party's CA bundle.
  - Idempotent. A grant whose peers this gateway already holds (label C(clusterlink.io/grant))
    changes nothing and contacts nobody, so re-running a playbook with an already redeemed
    grant reports no change.
  - A refused grant (C(expired), C(used-up), C(replayed), C(tampered), C(revoked), C(unknown),
    C(bad-request), C(rate-limited)) fails the task with that reason in RV(result); nothing is
    left behind on this gateway.
  - The grant text is a one-time secret. It is never logged, shown in a diff or returned.
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
      - Check mode reads the grant and the peers this gateway holds and predicts the result;
        it contacts neither the admin API's write endpoints nor the granting gateway, so a
        grant that the granting side would refuse is reported as a change.
  diff_mode:
    support: full
    details:
      - The diff shows the peers the grant creates (name, endpoints, the SHA-256 of the CA
        bundle), never the grant text.
  idempotent:
    support: full
    details:
      - A grant whose peers the gateway holds already is not redeemed again.
options:
  grant:
    description:
      - The grant text (C(clusterlink-grant:v1:...)), for example read from a vault-encrypted
        file. Whitespace and line breaks in it are ignored.
    type: str
    required: true
  endpoints:
    description:
      - This gateway's peer port as the granting party dials it.
      - Omitted, the gateway's C(listen.address) and C(listen.port); if that is a wildcard, the
        granting party will not dial this site and uses the links it opens instead.
    type: list
    elements: dict
    suboptions:
      host:
        description:
          - IP address or DNS name.
        type: str
        required: true
      port:
        description:
          - Peer port.
        type: int
        default: 443
seealso:
  - module: clusterlink.fabric.peer
  - module: clusterlink.fabric.gateway_info
"""

EXAMPLES = r"""
- name: Redeem the grant party A handed over (kept in a vault-encrypted vars file)
  clusterlink.fabric.peering_grant:
    grant: "{{ party_a_grant }}"
    endpoints:
      - host: gw-b.example.net
        port: 443
"""

RETURN = r"""
operation:
  description: What was (or in check mode would be) done.
  returned: always
  type: str
  choices: [redeem, none]
  sample: redeem
result:
  description:
    - V(accepted), V(already-redeemed), V(would-redeem) in check mode, or the reason a
      refused grant was refused.
  returned: always
  type: str
  sample: accepted
grant_id:
  description: The grant's id (not a secret).
  returned: when the grant could be read
  type: str
  sample: g-0b9c849ed14b3714
peers:
  description: The names of the peers the grant creates (or created) on this gateway.
  returned: when the grant could be read
  type: list
  elements: str
  sample: [site-a]
"""

import base64
import hashlib
import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.clusterlink.fabric.plugins.module_utils._api import (
    AdminAPI,
    APIError,
    Unreachable,
    api_argument_spec,
    fail_api_error,
)

PREFIX = "clusterlink-grant:v1:"
GRANT_LABEL = "clusterlink.io/grant"


def read_grant(text):
    """The grant's id, sites and CA digest from its body (the gateway checks the signature)."""
    text = "".join(text.split())
    if not text.startswith(PREFIX) or "." not in text:
        raise ValueError(f"not a grant: it does not start with {PREFIX!r}")
    body = text[len(PREFIX) :].partition(".")[0]
    try:
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        sites = [
            {"name": str(s["name"]), "endpoints": [str(e) for e in s["endpoints"]]}
            for s in doc["sites"]
        ]
        return str(doc["id"]), sites, hashlib.sha256(str(doc["ca"]).encode()).hexdigest()
    except (ValueError, KeyError, TypeError):
        raise ValueError("not a grant: its body cannot be read") from None


def _peer_view(peer):
    if peer is None:
        return None
    spec = peer.get("spec") or {}
    ca = (spec.get("trust") or {}).get("ca")
    return {
        "labels": peer.get("labels") or {},
        "gateways": spec.get("gateways") or [],
        "trust_ca_sha256": hashlib.sha256(ca.encode()).hexdigest() if ca else None,
    }


def _predicted(site, grant_id, ca_sha256):
    gateways = []
    for endpoint in site["endpoints"]:
        host, _sep, port = endpoint.rpartition(":")
        gateways.append({"host": host.strip("[]"), "port": int(port)})
    return {"labels": {GRANT_LABEL: grant_id}, "gateways": gateways, "trust_ca_sha256": ca_sha256}


def run(module):
    params = module.params
    api = AdminAPI(params)
    result = dict(changed=False, operation="none")
    try:
        grant_id, sites, ca_sha256 = read_grant(params["grant"])
    except ValueError as exc:
        module.fail_json(msg=str(exc), result="bad-request", field="grant", **result)
    names = [s["name"] for s in sites]
    result.update(grant_id=grant_id, peers=names)
    try:
        current = {name: api.get("peers", name) for name in names}
    except Unreachable as exc:
        module.fail_json(msg=str(exc), **result)
    except APIError as exc:
        fail_api_error(module, exc, "the gateway admin API answered", **result)
    before = {name: _peer_view(peer) for name, peer in current.items()}
    held = all(
        peer is not None and (peer.get("labels") or {}).get(GRANT_LABEL) == grant_id
        for peer in current.values()
    )
    if held:
        result["result"] = "already-redeemed"
        after = before
    else:
        after = {s["name"]: _predicted(s, grant_id, ca_sha256) for s in sites}
        result.update(changed=True, operation="redeem", result="would-redeem")
        if not module.check_mode:
            body = {"grant": params["grant"]}
            if params["endpoints"]:
                body["endpoints"] = params["endpoints"]
            try:
                answer = api.request("POST", "/v1/grants/redeem", body)
            except Unreachable as exc:
                module.fail_json(msg=str(exc), changed=False, operation="none", grant_id=grant_id)
            except APIError as exc:
                reason = _reason(exc)
                module.fail_json(
                    msg=f"grant {grant_id} refused ({reason}): {exc.message}",
                    result=reason,
                    status=exc.status,
                    changed=False,
                    operation="none",
                    grant_id=grant_id,
                    peers=names,
                )
            result["result"] = answer.get("result")
            result["changed"] = bool(answer.get("changed"))
            if not result["changed"]:
                result["operation"] = "none"
            after = {
                name: _peer_view(api.get("peers", name)) for name in answer.get("peers") or names
            }
    if module._diff:
        result["diff"] = dict(before={"peers": before}, after={"peers": after})
    return result


def _reason(exc):
    """The refusal reason of a refused redemption (``result``), else the HTTP status."""
    return str(exc.body.get("result") or f"http-{exc.status}")


def main():
    spec = dict(
        grant=dict(type="str", required=True, no_log=True),
        endpoints=dict(
            type="list",
            elements="dict",
            options=dict(host=dict(type="str", required=True), port=dict(type="int", default=443)),
        ),
    )
    spec.update(api_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
