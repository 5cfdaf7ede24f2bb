"""``gwctl explain`` and the refusal log lines with two real gateways on loopback: cl0 exports
http-echo, cl1 imports it. Every explanation is checked against what a real client connection
gets at the same moment, and each refusal log line must name the policy that refused. The peer
request behind it is checked with a real peer link: a peer may only ask about itself."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
import yaml

from clusterlink_gateway.peering import PeerPool
from support.fabric import Fabric
from support.gateway import BIN, GatewayProcess
from support.peering import tls_for
from support.traffic import get

NAME = "peer.clusterlink.net/name"
EXPORT = "export.clusterlink.net/name"


def pol(name: str, action: str, frm: list | None = None, to: list | None = None, **kw: Any) -> dict:
    return {"name": name, "spec": {"action": action, "from": frm or [{}], "to": to or [{}], **kw}}


def gwctl(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "gwctl"), "--socket", str(gw.socket), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def explain(gw: GatewayProcess, peer: str, *extra: str) -> dict[str, Any]:
    result = gwctl(gw, "explain", "--peer", peer, "--export", "http-echo", "-o", "json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def direction(data: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = [d for d in data["directions"] if d["direction"] == kind]
    return found


def check(found: dict[str, Any], gateway: str, side: str) -> dict[str, Any]:
    (one,) = [c for c in found["checks"] if c["gateway"] == gateway and c["side"] == side]
    return one


def log_lines(gw: GatewayProcess, msg: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in gw.log_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("msg") == msg]


def wait_log(gw: GatewayProcess, msg: str, policy: str, timeout: float = 30.0) -> dict[str, Any]:
    """The first log line ``msg`` naming ``policy`` (polled: logs are written asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in log_lines(gw, msg) if line.get("policy") == policy]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {msg!r} naming {policy}: {gw.log_tail()}"
        time.sleep(0.2)


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
    fabric.allow_all("cl0", "cl1")
    return fabric.import_port("cl1", "http-echo")


def test_explain_names_the_deciding_policy_at_each_end(fabric: Fabric) -> None:
    port = two_sites(fabric)
    cl0, cl1 = fabric.client("cl0"), fabric.client("cl1")

    # allowed at both ends, by allow-all
    assert get(port) == "cl0"
    data = explain(fabric["cl1"], "cl0")
    assert (data["gateway"], data["peer"], data["export"]) == ("cl1", "cl0", "http-echo")
    assert [d["direction"] for d in data["directions"]] == ["import"]  # cl1 exports nothing
    imp = direction(data, "import")
    assert (imp["importer"], imp["exporter"], imp["allowed"]) == ("cl1", "cl0", True)
    egress, ingress = check(imp, "cl1", "egress"), check(imp, "cl0", "ingress")
    assert egress["import"] == "http-echo" and egress["decision"]["policy"] == "allow-all"
    assert egress["decision"]["tier"] == "regular"
    assert egress["decision"]["selector"] == {"from[0]": {}, "to[0]": {}}
    assert egress["attributes"]["destination"][EXPORT] == "http-echo"
    assert ingress["answered"] and ingress["allowed"] is True
    assert ingress["decision"]["policy"] == "allow-all"
    # the exporter built the caller's attributes from the certificate's name
    assert ingress["attributes"]["source"][NAME] == "cl1"

    # denied at the exporter by a privileged policy naming cl1
    deny_cl1 = [{"matchLabels": {NAME: "cl1"}}]
    cl0.create("policies", pol("deny-cl1", "deny", deny_cl1, privileged=True))
    assert get(port) == "reset"
    imp = direction(explain(fabric["cl1"], "cl0"), "import")
    assert imp["allowed"] is False
    assert check(imp, "cl1", "egress")["allowed"] is True
    ingress = check(imp, "cl0", "ingress")
    assert (ingress["allowed"], ingress["decided_by"]) == (False, "policy")
    assert ingress["decision"]["policy"] == "deny-cl1"
    assert ingress["decision"]["tier"] == "privileged"
    assert ingress["decision"]["selector"] == {"from[0]": deny_cl1[0], "to[0]": {}}
    assert ingress["decision"]["outranked"] == [
        {"policy": "allow-all", "action": "allow", "tier": "regular"}
    ]
    # the refusal log lines name it, on the exporting and on the importing gateway
    for gw, msg in ((fabric["cl0"], "ingress denied"), (fabric["cl1"], "connect refused by peer")):
        line = wait_log(gw, msg, "deny-cl1")
        assert line["tier"] == "privileged", line
        assert line["selector"] == {"from[0]": deny_cl1[0], "to[0]": {}}, line
        assert line["export"] == "http-echo" and line["decision"] == (
            "deny by privileged policy deny-cl1"
        )

    # and denied at the importer by a regular policy naming the export
    to_echo = [{"matchLabels": {EXPORT: "http-echo"}}]
    cl1.create("policies", pol("no-echo", "deny", to=to_echo))
    assert get(port) == "reset"
    imp = direction(explain(fabric["cl1"], "cl0"), "import")
    egress = check(imp, "cl1", "egress")
    assert (egress["allowed"], egress["decision"]["policy"]) == (False, "no-echo")
    assert egress["decision"]["tier"] == "regular"
    line = wait_log(fabric["cl1"], "egress denied", "no-echo")
    assert line["tier"] == "regular" and line["selector"] == {"from[0]": {}, "to[0]": to_echo[0]}

    # run on the exporting side: its ingress, then the importer's egress (asked over the link)
    data = explain(fabric["cl0"], "cl1")
    exp = direction(data, "export")
    assert (exp["importer"], exp["exporter"], exp["allowed"]) == ("cl1", "cl0", False)
    assert check(exp, "cl0", "ingress")["decision"]["policy"] == "deny-cl1"
    remote = check(exp, "cl1", "egress")
    assert remote["answered"] and remote["import"] == "http-echo"
    assert remote["decision"]["policy"] == "no-echo"

    # allowed again once both denies go; the explanation follows at once
    cl0.delete("policies", "deny-cl1")
    cl1.delete("policies", "no-echo")
    assert direction(explain(fabric["cl1"], "cl0"), "import")["allowed"] is True
    assert get(port) == "cl0"

    # allowed_peers decides before any policy
    cl0.replace(
        "exports",
        "http-echo",
        {
            "name": "http-echo",
            "labels": {"env": "test"},
            "spec": {"port": fabric.echo_port("cl0"), "allowed_peers": ["cl9"]},
        },
    )
    assert get(port) == "reset"
    ingress = check(direction(explain(fabric["cl1"], "cl0"), "import"), "cl0", "ingress")
    assert (ingress["allowed"], ingress["decided_by"]) == (False, "allowed_peers")
    assert "allowed_peers" in ingress["result"] and ingress["decision"] is None


def test_explain_outputs_and_client_address(fabric: Fabric) -> None:
    two_sites(fabric)
    cl1 = fabric["cl1"]
    fabric.client("cl1").create(
        "policies", pol("no-far", "deny", [{"clientCIDRs": ["10.0.0.0/8"]}], privileged=True)
    )
    # the table: one row per check, the deciding policy and its selectors
    table = gwctl(cl1, "explain", "--peer", "cl0", "--export", "http-echo")
    assert table.returncode == 0, table.stderr
    assert "IMPORT: cl1 imports http-echo from cl0: ALLOWED" in table.stdout
    assert "GATEWAY" in table.stdout and "allow-all" in table.stdout
    assert "no client address: clientCIDRs do not match" in table.stdout
    # with a client address in 10/8 the privileged deny decides; -o yaml has the JSON's shape
    far = gwctl(cl1, "-o", "yaml", "explain", "--peer", "cl0", "--export", "http-echo",
                "--client-ip", "10.1.2.3")  # fmt: skip
    assert far.returncode == 0, far.stderr
    data = yaml.safe_load(far.stdout)
    assert data["client_ip"] == "10.1.2.3"
    egress = check(direction(data, "import"), "cl1", "egress")
    assert egress["decision"]["policy"] == "no-far" and egress["decision"]["client_ip_known"]
    assert egress["attributes"]["source"]["client.clusterlink.net/ip"] == "10.1.2.3"
    near = explain(cl1, "cl0", "--client-ip", "192.0.2.7")
    assert check(direction(near, "import"), "cl1", "egress")["decision"]["policy"] == "allow-all"
    table = gwctl(cl1, "explain", "--peer", "cl0", "--export", "http-echo", "--client-ip",
                  "10.1.2.3")  # fmt: skip
    assert "no-far" in table.stdout and "privileged" in table.stdout
    assert "REFUSED" in table.stdout


def test_explain_errors_and_a_peer_that_does_not_answer(fabric: Fabric) -> None:
    two_sites(fabric)
    cl1 = fabric["cl1"]
    unknown_peer = gwctl(cl1, "explain", "--peer", "nope", "--export", "http-echo")
    assert unknown_peer.returncode == 1
    assert "404" in unknown_peer.stderr and "peer 'nope' not found" in unknown_peer.stderr
    unknown_export = gwctl(cl1, "explain", "--peer", "cl0", "--export", "nothing")
    assert unknown_export.returncode == 1 and "404" in unknown_export.stderr
    assert "export 'nothing' is not an export here" in unknown_export.stderr
    assert "no export 'nothing' at cl0" in unknown_export.stderr  # the peer was asked
    bad_ip = gwctl(cl1, "explain", "--peer", "cl0", "--export", "http-echo", "--client-ip", "x")
    assert bad_ip.returncode == 1 and "client_ip" in bad_ip.stderr
    bad_name = gwctl(cl1, "explain", "--peer", "Not_A_Name", "--export", "http-echo")
    assert bad_name.returncode == 1 and "peer" in bad_name.stderr and "400" in bad_name.stderr
    missing = gwctl(cl1, "explain", "--export", "http-echo")
    assert missing.returncode == 2 and "--peer" in missing.stderr

    # the exporter stops: our own decision is still explained, theirs is "not answered"
    fabric["cl0"].stop()
    started = time.monotonic()
    data = explain(cl1, "cl0")
    took = time.monotonic() - started
    imp = direction(data, "import")
    assert imp["allowed"] is None
    assert check(imp, "cl1", "egress")["decision"]["policy"] == "allow-all"
    remote = check(imp, "cl0", "ingress")
    assert remote["answered"] is False and remote["allowed"] is None
    assert remote["result"].startswith("not answered: peer unreachable"), remote
    table = gwctl(cl1, "explain", "--peer", "cl0", "--export", "http-echo")
    assert "UNKNOWN (an end did not answer)" in table.stdout and "not answered" in table.stdout
    print(f"explain with the peer down answered in {took:.2f} s")


@pytest.mark.asyncio
async def test_a_peer_asks_only_about_itself(fabric: Fabric) -> None:
    """The peer request names no peer: the answer is about the certificate's name, and a
    request that states an identity is refused."""
    two_sites(fabric)
    fabric.add_peer("cl0", "cl2", mutual=False)  # cl0 knows another peer, denied elsewhere
    deny_cl2 = [{"matchLabels": {NAME: "cl2"}}]
    fabric.client("cl0").create("policies", pol("deny-cl2", "deny", deny_cl2, privileged=True))
    endpoint = fabric.endpoint("cl0")
    pool = PeerPool(
        "cl0", [(endpoint["host"], endpoint["port"])], tls_for(fabric.ca, "cl1"), links=1
    )
    try:
        asked = {"x-clusterlink-export": "http-echo", "x-clusterlink-client-ip": "192.0.2.1"}
        resp = await pool.request("GET", "/v1/explain", headers=asked, timeout=10)
        assert resp.status == 200, resp.body
        body = json.loads(resp.body)
        assert body["gateway"] == "cl0"
        ingress = body["ingress"]
        assert ingress["attributes"]["source"][NAME] == "cl1"
        assert (ingress["allowed"], ingress["decision"]["policy"]) == (True, "allow-all")
        assert ingress["client_ip"] == "192.0.2.1"  # a fabric peer's asserted address is used
        (egress,) = body["egress"]  # cl0 imports nothing from cl1: as for an import
        assert egress["import"] is None and "no import takes" in egress["note"]
        spoofed = {**asked, "x-clusterlink-peer-name": "cl2"}
        resp = await pool.request("GET", "/v1/explain", headers=spoofed, timeout=10)
        assert resp.status == 403 and b"certificate" in resp.body
        resp = await pool.request("GET", "/v1/explain", timeout=10)
        assert resp.status == 400 and b"x-clusterlink-export" in resp.body
    finally:
        await pool.close()
