"""Upstream ``TestControlplaneCRUD`` (clusterlink.md 9.2 scenario 2), object operations.

Three gateways cl0, cl1, cl2. The data-plane checks of that scenario belong to the data-plane
tests; here every REST step and the restart of step 18 are checked against real daemons.
"""

from __future__ import annotations

import pytest

from clusterlink_gateway.client import APIError
from support.gateway import GatewayProcess


def expect_error(status: int, fn, *args) -> None:
    with pytest.raises(APIError) as info:
        fn(*args)
    assert info.value.status == status, info.value


def spec_of(obj: dict) -> dict:
    return {k: obj[k] for k in ("name", "labels", "spec")}


def test_controlplane_crud(gateways: dict[str, GatewayProcess]) -> None:
    cl0, cl1, cl2 = gateways["cl0"].client, gateways["cl1"].client, gateways["cl2"].client
    peer_cl1 = {"name": "cl1", "spec": {"gateways": [{"host": "127.0.0.1", "port": 4431}]}}
    peer_cl2 = {"name": "cl2", "spec": {"gateways": [{"host": "127.0.0.1", "port": 4432}]}}
    imp = {
        "name": "http-echo",
        "spec": {"port": 1234, "sources": [{"peer": "cl1", "export": "http-echo"}]},
    }
    allow_all = {"name": "allow-all", "spec": {"action": "allow", "from": [{}], "to": [{}]}}
    export = {"name": "http-echo", "spec": {"host": "127.0.0.1", "port": 8080}}

    # 1. imports: empty list; missing get/delete/update fail; create; duplicate fails
    assert cl0.list("imports") == []
    expect_error(404, cl0.get, "imports", "http-echo")
    expect_error(404, cl0.delete, "imports", "http-echo")
    expect_error(404, cl0.replace, "imports", "http-echo", imp)
    cl0.create("imports", imp)
    expect_error(409, cl0.create, "imports", imp)
    # 3. get equals what was sent; the effective port is set; list has exactly it
    got = cl0.get("imports", "http-echo")
    assert got["spec"]["port"] == 1234 and got["spec"]["sources"][0]["peer"] == "cl1"
    assert got["status"]["port"] == 1234
    assert [o["name"] for o in cl0.list("imports")] == ["http-echo"]
    # 4. peers
    assert cl0.list("peers") == []
    expect_error(404, cl0.get, "peers", "cl1")
    expect_error(404, cl0.delete, "peers", "cl1")
    expect_error(404, cl0.replace, "peers", "cl1", peer_cl1)
    cl0.create("peers", peer_cl1)
    expect_error(409, cl0.create, "peers", peer_cl1)
    assert cl0.get("peers", "cl1")["spec"] == {"dial": True, **peer_cl1["spec"]}
    # 5. a second peer for load balancing later
    cl0.create("peers", peer_cl2)
    assert [p["name"] for p in cl0.list("peers")] == ["cl1", "cl2"]
    # 6. policies on cl0
    assert cl0.list("policies") == []
    expect_error(404, cl0.get, "policies", "allow-all")
    expect_error(404, cl0.delete, "policies", "allow-all")
    expect_error(404, cl0.replace, "policies", "allow-all", allow_all)
    cl0.create("policies", allow_all)
    expect_error(409, cl0.create, "policies", allow_all)
    assert cl0.get("policies", "allow-all")["spec"]["action"] == "allow"
    assert [p["name"] for p in cl0.list("policies")] == ["allow-all"]
    # 7. exports on cl1
    assert cl1.list("exports") == []
    expect_error(404, cl1.get, "exports", "http-echo")
    expect_error(404, cl1.delete, "exports", "http-echo")
    expect_error(404, cl1.replace, "exports", "http-echo", export)
    cl1.create("exports", export)
    expect_error(409, cl1.create, "exports", export)
    assert cl1.get("exports", "http-echo")["spec"]["port"] == 8080
    # 8. allow-all on cl1
    cl1.create("policies", allow_all)
    # 9. add a source from cl2 and the static scheme
    imp2 = {
        "name": "http-echo",
        "spec": {
            "port": 1234,
            "lb_scheme": "static",
            "sources": [
                {"peer": "cl1", "export": "http-echo"},
                {"peer": "cl2", "export": "http-echo"},
            ],
        },
    }
    assert cl0.replace("imports", "http-echo", imp2)["spec"]["lb_scheme"] == "static"
    # 10. import port 1234 -> 1235
    imp2["spec"]["port"] = 1235
    assert cl0.replace("imports", "http-echo", imp2)["status"]["listen"].endswith(":1235")
    # 11. peer gateway port +1, then back
    moved = {"name": "cl1", "spec": {"gateways": [{"host": "127.0.0.1", "port": 4432}]}}
    assert cl0.replace("peers", "cl1", moved)["spec"]["gateways"][0]["port"] == 4432
    cl0.replace("peers", "cl1", peer_cl1)
    # 12. policy to deny, then back
    deny = {**allow_all, "spec": {**allow_all["spec"], "action": "deny"}}
    assert cl0.replace("policies", "allow-all", deny)["spec"]["action"] == "deny"
    cl0.replace("policies", "allow-all", allow_all)
    # 13. export port +1, then back
    assert (
        cl1.replace("exports", "http-echo", {**export, "spec": {"port": 8081}})["spec"]["port"]
        == 8081
    )
    cl1.replace("exports", "http-echo", export)
    # 14.-17. delete and re-create each kind
    for client, plural, obj in (
        (cl0, "imports", imp2),
        (cl0, "peers", peer_cl1),
        (cl0, "policies", allow_all),
        (cl1, "exports", export),
    ):
        client.delete(plural, obj["name"])
        expect_error(404, client.get, plural, obj["name"])
        client.create(plural, obj)
    before0 = {p: [spec_of(o) for o in cl0.list(p)] for p in ("imports", "peers", "policies")}
    before_status = cl0.get("imports", "http-echo")["status"]
    # 18. restart both gateways: everything is back, import port included
    for name in ("cl0", "cl1"):
        gateways[name].stop()
        gateways[name].start()
    after0 = {p: [spec_of(o) for o in cl0.list(p)] for p in ("imports", "peers", "policies")}
    assert after0 == before0
    assert len(after0["peers"]) == 2 and [p["name"] for p in after0["policies"]] == ["allow-all"]
    assert cl0.get("imports", "http-echo")["status"]["port"] == before_status["port"]
    assert [e["name"] for e in cl1.list("exports")] == ["http-echo"]
    assert cl2.list("exports") == []
