"""Upstream TestPolicyLabels, TestPrivilegedPolicies and TestPeerLabels (clusterlink.md 9.2
#16-17, 9.3 #21), plus client-address CIDRs, with real gateways: cl0 exports http-echo,
cl1 imports it. Each step is one fresh client connection (no retry): a change takes effect
before its API call returns."""

from __future__ import annotations

import json
from typing import Any

from support.fabric import Fabric
from support.traffic import eventually, get

NAME = "peer.clusterlink.net/name"
EXPORT = "export.clusterlink.net/name"


def pol(name: str, action: str, frm: list | None = None, to: list | None = None, **kw: Any) -> dict:
    return {"name": name, "spec": {"action": action, "from": frm or [{}], "to": to or [{}], **kw}}


def two_sites(fabric: Fabric) -> int:
    fabric.client("cl0").create(
        "exports",
        {"name": "http-echo", "labels": {"env": "test"}, "spec": {"port": fabric.echo_port("cl0")}},
    )
    fabric.add_peer("cl1", "cl0")
    fabric.client("cl1").create(
        "imports",
        {"name": "http-echo", "labels": {"env": "test"}, "spec": {"sources": [{"peer": "cl0"}]}},
    )
    return fabric.import_port("cl1", "http-echo")


def test_policy_labels(fabric: Fabric) -> None:
    port = two_sites(fabric)
    cl0, cl1 = fabric.client("cl0"), fabric.client("cl1")
    allow = pol(
        "allow-cl0",
        "allow",
        [{"matchLabels": {NAME: "cl1"}}],
        [
            {
                "matchLabels": {
                    EXPORT: "http-echo",
                    NAME: "cl0",
                    "export.clusterlink.net/labels.env": "test",
                }
            }
        ],
    )
    cl1.create("policies", allow)
    cl0.create(
        "policies",
        pol(
            "allow-cl1", "allow", [{"matchLabels": {NAME: "cl1"}}], [{"matchLabels": {NAME: "cl0"}}]
        ),
    )
    assert get(port) == "cl0"  # 1
    cl1.create("policies", pol("deny-svc", "deny", to=[{"matchLabels": {EXPORT: "http-echo"}}]))
    assert get(port) == "reset"  # 2
    cl1.delete("policies", "deny-svc")
    assert get(port) == "cl0"  # 3
    cl1.create("policies", pol("deny-peer", "deny", to=[{"matchLabels": {NAME: "cl0"}}]))
    assert get(port) == "reset"  # 4
    cl1.delete("policies", "deny-peer")
    assert get(port) == "cl0"  # 5
    cl0.create("policies", pol("deny-cl1", "deny", [{"matchLabels": {NAME: "cl1"}}]))
    assert get(port) == "reset"  # 6 (ingress side)
    cl0.delete("policies", "deny-cl1")
    assert get(port) == "cl0"  # 7
    bad = pol("allow-cl0", "allow", to=[{"matchLabels": {EXPORT: "bad-svc", NAME: "cl0"}}])
    cl1.replace("policies", "allow-cl0", bad)
    assert get(port) == "reset"  # 8
    prod = pol(
        "allow-cl0", "allow", to=[{"matchLabels": {"export.clusterlink.net/labels.env": "prod"}}]
    )
    cl1.replace("policies", "allow-cl0", prod)
    assert get(port) == "reset"  # 9
    test = pol(
        "allow-cl0", "allow", to=[{"matchLabels": {"export.clusterlink.net/labels.env": "test"}}]
    )
    cl1.replace("policies", "allow-cl0", test)
    assert get(port) == "cl0"  # 10
    decisions = [json.loads(line) for line in fabric["cl1"].log_text().splitlines()]
    denied = [d for d in decisions if d.get("msg") == "egress denied"]
    assert {d["decision"] for d in denied} >= {
        "deny by policy deny-svc",
        "deny by policy deny-peer",
        "deny by <default deny>",
    }
    ingress = [json.loads(line) for line in fabric["cl0"].log_text().splitlines()]
    assert any(d.get("decision") == "deny by policy deny-cl1" for d in ingress)


def test_privileged_tiers(fabric: Fabric) -> None:
    port = two_sites(fabric)
    fabric.allow_all("cl0")
    cl1 = fabric.client("cl1")
    to = [{"matchLabels": {EXPORT: "http-echo", NAME: "cl0"}}]
    cl1.create("policies", pol("p-deny", "deny", to=to, privileged=True))
    cl1.create("policies", pol("p-allow", "allow", to=to, privileged=True))
    cl1.create("policies", pol("r-deny", "deny", to=to))
    cl1.create("policies", pol("r-allow", "allow", to=to))
    assert get(port) == "reset"  # privileged deny wins
    cl1.delete("policies", "p-deny")
    assert get(port) == "cl0"  # privileged allow beats regular deny
    cl1.delete("policies", "p-allow")
    assert get(port) == "reset"  # regular deny beats regular allow
    cl1.delete("policies", "r-deny")
    assert get(port) == "cl0"
    cl1.delete("policies", "r-allow")
    assert get(port) == "reset"  # default deny


def test_peer_labels(fabric: Fabric) -> None:
    fabric.start("cl0", extra={"labels": {"cluster": "cl0", "ip": "10.0.0.10"}})
    fabric.start("cl1", extra={"labels": {"cluster": "cl1", "ip": "10.0.0.11"}})
    port = two_sites(fabric)
    cl0, cl1 = fabric.client("cl0"), fabric.client("cl1")
    # the exporter knows cl1's labels from its own Peer object, never from what cl1 sends
    fabric.add_peer("cl0", "cl1", labels={"cluster": "cl1", "ip": "10.0.0.11"})
    fabric.allow_all("cl0", "cl1")
    assert get(port) == "cl0"
    cl0.create(
        "policies",
        pol("deny-cl1", "deny", [{"matchLabels": {"peer.clusterlink.net/labels.cluster": "cl1"}}]),
    )
    assert get(port) == "reset"  # 1
    cl0.create(
        "policies",
        pol(
            "p-allow",
            "allow",
            [{"matchLabels": {"peer.clusterlink.net/labels.ip": "10.0.0.11"}}],
            privileged=True,
        ),
    )
    assert get(port) == "cl0"  # 2: privileged allow beats regular deny
    # the importer learns cl0's labels from heartbeats (its Peer object for cl0 has none)
    assert eventually(
        lambda: json.dumps(cl1.get("peers", "cl0")["status"]["labels"], sort_keys=True),
        json.dumps({"cluster": "cl0", "ip": "10.0.0.10"}, sort_keys=True),
    )
    cl1.create(
        "policies",
        pol(
            "deny-other",
            "deny",
            to=[{"matchLabels": {"peer.clusterlink.net/labels.ip": "not.cl.0.ip"}}],
        ),
    )
    assert get(port) == "cl0"  # 3
    cl1.create(
        "policies",
        pol(
            "deny-ip", "deny", to=[{"matchLabels": {"peer.clusterlink.net/labels.ip": "10.0.0.10"}}]
        ),
    )
    assert get(port) == "reset"  # 4


def test_client_address_cidrs(fabric: Fabric) -> None:
    port = two_sites(fabric)
    fabric.allow_all("cl0", "cl1")
    cl0, cl1 = fabric.client("cl0"), fabric.client("cl1")
    assert get(port) == "cl0"
    cl1.create("policies", pol("deny-far", "deny", [{"clientCIDRs": ["10.0.0.0/8"]}]))
    assert get(port) == "cl0"
    cl1.create("policies", pol("deny-lo", "deny", [{"clientCIDRs": ["127.0.0.0/8"]}]))
    assert get(port) == "reset"  # egress, on the client's address
    cl1.delete("policies", "deny-lo")
    cl0.create("policies", pol("deny-client", "deny", [{"clientCIDRs": ["127.0.0.1/32"]}]))
    assert get(port) == "reset"  # ingress, on the address the importer forwarded
    cl0.delete("policies", "deny-client")
    assert get(port) == "cl0"
