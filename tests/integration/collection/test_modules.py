# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The admin-API resource modules and gateway_info against a real gateway daemon.

For every module: check mode (changed, nothing created), real (created), check again and real
again (not changed); an update in check mode and for real (changed, with a before/after diff),
again (not changed); state=absent in check mode, real (deleted) and again (not changed).
That check mode writes nothing is checked with ``gwctl`` (after the check-mode create: not
found) and by the real steps that follow (the real update and delete still find the object
unchanged, in their diff's ``before``); the daemon's own client checks the end state. Then bad
input, a gateway that is down, gateway_info, and the admin TCP listener.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clusterlink_gateway import __version__
from support.gateway import GatewayProcess, free_port, stored
from support.pki import Issued, TestCA

from .conftest import BIN, Ansible, Run


@dataclass
class Scenario:
    module: str  # clusterlink.fabric.<module>
    result_key: str
    plural: str  # API kind (URL segment)
    singular: str  # gwctl kind
    name: str
    create: dict[str, Any]  # module options
    created: dict[str, Any]  # expected stored labels+spec
    update: dict[str, Any]
    updated: dict[str, Any]
    update_field: tuple[str, Any, Any] = field(default=("", None, None))  # spec key, before, after


UPDATED_IMPORT_PORT = free_port()

SCENARIOS = [
    Scenario(
        "peer",
        "peer",
        "peers",
        "peer",
        "west",
        create={"gateways": [{"host": "127.0.0.1", "port": 4443}]},
        created={
            "labels": {},
            "spec": {"dial": True, "gateways": [{"host": "127.0.0.1", "port": 4443}]},
        },
        update={
            "labels": {"env": "prod", "tier": 1},
            "gateways": [{"host": "127.0.0.1", "port": 4443}, {"host": "gw2.west.example"}],
            "client_attributes": "ignore",
        },
        updated={
            "labels": {"env": "prod", "tier": "1"},
            "spec": {
                "dial": True,
                "gateways": [
                    {"host": "127.0.0.1", "port": 4443},
                    {"host": "gw2.west.example", "port": 443},
                ],
                "client_attributes": "ignore",
            },
        },
        update_field=(
            "gateways",
            [{"host": "127.0.0.1", "port": 4443}],
            [{"host": "127.0.0.1", "port": 4443}, {"host": "gw2.west.example", "port": 443}],
        ),
    ),
    Scenario(  # an outbound-only site: dial false and no endpoints, then turned into a dialed one
        "peer",
        "peer",
        "peers",
        "peer",
        "edge",
        create={"dial": False},
        created={"labels": {}, "spec": {"dial": False, "gateways": []}},
        update={"dial": True, "gateways": [{"host": "edge.example", "port": 8443}]},
        updated={
            "labels": {},
            "spec": {"dial": True, "gateways": [{"host": "edge.example", "port": 8443}]},
        },
        update_field=("dial", False, True),
    ),
    Scenario(
        "exported_service",
        "exported_service",
        "exports",
        "export",
        "web",
        create={"port": 8080},
        created={"labels": {}, "spec": {"host": "127.0.0.1", "port": 8080, "allowed_peers": []}},
        update={"port": 8081, "allowed_peers": ["west"], "labels": {"public": True}},
        updated={
            "labels": {"public": "true"},
            "spec": {"host": "127.0.0.1", "port": 8081, "allowed_peers": ["west"]},
        },
        update_field=("port", 8080, 8081),
    ),
    Scenario(
        "imported_service",
        "imported_service",
        "imports",
        "import",
        "db",
        create={"sources": [{"peer": "west"}]},
        created={
            "labels": {},
            "spec": {
                "port": 0,
                "bind": None,
                "sources": [{"peer": "west", "export": None}],
                "lb_scheme": "round-robin",
            },
        },
        update={
            "port": UPDATED_IMPORT_PORT,
            "bind": "127.0.0.1",
            "lb_scheme": "static",
            "sources": [{"peer": "west"}, {"peer": "east", "export": "db-replica"}],
        },
        updated={
            "labels": {},
            "spec": {
                "port": UPDATED_IMPORT_PORT,
                "bind": "127.0.0.1",
                "sources": [
                    {"peer": "west", "export": None},
                    {"peer": "east", "export": "db-replica"},
                ],
                "lb_scheme": "static",
            },
        },
        update_field=("lb_scheme", "round-robin", "static"),
    ),
    Scenario(
        "access_policy",
        "access_policy",
        "policies",
        "policy",
        "allow-west",
        create={"action": "allow"},
        created={
            "labels": {},
            "spec": {
                "action": "allow",
                "privileged": False,
                "from": [{"matchLabels": {}, "matchExpressions": [], "clientCIDRs": []}],
                "to": [{"matchLabels": {}, "matchExpressions": []}],
            },
        },
        update={
            "action": "allow",
            "privileged": True,
            "from": [
                {
                    "matchExpressions": [
                        {"key": "peer.clusterlink.net/name", "operator": "In", "values": ["west"]},
                        {"key": "peer.clusterlink.net/labels.test", "operator": "DoesNotExist"},
                    ],
                    "clientCIDRs": ["10.0.0.0/8"],
                }
            ],
            "to": [{"matchLabels": {"export.clusterlink.net/name": "db"}}],
        },
        updated={
            "labels": {},
            "spec": {
                "action": "allow",
                "privileged": True,
                "from": [
                    {
                        "matchLabels": {},
                        "matchExpressions": [
                            {
                                "key": "peer.clusterlink.net/name",
                                "operator": "In",
                                "values": ["west"],
                            },
                            {
                                "key": "peer.clusterlink.net/labels.test",
                                "operator": "DoesNotExist",
                                "values": [],
                            },
                        ],
                        "clientCIDRs": ["10.0.0.0/8"],
                    }
                ],
                "to": [
                    {"matchLabels": {"export.clusterlink.net/name": "db"}, "matchExpressions": []}
                ],
            },
        },
        update_field=("privileged", False, True),
    ),
]


@dataclass
class AdminPKI:
    """A separate admin CA (never the fabric CA), the listener's and an operator's certs."""

    ca: TestCA
    server: Issued
    operator: Issued
    port: int


@pytest.fixture(scope="module")
def admin_pki(tmp_path_factory: pytest.TempPathFactory) -> AdminPKI:
    admin_ca = TestCA(tmp_path_factory.mktemp("admin-pki"), name="admin-ca")
    return AdminPKI(
        admin_ca,
        admin_ca.issue("localhost", dns=["localhost"]),
        admin_ca.issue("operator"),
        free_port(),
    )


@pytest.fixture(scope="module")
def gateway(start_gateway: Any, admin_pki: AdminPKI) -> GatewayProcess:
    """The gateway of this module: admin socket, and the admin TCP listener."""
    tcp = {
        "address": "127.0.0.1",
        "port": admin_pki.port,
        "cert": str(admin_pki.server.cert),
        "key": str(admin_pki.server.key),
        "client_ca": str(admin_pki.ca.ca_path),
    }
    return start_gateway("site-a", extra={"admin": {"tcp": tcp}})


def defaults(gw: GatewayProcess) -> dict[str, Any]:
    return {"group/clusterlink.fabric.gateway": {"socket": str(gw.socket)}}


def gwctl_get(gw: GatewayProcess, singular: str, name: str, task: str) -> dict[str, Any]:
    """A task that asks gwctl (not the module under test) for the object."""
    return {
        "name": task,
        "ansible.builtin.command": {
            "argv": [
                str(BIN / "gwctl"),
                "--socket",
                str(gw.socket),
                "-o",
                "json",
                "get",
                singular,
                name,
            ]
        },
        "failed_when": False,
        "changed_when": False,
    }


def lifecycle_play(s: Scenario, gw: GatewayProcess) -> dict[str, Any]:
    """One play: the whole life of one object, every task named '<module>: <step>'."""
    module = f"clusterlink.fabric.{s.module}"
    create = {"name": s.name, **s.create}
    update = {"name": s.name, **s.update}
    absent = {"name": s.name, "state": "absent"}

    def task(step: str, args: dict[str, Any], check: bool, diff: bool = True) -> dict[str, Any]:
        return {
            "name": f"{s.module} {s.name}: {step}",
            module: args,
            "check_mode": check,
            "diff": diff,
        }

    return {
        "name": s.module,
        "hosts": "localhost",
        "gather_facts": False,
        "module_defaults": defaults(gw),
        "tasks": [
            task("create (check)", create, True),
            gwctl_get(gw, s.singular, s.name, f"{s.module} {s.name}: gwctl after create (check)"),
            task("create", create, False),
            task("create again (check)", create, True),
            task("create again", create, False, diff=False),
            task("update (check)", update, True),
            task("update", update, False),
            task("update again", update, False),
            task("delete (check)", absent, True),
            task("delete", absent, False),
            task("delete again", absent, False),
        ],
    }


def managed(obj: dict[str, Any]) -> dict[str, Any]:
    return {"labels": obj["labels"], "spec": obj["spec"]}


@pytest.fixture(scope="module")
def lifecycle(gateway: GatewayProcess, collections_root: Path, tmp_path_factory) -> Run:
    """One ansible-playbook run with the lifecycle play of every scenario (saves start-ups)."""
    ansible = Ansible(tmp_path_factory.mktemp("lifecycle"), collections_root)
    run = ansible.play([lifecycle_play(s, gateway) for s in SCENARIOS])
    assert run.returncode == 0, run.output[-4000:]
    return run


@pytest.mark.parametrize("s", SCENARIOS, ids=[f"{s.module}-{s.name}" for s in SCENARIOS])
def test_lifecycle(s: Scenario, lifecycle: Run, gateway: GatewayProcess) -> None:
    def r(step: str) -> dict[str, Any]:
        return lifecycle.result(f"{s.module} {s.name}: {step}")

    full = {"name": s.name, **s.created}
    full_updated = {"name": s.name, **s.updated}

    # Check mode predicts the creation and creates nothing (gwctl: not found).
    check = r("create (check)")
    assert (check["changed"], check["operation"]) == (True, "create")
    assert managed(check[s.result_key]) == s.created
    assert check["diff"] == {"before": {}, "after": full}
    assert r("gwctl after create (check)")["rc"] != 0
    assert "not found" in r("gwctl after create (check)")["stderr"]

    # Real: created, and returned as the API stored it (with its status).
    created = r("create")
    assert (created["changed"], created["operation"]) == (True, "create")
    assert managed(created[s.result_key]) == s.created
    assert created[s.result_key]["kind"]
    assert "status" in created[s.result_key]
    assert created["diff"] == {"before": {}, "after": full}

    # Re-runs, in check mode or not, change nothing.
    for step in ("create again (check)", "create again"):
        again = r(step)
        assert (again["changed"], again["operation"]) == (False, "none"), step
        assert managed(again[s.result_key]) == s.created
    assert "diff" not in r("create again")  # a diff only in diff mode

    # Update: check mode predicts it; the real run then still finds the created object.
    check = r("update (check)")
    assert (check["changed"], check["operation"]) == (True, "update")
    assert managed(check[s.result_key]) == s.updated
    key, before, after = s.update_field
    assert check["diff"]["before"]["spec"][key] == before
    assert check["diff"]["after"]["spec"][key] == after
    updated = r("update")
    assert (updated["changed"], updated["operation"]) == (True, "update")
    assert updated["diff"] == {"before": full, "after": full_updated}
    assert managed(updated[s.result_key]) == s.updated
    assert not updated.get("warnings"), updated.get("warnings")
    again = r("update again")
    assert (again["changed"], again["operation"]) == (False, "none")
    assert again["diff"]["before"] == again["diff"]["after"] == full_updated

    # Delete: check mode deletes nothing (the real delete still finds it); then gone.
    check = r("delete (check)")
    assert (check["changed"], check["operation"]) == (True, "delete")
    assert check["diff"] == {"before": full_updated, "after": {}}
    deleted = r("delete")
    assert (deleted["changed"], deleted["operation"]) == (True, "delete")
    assert deleted["diff"] == {"before": full_updated, "after": {}}
    assert s.result_key not in deleted
    again = r("delete again")
    assert (again["changed"], again["operation"]) == (False, "none")
    assert all(o["name"] != s.name for o in gateway.client.list(s.plural))


# A task that must fail: (module, options, text the failure message must contain).
BAD_INPUT = [
    ("exported_service", {"name": "bad-port", "port": 70000}, "spec.port"),
    ("exported_service", {"name": "Bad_Name", "port": 80}, "name"),
    ("exported_service", {"name": "no-port"}, "port"),
    ("exported_service", {"name": "keep", "port": 70000}, "spec.port"),  # update of 'keep'
    (
        "peer",
        {"name": "bad-gw", "gateways": [{"host": "127.0.0.1", "port": 0}]},
        "spec.gateways[0].port",
    ),
    (
        "peer",
        {"name": "bad-host", "gateways": [{"host": "no such host!"}]},
        "spec.gateways[0].host",
    ),
    (
        "peer",
        {"name": "bad-ca", "gateways": [{"host": "h"}], "client_attributes": "trust"},
        "client_attributes",  # not one of honor, ignore: refused by the module
    ),
    ("peer", {"name": "no-gw"}, "gateways"),  # dial true (the default) needs endpoints
    ("peer", {"name": "dial-no-gw", "dial": True, "gateways": []}, "gateways"),
    ("peer", {"name": "bad-dial", "dial": "sometimes", "gateways": [{"host": "h"}]}, "dial"),
    (
        "imported_service",
        {"name": "bad-lb", "sources": [{"peer": "west"}], "lb_scheme": "least-conn"},
        "lb_scheme",
    ),
    (
        "imported_service",
        {"name": "bad-bind", "sources": [{"peer": "west"}], "bind": "not-an-ip"},
        "spec.bind",
    ),
    (
        "access_policy",
        {
            "name": "bad-in",
            "action": "allow",
            "from": [
                {"matchExpressions": [{"key": "peer.clusterlink.net/name", "operator": "In"}]},
            ],
        },
        "spec.from[0].matchExpressions[0].values",
    ),
    (
        "access_policy",
        {
            "name": "bad-op",
            "action": "allow",
            "from": [
                {"matchExpressions": [{"key": "peer.clusterlink.net/name", "operator": "Is"}]},
            ],
        },
        "operator",
    ),
    (
        "access_policy",
        {
            "name": "bad-from",
            "action": "deny",
            "from": [{"matchLabels": {"bad key": "x"}, "clientCIDRs": ["10.0.0.0/33"]}],
        },
        "spec.from[0].clientCIDRs[0]",  # the API names every bad field, the first in "field"
    ),
    (
        "access_policy",
        {
            "name": "bad-to",
            "action": "allow",
            "to": [
                {"matchLabels": {"bad key": "x"}, "clientCIDRs": ["10.0.0.0/33"]},
            ],
        },
        "clientCIDRs",  # not a field of a 'to' selector: refused by the module
    ),
]


def snapshot(gw: GatewayProcess) -> dict[str, list[dict[str, Any]]]:
    return {
        plural: stored(gw.client, plural) for plural in ("peers", "exports", "imports", "policies")
    }


def test_bad_input_fails_and_changes_nothing(gateway: GatewayProcess, ansible: Ansible) -> None:
    gateway.client.create("exports", {"name": "keep", "spec": {"port": 9000}})
    before = snapshot(gateway)
    tasks = [
        {"name": f"bad {i}", f"clusterlink.fabric.{module}": args, "ignore_errors": True}
        for i, (module, args, _field) in enumerate(BAD_INPUT)
    ]
    run = ansible.play(
        [
            {
                "hosts": "localhost",
                "gather_facts": False,
                "module_defaults": defaults(gateway),
                "tasks": tasks,
            }
        ]
    )
    for i, (module, args, field_name) in enumerate(BAD_INPUT):
        result = run.result(f"bad {i}")
        assert result.get("failed"), (module, args, result)
        assert not result.get("changed"), (module, args, result)
        assert field_name in result["msg"], (module, args, result["msg"])
        if field_name.startswith("spec.") or field_name == "name":  # refused by the API
            assert result["status"] == 422, result
            assert result["field"] in result["msg"], result
            assert {d["field"] for d in result["details"]} >= {result["field"]}, result
    assert snapshot(gateway) == before
    gateway.client.delete("exports", "keep")


def test_gateway_down(
    gateway: GatewayProcess, start_gateway: Any, ansible: Ansible, tmp_path: Path
) -> None:
    """No socket, or a socket left behind by a killed daemon: a clear failure."""
    dead = start_gateway("site-dead")
    dead.kill9()
    assert dead.socket.exists()  # a kill -9 leaves the socket file behind
    missing = tmp_path / "missing" / "admin.sock"
    tasks = [
        {
            "name": "missing socket",
            "clusterlink.fabric.exported_service": {
                "name": "web",
                "port": 80,
                "socket": str(missing),
            },
            "ignore_errors": True,
        },
        {
            "name": "dead daemon",
            "clusterlink.fabric.peer": {
                "name": "west",
                "gateways": [{"host": "127.0.0.1"}],
                "socket": str(dead.socket),
            },
            "ignore_errors": True,
        },
        {
            "name": "dead daemon, info",
            "clusterlink.fabric.gateway_info": {"socket": str(dead.socket)},
            "ignore_errors": True,
            "check_mode": True,
        },
    ]
    run = ansible.play(tasks)
    result = run.result("missing socket")
    assert result["failed"] and not result["changed"]
    assert result["msg"] == (
        f"cannot reach the gateway admin API at {missing}: "
        "No such file or directory (is the clusterlink-gateway service "
        "running?)"
    )
    for name in ("dead daemon", "dead daemon, info"):
        result = run.result(name)
        assert result["failed"] and not result.get("changed")
        assert result["msg"].startswith(f"cannot reach the gateway admin API at {dead.socket}: ")
        assert "Connection refused" in result["msg"]


def test_gateway_info(gateway: GatewayProcess, ansible: Ansible) -> None:
    client = gateway.client
    client.create(
        "peers",
        {
            "name": "info-peer",
            "labels": {"env": "lab"},
            "spec": {"gateways": [{"host": "127.0.0.1", "port": 1}]},
        },
    )
    client.create("exports", {"name": "info-export", "spec": {"port": 9001}})
    client.create("imports", {"name": "info-import", "spec": {"sources": [{"peer": "info-peer"}]}})
    client.create(
        "policies", {"name": "info-policy", "spec": {"action": "allow", "from": [{}], "to": [{}]}}
    )
    try:
        run = ansible.play(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "module_defaults": defaults(gateway),
                    "tasks": [
                        {"name": "all", "clusterlink.fabric.gateway_info": {}, "check_mode": True},
                        {
                            "name": "imports",
                            "clusterlink.fabric.gateway_info": {"kinds": ["imports"]},
                        },
                    ],
                }
            ]
        )
        assert run.returncode == 0, run.output[-3000:]
        info = run.result("all")
        assert info["changed"] is False
        assert info["version"] == __version__ and info["api_version"] == "v1"
        assert info["peer_name"] == "site-a" and info["ready"] is True
        assert info["status"]["peer_name"] == "site-a"
        names = {kind: [o["name"] for o in objs] for kind, objs in info["objects"].items()}
        assert "info-peer" in names["peers"] and "info-export" in names["exports"]
        assert "info-import" in names["imports"] and "info-policy" in names["policies"]
        assert {o["name"]: o for o in info["objects"]["imports"]}["info-import"] == client.get(
            "imports", "info-import"
        )
        imports = run.result("imports")
        assert set(imports["objects"]) == {"imports"}
        port = {o["name"]: o for o in imports["objects"]["imports"]}["info-import"]["status"][
            "port"
        ]
        assert (
            port
            and {i["name"]: i["port"] for i in info["status"]["imports"]}["info-import"] == port
        )
    finally:
        for plural, name in (
            ("policies", "info-policy"),
            ("imports", "info-import"),
            ("exports", "info-export"),
            ("peers", "info-peer"),
        ):
            client.delete(plural, name)


def test_admin_tcp_listener(
    gateway: GatewayProcess, admin_pki: AdminPKI, ca: TestCA, ansible: Ansible
) -> None:
    """url + client certificate from the admin CA; a fabric certificate is refused."""
    url = f"https://localhost:{admin_pki.port}"
    tcp = {
        "url": url,
        "client_cert": str(admin_pki.operator.cert),
        "client_key": str(admin_pki.operator.key),
        "ca_path": str(admin_pki.ca.ca_path),
    }
    fabric = ca.issue("site-z")  # a peer's certificate must not manage a gateway
    export = {"name": "over-tcp", "port": 7000}
    run = ansible.play(
        [
            {"name": "create", "clusterlink.fabric.exported_service": {**export, **tcp}},
            {"name": "again", "clusterlink.fabric.exported_service": {**export, **tcp}},
            {"name": "info", "clusterlink.fabric.gateway_info": {"kinds": ["exports"], **tcp}},
            {
                "name": "delete",
                "clusterlink.fabric.exported_service": {
                    "name": "over-tcp",
                    "state": "absent",
                    **tcp,
                },
            },
            {
                "name": "fabric cert",
                "clusterlink.fabric.gateway_info": {
                    **tcp,
                    "client_cert": str(fabric.cert),
                    "client_key": str(fabric.key),
                },
                "ignore_errors": True,
            },
        ]
    )
    assert (run.result("create")["changed"], run.result("create")["operation"]) == (True, "create")
    assert run.result("again")["changed"] is False
    assert "over-tcp" in [o["name"] for o in run.result("info")["objects"]["exports"]]
    assert run.result("delete")["changed"] is True
    refused = run.result("fabric cert")
    assert refused["failed"]
    assert refused["msg"].startswith(f"cannot reach the gateway admin API at {url}: ")
    assert "admin CA" in refused["msg"]
    assert "over-tcp" not in [o["name"] for o in gateway.client.list("exports")]
