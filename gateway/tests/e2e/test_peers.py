"""Peers: reachability from heartbeats (TestPeerStatus), several gateway endpoints
(TestPeerMultipleGateways), two gateway processes for one site (TestRedundancy), offers."""

from __future__ import annotations

import subprocess
import time

import yaml

from support.fabric import Fabric
from support.gateway import BIN, free_port
from support.traffic import get


def wait_reachable(
    fabric: Fabric, on: str, peer: str, expected: bool, timeout: float = 20.0
) -> float:
    """Seconds until ``peer``'s status on ``on`` says ``expected``."""
    start = time.monotonic()
    while fabric.client(on).get("peers", peer)["status"]["reachable"] is not expected:
        assert time.monotonic() - start < timeout, fabric.client(on).get("peers", peer)
        time.sleep(0.05)
    return time.monotonic() - start


def self_import(fabric: Fabric) -> int:
    fabric.export_echo("cl0")
    fabric.allow_all("cl0")
    fabric.client("cl0").create(
        "imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}}
    )
    return fabric.import_port("cl0", "http-echo")


def test_peer_status_follows_the_peer(fabric: Fabric) -> None:
    # cl1 admits cl0 without a Peer for it (open fabric) and so never heartbeats it itself
    fabric.start("cl1", extra={"listen": {"open_fabric": True}})
    fabric.add_peer("cl0", "cl1", mutual=False)
    wait_reachable(fabric, "cl0", "cl1", True)
    status = fabric.client("cl0").get("peers", "cl1")["status"]
    assert status["last_seen"] and status["rtt_ms"] is not None and status["links"] >= 1
    fabric["cl1"].stop()
    # 5 failures at the fast interval (0.2 s here) mark it down
    down = wait_reachable(fabric, "cl0", "cl1", False)
    assert down < 5.0, down
    assert fabric.client("cl0").get("peers", "cl1")["status"]["error"]
    fabric["cl1"].start()
    wait_reachable(fabric, "cl0", "cl1", True)
    # deleting the peer stops its monitor: no more heartbeats reach cl1
    fabric.client("cl0").delete("peers", "cl1")
    time.sleep(0.5)
    log_size = len(fabric["cl1"].log_text())
    time.sleep(1.0)
    assert fabric.client("cl0").list("peers") == []
    assert len(fabric["cl1"].log_text()) == log_size


def test_multiple_gateways_with_a_bad_endpoint(fabric: Fabric) -> None:
    port = self_import(fabric)
    good = fabric.endpoint("cl0")
    bad = {"host": "127.0.0.1", "port": free_port()}
    cl0 = fabric.client("cl0")
    cl0.create("peers", {"name": "cl0", "spec": {"gateways": [bad, good]}})
    wait_reachable(fabric, "cl0", "cl0", True)
    assert [get(port) for _ in range(11)] == ["cl0"] * 11
    cl0.replace("peers", "cl0", {"name": "cl0", "spec": {"gateways": [bad]}})
    wait_reachable(fabric, "cl0", "cl0", False)
    assert get(port) == "reset"
    cl0.replace("peers", "cl0", {"name": "cl0", "spec": {"gateways": [good, bad]}})
    wait_reachable(fabric, "cl0", "cl0", True)
    assert [get(port) for _ in range(11)] == ["cl0"] * 11


def test_two_gateway_processes_for_one_site(fabric: Fabric) -> None:
    a = fabric.start("cl0")
    b = fabric.start("cl0-b", peer_name="cl0")
    for gw in (a, b):
        gw.client.create("peers", {"name": "cl1", "spec": {"gateways": [fabric.endpoint("cl1")]}})
        gw.client.create(
            "exports", {"name": "http-echo", "spec": {"port": fabric.echo_port("cl0")}}
        )
        gw.client.create(
            "policies", {"name": "all", "spec": {"action": "allow", "from": [{}], "to": [{}]}}
        )
    cl1 = fabric.client("cl1")
    cl1.create(
        "peers",
        {"name": "cl0", "spec": {"gateways": [fabric.endpoint("cl0"), fabric.endpoint("cl0-b")]}},
    )
    cl1.create("imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}})
    fabric.allow_all("cl1")
    port = fabric.import_port("cl1", "http-echo")
    wait_reachable(fabric, "cl1", "cl0", True)
    assert [get(port) for _ in range(100)] == ["cl0"] * 100
    a.stop()  # one gateway host of the site goes away: the other carries new connections
    answers = [get(port) for _ in range(50)]
    assert answers.count("cl0") >= 49, answers
    assert all(x == "cl0" for x in answers[5:]), answers


def test_offers_respect_allowed_peers(fabric: Fabric) -> None:
    cl0 = fabric.client("cl0")
    echo = fabric.echo_port("cl0")
    cl0.create(
        "exports",
        {
            "name": "for-cl1",
            "labels": {"tier": "web"},
            "spec": {"port": echo, "allowed_peers": ["cl1"]},
        },
    )
    cl0.create("exports", {"name": "for-cl2", "spec": {"port": echo, "allowed_peers": ["cl2"]}})
    cl0.create("exports", {"name": "for-all", "spec": {"port": echo}})
    fabric.add_peer("cl1", "cl0")
    wait_reachable(fabric, "cl1", "cl0", True)
    result = subprocess.run(
        [
            str(BIN / "gwctl"),
            "--socket",
            str(fabric["cl1"].socket),
            "-o",
            "yaml",
            "get",
            "offers",
            "--peer",
            "cl0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    offers = yaml.safe_load(result.stdout)
    assert offers == [
        {"name": "for-all", "labels": {}},
        {"name": "for-cl1", "labels": {"tier": "web"}},
    ]
    # allowed_peers is enforced on CONNECT too, not only hidden from offers
    fabric.allow_all("cl0", "cl1")
    fabric.client("cl1").create(
        "imports",
        {"name": "x", "spec": {"sources": [{"peer": "cl0", "export": "for-cl2"}]}},
    )
    assert get(fabric.import_port("cl1", "x")) == "reset"
    missing = subprocess.run(
        [
            str(BIN / "gwctl"),
            "--socket",
            str(fabric["cl1"].socket),
            "get",
            "offers",
            "--peer",
            "nope",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 1 and "not found" in missing.stderr
