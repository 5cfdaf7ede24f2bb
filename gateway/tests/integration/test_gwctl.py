"""gwctl against a running gateway: every command, every output format, errors exit non-zero."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from support.gateway import BIN, GatewayProcess


def gwctl(
    gw: GatewayProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "gwctl"), "--socket", str(gw.socket), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=30,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_create_get_update_delete_each_kind(gateway: GatewayProcess) -> None:
    ok(
        gwctl(
            gateway,
            "create",
            "peer",
            "cl1",
            "--gateway",
            "10.0.0.1:443",
            "--gateway",
            "10.0.0.2:8443",
            "--label",
            "env=prod",
        )
    )
    ok(gwctl(gateway, "create", "export", "db", "--port", "5432", "--allowed-peer", "cl1"))
    ok(
        gwctl(
            gateway,
            "create",
            "import",
            "db",
            "--source",
            "cl1",
            "--source",
            "cl2/pg",
            "--lb-scheme",
            "static",
        )
    )
    ok(
        gwctl(
            gateway,
            "create",
            "policy",
            "deny-ext",
            "--action",
            "deny",
            "--privileged",
            "--from",
            "{clientCIDRs: [10.0.0.0/8]}",
        )
    )
    peer = json.loads(ok(gwctl(gateway, "-o", "json", "get", "peer", "cl1")))
    assert peer["spec"]["gateways"] == [
        {"host": "10.0.0.1", "port": 443},
        {"host": "10.0.0.2", "port": 8443},
    ]
    assert peer["labels"] == {"env": "prod"}
    assert "client_attributes" not in peer["spec"]  # unset: the default
    table = ok(gwctl(gateway, "get", "peers")).splitlines()
    assert "CLIENT ATTRS" in table[0] and "default" in table[1]
    ok(gwctl(gateway, "create", "peer", "edge", "--dial", "false"))
    edge = json.loads(ok(gwctl(gateway, "-o", "json", "get", "peer", "edge")))
    assert edge["spec"]["dial"] is False and edge["spec"]["gateways"] == []
    assert "outbound-only" in ok(gwctl(gateway, "get", "peers"))
    refused = gwctl(gateway, "create", "peer", "edge2", "--dial", "true")
    assert refused.returncode != 0 and "spec.gateways" in refused.stderr
    ok(gwctl(gateway, "delete", "peer", "edge"))
    ok(gwctl(gateway, "update", "peer", "cl1", "--client-attributes", "ignore"))
    peer = json.loads(ok(gwctl(gateway, "-o", "json", "get", "peer", "cl1")))
    assert peer["spec"]["client_attributes"] == "ignore"
    assert len(peer["spec"]["gateways"]) == 2  # the other fields are kept
    assert "ignore" in ok(gwctl(gateway, "get", "peers")).splitlines()[1]
    ok(gwctl(gateway, "update", "peer", "cl1", "--client-attributes", "default"))
    assert (
        "client_attributes"
        not in json.loads(ok(gwctl(gateway, "-o", "json", "get", "peer", "cl1")))["spec"]
    )
    imp = yaml.safe_load(ok(gwctl(gateway, "-o", "yaml", "get", "import", "db")))
    assert imp["spec"]["sources"] == [
        {"peer": "cl1", "export": None},
        {"peer": "cl2", "export": "pg"},
    ]
    assert imp["spec"]["lb_scheme"] == "static" and imp["status"]["port"] > 0
    pol = json.loads(ok(gwctl(gateway, "-o", "json", "get", "policy", "deny-ext")))
    assert pol["spec"]["privileged"] is True and pol["spec"]["to"] == [
        {"matchLabels": {}, "matchExpressions": []}
    ]
    # update changes only the given fields
    ok(gwctl(gateway, "update", "import", "db", "--port", "15432"))
    imp = json.loads(ok(gwctl(gateway, "-o", "json", "get", "import", "db")))
    assert imp["spec"]["port"] == 15432 and imp["spec"]["lb_scheme"] == "static"
    table = ok(gwctl(gateway, "get", "all"))
    for word in (
        "PEERS",
        "cl1",
        "10.0.0.1:443",
        "EXPORTS",
        "127.0.0.1:5432",
        "IMPORTS",
        "cl2/pg",
        "POLICIES",
        "deny-ext",
        "privileged",
    ):
        assert word in table, word
    for kind, name in (("policy", "deny-ext"), ("import", "db"), ("export", "db"), ("peer", "cl1")):
        assert f"{kind}/{name} deleted" in ok(gwctl(gateway, "delete", kind, name))
    assert json.loads(ok(gwctl(gateway, "-o", "json", "get", "peers"))) == []


def test_apply_is_idempotent_and_all_or_nothing(gateway: GatewayProcess, tmp_path: Path) -> None:
    objects = [
        {"kind": "Peer", "name": "cl1", "spec": {"gateways": [{"host": "10.0.0.1"}]}},
        {"kind": "Export", "name": "web", "spec": {"port": 8080}},
        {"kind": "Import", "name": "db", "spec": {"sources": [{"peer": "cl1"}]}},
        {"kind": "Policy", "name": "allow", "spec": {"action": "allow", "from": [{}], "to": [{}]}},
    ]
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    first = json.loads(ok(gwctl(gateway, "-o", "json", "apply", "-f", str(path))))
    assert [r["result"] for r in first] == ["created"] * 4
    second = json.loads(ok(gwctl(gateway, "-o", "json", "apply", "-f", str(path))))
    assert [r["result"] for r in second] == ["unchanged"] * 4
    objects[1]["spec"]["port"] = 8081
    path.write_text(json.dumps(objects))  # JSON works too
    third = ok(gwctl(gateway, "apply", "-f", str(path)))
    assert "export/web updated" in third and "peer/cl1 unchanged" in third
    # one bad object: nothing is applied, the field is named
    objects[1]["spec"]["port"] = 9090
    objects[2]["spec"]["lb_scheme"] = "fastest"
    path.write_text(yaml.safe_dump_all(objects))
    bad = gwctl(gateway, "apply", "-f", str(path))
    assert bad.returncode != 0 and "spec.lb_scheme" in bad.stderr
    assert (
        json.loads(ok(gwctl(gateway, "-o", "json", "get", "export", "web")))["spec"]["port"] == 8081
    )
    ok(gwctl(gateway, "apply", "-f", "-", stdin=yaml.safe_dump(objects[0])))


def test_errors_print_the_api_message(gateway: GatewayProcess) -> None:
    dup = gwctl(gateway, "create", "peer", "x", "--gateway", "h:1")
    assert dup.returncode == 0
    again = gwctl(gateway, "create", "peer", "x", "--gateway", "h:1")
    assert again.returncode == 1 and "409" in again.stderr and "already exists" in again.stderr
    missing = gwctl(gateway, "delete", "import", "nope")
    assert missing.returncode == 1 and "not found" in missing.stderr
    invalid = gwctl(gateway, "create", "export", "e", "--port", "70000")
    assert invalid.returncode == 1 and "spec.port" in invalid.stderr
    usage = gwctl(gateway, "get", "widgets")
    assert usage.returncode == 2 and "unknown kind" in usage.stderr
    down = subprocess.run(
        [str(BIN / "gwctl"), "--socket", "/nonexistent/admin.sock", "status"],
        capture_output=True,
        text=True,
    )
    assert down.returncode == 1 and "cannot reach the gateway" in down.stderr


def test_status_outputs(gateway: GatewayProcess) -> None:
    ok(gwctl(gateway, "create", "import", "db", "--source", "cl1"))
    table = ok(gwctl(gateway, "status"))
    assert "gateway cl0" in table and "IMPORTS" in table and "db" in table
    data = yaml.safe_load(ok(gwctl(gateway, "-o", "yaml", "status")))
    assert data["peer_name"] == "cl0" and data["imports"][0]["name"] == "db"
