"""Metrics on /metrics and the per-connection audit line, after real traffic."""

from __future__ import annotations

import json
import re
import time

from support.fabric import Fabric
from support.traffic import get


def metrics(fabric: Fabric, name: str) -> dict[str, float]:
    resp = fabric.client(name).raw("GET", "/metrics")
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/plain")
    out = {}
    for line in resp.body.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_metrics_and_audit(fabric: Fabric) -> None:
    fabric.export_echo("cl0")
    fabric.allow_all("cl0", "cl1")
    fabric.add_peer("cl1", "cl0")
    fabric.client("cl1").create(
        "imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}}
    )
    fabric.client("cl1").create(
        "imports", {"name": "nothing", "spec": {"sources": [{"peer": "cl0", "export": "missing"}]}}
    )
    port = fabric.import_port("cl1", "http-echo")
    for _ in range(5):
        assert get(port) == "cl0"
    assert get(fabric.import_port("cl1", "nothing")) == "reset"
    m1 = metrics(fabric, "cl1")
    assert m1['clusterlink_import_connections_total{import_name="http-echo"}'] == 5
    assert m1['clusterlink_import_connections_closed_total{import_name="http-echo"}'] == 5
    assert m1['clusterlink_import_connection_failures_total{import_name="nothing"}'] == 1
    assert m1['clusterlink_import_bytes_total{direction="in",import_name="http-echo"}'] > 5 * 40
    assert m1['clusterlink_import_bytes_total{direction="out",import_name="http-echo"}'] > 5 * 40
    assert (
        m1['clusterlink_policy_decisions_total{action="allow",policy="allow-all",side="egress"}']
        == 6
    )
    assert m1['clusterlink_peer_connect_errors_total{peer="cl0",reason="404"}'] == 1
    assert m1['clusterlink_peer_connect_seconds_count{peer="cl0"}'] == 6
    assert m1['clusterlink_peer_reachable{peer="cl0"}'] == 1
    assert m1['clusterlink_peer_links{peer="cl0"}'] >= 1
    assert m1['clusterlink_import_listening{import_name="http-echo"}'] == 1
    assert m1['clusterlink_connections_active{side="egress"}'] == 0
    assert m1['clusterlink_peer_heartbeat_rtt_seconds{peer="cl0"}'] > 0
    m0 = metrics(fabric, "cl0")
    assert m0['clusterlink_export_connections_total{export="http-echo",peer="cl1"}'] == 5
    assert (
        m0['clusterlink_policy_decisions_total{action="allow",policy="allow-all",side="ingress"}']
        == 5
    )
    # a default deny is counted under its own name
    fabric.client("cl0").delete("policies", "allow-all")
    assert get(port) == "reset"
    m0 = metrics(fabric, "cl0")
    assert (
        m0[
            'clusterlink_policy_decisions_total{action="deny",policy="<default deny>",side="ingress"}'
        ]
        == 1
    )

    # one audit line per client connection at the importer
    def audit_lines() -> list[dict]:
        lines = fabric["cl1"].log_text().splitlines()
        return [
            json.loads(line)
            for line in lines
            if '"clusterlink.audit"' in line and '"msg": "connection"' in line
        ]

    deadline = time.monotonic() + 5
    while len(audit := audit_lines()) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(audit) == 7
    ok = [a for a in audit if a["peer"] == "cl0"]
    assert len(ok) == 5
    first = ok[0]
    assert first["client"] == "127.0.0.1" and first["import"] == "http-echo"
    assert first["tried"] == [
        {
            "peer": "cl0",
            "export": "http-echo",
            "egress": "allow by policy allow-all",
            "result": "connected",
        }
    ]
    assert first["bytes_in"] > 0 and first["bytes_out"] > 0 and first["duration_s"] >= 0
    failed = next(a for a in audit if a["import"] == "nothing")
    # the exporter writes its own line per carried connection, with its ingress decision
    ingress = [
        json.loads(line)
        for line in fabric["cl0"].log_text().splitlines()
        if '"msg": "ingress connection"' in line
    ]
    assert len(ingress) == 5
    assert {i["ingress"] for i in ingress} == {"allow by policy allow-all"}
    assert all(
        i["peer"] == "cl1" and i["client"] == "127.0.0.1" and i["bytes_out"] > 0 for i in ingress
    )
    assert failed["peer"] is None and re.match(
        r"404: export 'missing' not found", failed["tried"][0]["result"]
    )
