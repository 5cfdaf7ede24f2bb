"""Upstream TestConnectivity and the data-plane steps of TestControlplaneCRUD (clusterlink.md
9.2 scenarios 1 and 2), with real gateway processes on loopback."""

from __future__ import annotations

from support.fabric import ALLOW_ALL, Fabric
from support.gateway import free_port
from support.traffic import eventually, get


def test_connectivity(fabric: Fabric) -> None:
    fabric.export_echo("cl0")
    fabric.allow_all("cl0")
    fabric.add_peer("cl1", "cl0")
    fabric.client("cl1").create(
        "imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}}
    )
    fabric.allow_all("cl1")
    port = fabric.import_port("cl1", "http-echo")
    assert eventually(lambda: get(port), "cl0") == "cl0"
    for _ in range(20):
        assert get(port) == "cl0"
    status = fabric.client("cl1").get("peers", "cl0")["status"]
    assert (
        eventually(
            lambda: str(fabric.client("cl1").get("peers", "cl0")["status"]["reachable"]), "True"
        )
        == "True"
    ), status


def test_controlplane_crud_data_plane(fabric: Fabric) -> None:
    """TestControlplaneCRUD steps 2-18: what a client sees after each change."""
    cl0, cl1 = fabric.client("cl0"), fabric.client("cl1")
    fabric["cl2"]
    port = free_port()
    imp = {"name": "http-echo", "spec": {"port": port, "sources": [{"peer": "cl1"}]}}
    cl0.create("imports", imp)
    # 2. the listener is up, but nothing can serve it: reset
    assert get(port) == "reset"
    # 4. peer cl1, still no policy: reset
    fabric.add_peer("cl0", "cl1")
    fabric.add_peer("cl0", "cl2")
    assert get(port) == "reset"
    # 6. allow-all on cl0, nothing exported at cl1: reset
    cl0.create("policies", ALLOW_ALL)
    assert get(port) == "reset"
    # 7. export at cl1, but cl1 has no policy (ingress default deny): reset
    fabric.export_echo("cl1")
    assert get(port) == "reset"
    # 8. allow-all on cl1: works
    cl1.create("policies", ALLOW_ALL)
    assert get(port) == "cl1"
    # 9. a second source cl2 (no export there) with static: still cl1
    imp["spec"]["sources"].append({"peer": "cl2"})
    imp["spec"]["lb_scheme"] = "static"
    cl0.replace("imports", "http-echo", imp)
    assert [get(port) for _ in range(5)] == ["cl1"] * 5
    # 10. move the import's port: old refused, new works
    new_port = free_port()
    imp["spec"]["port"] = new_port
    cl0.replace("imports", "http-echo", imp)
    assert get(port) == "refused"
    assert get(new_port) == "cl1"
    port = new_port
    # 11. peer cl1's gateway port +1: reset; revert: works
    good = fabric.endpoint("cl1")
    cl0.replace(
        "peers", "cl1", {"name": "cl1", "spec": {"gateways": [{**good, "port": free_port()}]}}
    )
    assert get(port) == "reset"
    cl0.replace("peers", "cl1", {"name": "cl1", "spec": {"gateways": [good]}})
    assert eventually(lambda: get(port), "cl1") == "cl1"
    # 12. cl0's policy to deny: reset; back to allow: works at once
    cl0.replace(
        "policies", "allow-all", {**ALLOW_ALL, "spec": {**ALLOW_ALL["spec"], "action": "deny"}}
    )
    assert get(port) == "reset"
    cl0.replace("policies", "allow-all", ALLOW_ALL)
    assert get(port) == "cl1"
    # 13. cl1's export port +1: reset (502 at cl1); revert: works
    echo_port = fabric.echo["cl1"].port
    export = {"name": "http-echo", "spec": {"port": free_port()}}
    cl1.replace("exports", "http-echo", export)
    assert get(port) == "reset"
    cl1.replace("exports", "http-echo", {"name": "http-echo", "spec": {"port": echo_port}})
    assert get(port) == "cl1"
    # 14. delete the import: refused; re-create: works
    cl0.delete("imports", "http-echo")
    assert get(port) == "refused"
    cl0.create("imports", imp)
    assert get(port) == "cl1"
    # 15. delete peer cl1: reset; re-create: works
    cl0.delete("peers", "cl1")
    assert get(port) == "reset"
    fabric.add_peer("cl0", "cl1")
    assert eventually(lambda: get(port), "cl1") == "cl1"
    # 16. delete cl0's policy: reset; re-create: works
    cl0.delete("policies", "allow-all")
    assert get(port) == "reset"
    cl0.create("policies", ALLOW_ALL)
    assert get(port) == "cl1"
    # 17. delete cl1's export: reset; re-create: works
    cl1.delete("exports", "http-echo")
    assert get(port) == "reset"
    cl1.create("exports", {"name": "http-echo", "spec": {"port": echo_port}})
    assert get(port) == "cl1"
    # 18. restart both gateways: state reloaded, traffic flows again
    for name in ("cl0", "cl1"):
        fabric[name].stop()
        fabric[name].start()
    assert eventually(lambda: get(port), "cl1") == "cl1"
