# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""An outbound-only site on real hosts behind NAT, deployed with site.yml: reverse links.

The lab's cloud topology with three sites: s1 (host a) and s3 (host c) accept the peer port on
their public addresses; s2 (host b) is outbound-only: its router only SNATs what leaves it and
drops every inbound connection. The inventory says ``clusterlink_inbound: false`` for b and
nothing else; site.yml makes s2 a ``dial: false`` Peer on a and c, and ends only once every pair
is reachable. b and c each export ``web`` (a web server answering a token); a imports ``web``
from s2 (port 8080, reverse only) and ``mix`` from s2 and s3 (port 8081, reverse and forward).

In order: traffic and status; nothing reaches b from outside; policies at both ends; a's
gateway restarted under a client loop; b's cable pulled and replugged; failover between the
forward and the reverse source both ways; b's certificate rotated under traffic. Each recovery
time is printed (``-s``).

Run: ``.venv/bin/python -m pytest -m lab tests/integration/lab_e2e/test_outbound.py`` (root).
"""

from __future__ import annotations

import secrets
import time

import pytest

from tests.lab import Lab

from .support import UNIT, ClientLoop, Fabric, can_run, no_failures

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not can_run(), reason="lab tests need root and the lab's packages"),
    pytest.mark.timeout(1500),
]

DENY_ALL = "create policy deny-all --action deny"
KEEPALIVE = 10.0  # seconds: peering.session.KEEPALIVE


def report(what: str, seconds: float) -> None:
    print(f"\noutbound-only: {what}: {seconds:.1f} s")


def recovered_after(results: list[tuple[float, str]], since: float, want: str) -> float | None:
    """Host-clock time of the first answer ``want`` started after ``since``."""
    return next((t for t, r in results if t >= since and r == want), None)


@pytest.fixture(scope="module")
def nat(tmp_path_factory):
    lab = Lab(f"out-{secrets.token_hex(3)}")
    try:
        lab.create(
            hosts=["a", "b", "c"],
            topology="cloud",
            sites={"a": "s1", "b": "s2", "c": "s3"},
            outbound_only={"s2"},
        )
        fab = Fabric(lab, tmp_path_factory.mktemp("outbound"), f"out-{secrets.token_hex(3)}")
        fab.group_vars.update(
            clusterlink_peer_labels={"env": "lab"},
            clusterlink_policies=[
                {
                    "name": "allow-lab-sites",
                    "action": "allow",
                    "from": [{"matchLabels": {"peer.clusterlink.net/labels.env": "lab"}}],
                }
            ],
        )
        fab.host_vars["b"] = {"clusterlink_exports": [{"name": "web", "port": 8080}]}
        fab.host_vars["c"] = {"clusterlink_exports": [{"name": "web", "port": 8080}]}
        fab.host_vars["a"] = {
            "clusterlink_imports": [
                {"name": "web", "port": 8080, "sources": [{"peer": "s2"}]},
                {
                    "name": "mix",
                    "port": 8081,
                    "sources": [{"peer": "s2", "export": "web"}, {"peer": "s3", "export": "web"}],
                },
            ]
        }
        recap, _ = fab.playbook("site")  # ends only when every pair is reachable
        assert set(recap) == {"a", "b", "c"} and no_failures(recap), recap
        fab.tokens = {h: f"{h}-{secrets.token_hex(4)}" for h in ("b", "c")}
        for host, token in fab.tokens.items():
            fab.start_web(host, token)
        yield fab
    finally:
        lab.destroy()


def test_service_on_the_outbound_only_site_is_used_from_a_public_site(nat):
    fab = nat
    b = fab.tokens["b"]
    fab.wait("a -> s2 over reverse links", lambda: fab.get("a", 8080) == b, 60)
    assert fab.gets("a", 8080, 10) == [b] * 10
    s2 = fab.peers("a")["s2"]
    assert s2["spec"]["dial"] is False and s2["spec"]["gateways"] == [], s2["spec"]
    assert s2["status"]["via"] == "reverse" and s2["status"]["links"] >= 1, s2["status"]
    assert s2["status"]["reachable"] is True
    mine = fab.peers("b")["s1"]["status"]
    assert mine["via"] == "direct" and mine["reverse_links"] >= 1, mine
    # b accepts nothing from outside, peer port included: a and c cannot even open TCP to it
    public_b = fab.lab.status()["hosts"]["b"]["public_address"]
    for host in ("a", "c"):
        probe = fab.lab.run(host, f"timeout 3 bash -c '</dev/tcp/{public_b}/443'", timeout=30)
        assert probe.returncode != 0, (host, probe)
    # ... while b imports nothing and still reaches the others (its own forward links)
    assert fab.reachable("b") == {"s1": True, "s3": True}


def test_policies_decide_at_both_ends(nat):
    fab = nat
    b = fab.tokens["b"]
    for side in ("b", "a"):  # the exporter's ingress policy, then the importer's egress policy
        fab.gwctl(side, DENY_ALL)
        try:
            fab.wait(f"deny on {side}", lambda: fab.get("a", 8080) != b, 30)
            assert all(r != b for r in fab.gets("a", 8080, 3))
        finally:
            fab.gwctl(side, "delete policy deny-all")
        fab.wait(f"allowed again on {side}", lambda: fab.get("a", 8080) == b, 30)


def test_public_gateway_restart_under_a_client_loop(nat):
    fab = nat
    b = fab.tokens["b"]
    loop = ClientLoop(fab, "a", 8080, "outloop").start(300)
    try:
        fab.wait("the loop to run", lambda: len(loop.results()) >= 5, 30)
        fab.sh("a", f"systemctl restart {UNIT}")  # returns once the new process is ready
        restarted = float(fab.sh("a", "date +%s.%N"))
        fab.wait(
            "traffic after a's restart",
            lambda: recovered_after(loop.results(), restarted, b) is not None,
            90,
        )
        time.sleep(5)
    finally:
        results = loop.stop()
    back = recovered_after(results, restarted, b)
    assert back is not None
    after = [r for t, r in results if t > back]
    assert after and all(r == b for r in after), after[:20]
    report("a's gateway restarted; traffic again after it was ready", back - restarted)
    print(f"outbound-only: requests failed around the restart: {sum(r != b for _, r in results)}")


def test_cable_pulled_and_replugged_on_the_outbound_only_host(nat):
    fab = nat
    b = fab.tokens["b"]
    loop = ClientLoop(fab, "a", 8080, "cableloop").start(300)
    try:
        fab.wait("the loop to run", lambda: len(loop.results()) >= 5, 30)
        fab.lab.link_down("b")
        time.sleep(8)
        replugged = float(fab.sh("a", "date +%s.%N"))
        fab.lab.link_up("b")
        fab.wait(
            "traffic after b's cable is back",
            lambda: recovered_after(loop.results(), replugged, b) is not None,
            120,
        )
        time.sleep(2 * KEEPALIVE + 5)
    finally:
        results = loop.stop()
    back = recovered_after(results, replugged, b)
    assert back is not None
    # Links that lived through the outage resume (TCP retransmits); one still waiting for its
    # retransmission is found dead by the keepalive (no answer to a PING within 2 x 10 s).
    settled = back + 2 * KEEPALIVE
    failed = [r for t, r in results if back <= t < settled and r != b]
    after = [r for t, r in results if t >= settled]
    assert after and all(r == b for r in after), after[:20]
    report("b's cable replugged; traffic again after", back - replugged)
    print(f"outbound-only: requests failed while stale links were found: {len(failed)}")


def test_forward_and_reverse_sources_fail_over_both_ways(nat):
    fab = nat
    both = {fab.tokens["b"], fab.tokens["c"]}
    fab.wait("mix from both sources", lambda: set(fab.gets("a", 8081, 6)) == both, 60)
    for down in ("b", "c"):
        up = fab.tokens["c" if down == "b" else "b"]
        fab.sh(down, f"systemctl stop {UNIT}")
        try:
            assert fab.gets("a", 8081, 8) == [up] * 8, down
        finally:
            fab.sh(down, f"systemctl start {UNIT}")
        fab.wait(f"{down} back in mix", lambda: set(fab.gets("a", 8081, 6)) == both, 90)


def test_certificate_rotation_on_the_outbound_only_site(nat):
    fab = nat
    b = fab.tokens["b"]
    before = fab.sh("b", "sha256sum /etc/clusterlink/tls/gateway.crt")
    loop = ClientLoop(fab, "a", 8080, "rotloop").start(600)
    try:
        recap, _ = fab.playbook("rotate_certificates", "--limit", "b")
        assert no_failures(recap), recap
        time.sleep(3)
    finally:
        results = loop.stop()
    assert fab.sh("b", "sha256sum /etc/clusterlink/tls/gateway.crt") != before
    assert results and all(r == b for _, r in results), [r for _, r in results if r != b][:10]
    fab.wait("a -> s2 with b's new certificate", lambda: fab.get("a", 8080) == b, 30)
