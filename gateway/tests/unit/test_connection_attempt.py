"""ConnectionAttempt: the socket-free bookkeeping of one relayed connection (both sides)."""

from __future__ import annotations

import ipaddress

from prometheus_client import generate_latest

from clusterlink_gateway.dataplane.attempt import ConnectionAttempt
from clusterlink_gateway.metrics import Metrics
from clusterlink_gateway.model.objects import PolicySpec
from clusterlink_gateway.policy.engine import PolicyEngine


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def engine_allowing_cidr(cidr: str) -> PolicyEngine:
    engine = PolicyEngine()
    spec = PolicySpec.model_validate(
        {
            "action": "allow",
            "from": [{"matchLabels": {}, "clientCIDRs": [cidr]}],
            "to": [{"matchLabels": {}}],
        }
    )
    engine.set("lan", spec)
    return engine


def decisions(metrics: Metrics) -> str:
    text = generate_latest(metrics.registry).decode()
    return "\n".join(line for line in text.splitlines() if "policy_decisions_total{" in line)


def test_egress_counts_each_decision_and_records_sources_in_order() -> None:
    metrics, clock = Metrics(), Clock()
    attempt = ConnectionAttempt("egress", engine_allowing_cidr("10.0.0.0/8"), metrics, clock=clock)
    first = attempt.source("west", "db")
    denied = attempt.decide({}, {}, ipaddress.ip_address("192.0.2.1"))
    first["egress"], first["result"] = str(denied), "denied by egress policy"
    second = attempt.source("east", "db")
    allowed = attempt.decide({}, {}, ipaddress.ip_address("10.1.2.3"))
    assert (denied.allowed, allowed.allowed) == (False, True)
    attempt.connected(second)
    clock.now += 1.2345
    record = attempt.record({"client": "10.1.2.3", "import": "db"}, 10, 20)
    assert list(record) == [
        "client",
        "import",
        "peer",
        "tried",
        "duration_s",
        "bytes_in",
        "bytes_out",
    ]
    assert record["peer"] == "east" and record["duration_s"] == 1.234
    assert [(t["peer"], t["result"]) for t in record["tried"]] == [
        ("west", "denied by egress policy"),
        ("east", "connected"),
    ]
    counted = decisions(metrics)
    assert 'side="egress"' in counted and 'policy="<default deny>"' in counted
    assert 'action="allow",policy="lan",side="egress"} 1.0' in counted
    assert "ingress" not in counted


def test_ingress_record_names_the_decision_and_no_sources() -> None:
    metrics = Metrics()
    attempt = ConnectionAttempt("ingress", PolicyEngine(), metrics, clock=Clock())
    decision = attempt.decide({}, {}, None)
    assert not decision.allowed
    record = attempt.record({"peer": "west", "export": "db", "client": None}, 0, 0)
    assert record["ingress"] == "deny by <default deny>"
    assert "tried" not in record and "peer" in record and record["peer"] == "west"
    assert 'action="deny",policy="<default deny>",side="ingress"} 1.0' in decisions(metrics)


def test_nothing_connected_means_no_peer_in_the_record() -> None:
    attempt = ConnectionAttempt("egress", PolicyEngine(), Metrics(), clock=Clock())
    step = attempt.source("west", "db")
    step["result"] = "unreachable: timeout"
    record = attempt.record({"client": "127.0.0.1", "import": "db"}, 0, 0)
    assert record["peer"] is None and attempt.chosen is None
