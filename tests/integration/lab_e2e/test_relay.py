# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Relayed paths on real hosts, deployed with site.yml: two outbound-only sites through hubs.

The lab's cloud topology with four sites: ``hub`` (host a) and ``hub2`` (host d) accept the
peer port on their public addresses; ``s1`` (host b) and ``s2`` (host c) are outbound-only
(their routers drop every inbound connection), so neither can reach the other. The inventory
says only ``clusterlink_inbound: false`` for b and c, ``clusterlink_relay: true`` for a and d
and ``clusterlink_relays: [hub, hub2]`` for everyone: site.yml gives each spoke the other as a
Peer with ``via: [hub, hub2]`` and ends only once every pair is reachable (the relayed one
included, whose heartbeats travel the relayed path). b exports ``web`` (a web server answering
a token); c imports it on port 8080.

One lab for every test, in order: traffic and status (through ``hub``, the first relay); the
hubs cannot read (a unique marker sent by the client reaches the server but is neither in the
payload the hubs' relays splice, recorded by their test hook
``CLUSTERLINK_TEST_RELAY_RECORD``, nor in a packet capture of the hubs' interfaces, nor in
their journals); the hub in use restarted under a client loop (zero failed requests: the other
hub carries on), then killed (SIGKILL; failed requests counted, traffic back); and last a relay
policy that forbids the pair on both hubs (site.yml with ``clusterlink_relay_policies``):
refused, counted in ``clusterlink_relay_streams_total{result="denied"}`` and logged at the
hubs. Recovery times and failed requests are printed (``-s``).

Run: ``.venv/bin/python -m pytest -m lab tests/integration/lab_e2e/test_relay.py`` (root).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable

import pytest

from tests.lab import Lab

from .support import UNIT, ClientLoop, Fabric, can_run, no_failures

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not can_run(), reason="lab tests need root and the lab's packages"),
    pytest.mark.timeout(1200),
]

HUB, SPOKE_1, SPOKE_2, HUB2 = "a", "b", "c", "d"  # hosts of the sites hub, s1, s2, hub2
HUBS = {HUB: "hub", HUB2: "hub2"}
RECORD = "/var/lib/clusterlink/relay-record.bin"  # in the unit's StateDirectory (writable)
DROPIN = f"/etc/systemd/system/{UNIT}.service.d/relay-record.conf"
METRICS = "curl -sf http://127.0.0.1:9469/metrics"
CAPTURE = "/root/capture.bin"

# A packet capture without tcpdump (not in the lab image): an AF_PACKET socket on every
# interface of the host writes each frame to a file until /root/capture.stop appears, then
# prints the number of frames and of TCP port-443 frames and bytes.
SNIFFER = """
import os, socket, struct, sys
out = sys.argv[1]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.settimeout(0.2)
frames = tls_frames = tls_bytes = 0
with open(out, "wb") as f:
    print("ready", flush=True)
    while not os.path.exists("/root/capture.stop"):
        try:
            frame = s.recv(65535)
        except socket.timeout:
            continue
        frames += 1
        f.write(frame)
        if frame[12:14] == b"\\x08\\x00" and frame[23] == 6:
            ihl = (frame[14] & 15) * 4
            sport, dport = struct.unpack("!HH", frame[14 + ihl:18 + ihl])
            if 443 in (sport, dport):
                tls_frames += 1
                tls_bytes += len(frame)
print(frames, tls_frames, tls_bytes, flush=True)
"""


def report(what: str, value: float | int, unit: str = "s") -> None:
    print(f"\nrelay: {what}: {value:.1f} {unit}" if unit else f"\nrelay: {what}: {value}")


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (Prometheus text)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m["value"])
    return total


def recovered_after(results: list[tuple[float, str]], since: float, want: str) -> float | None:
    return next((t for t, r in results if t >= since and r == want), None)


@pytest.fixture(scope="module")
def relayed(tmp_path_factory):
    started = time.monotonic()
    lab = Lab(f"relayans-{secrets.token_hex(3)}")
    try:
        lab.create(
            hosts=[HUB, SPOKE_1, SPOKE_2, HUB2],
            topology="cloud",
            sites={**HUBS, SPOKE_1: "s1", SPOKE_2: "s2"},
            outbound_only={"s1", "s2"},
        )
        fab = Fabric(lab, tmp_path_factory.mktemp("relay"), f"relay-{secrets.token_hex(3)}")
        fab.group_vars.update(
            clusterlink_peer_labels={"env": "lab"},
            clusterlink_relays=["hub", "hub2"],  # one list for all: a hub drops out of its own
            clusterlink_policies=[
                {
                    "name": "allow-lab-sites",
                    "action": "allow",
                    "from": [{"matchLabels": {"peer.clusterlink.net/labels.env": "lab"}}],
                }
            ],
        )
        for hub in HUBS:
            fab.host_vars[hub] = {"clusterlink_relay": True, "clusterlink_metrics_enabled": True}
        fab.host_vars[SPOKE_1] = {"clusterlink_exports": [{"name": "web", "port": 8080}]}
        fab.host_vars[SPOKE_2] = {
            "clusterlink_imports": [{"name": "web", "port": 8080, "sources": [{"peer": "s1"}]}]
        }
        # The test hook on the hubs: a relay appends every spliced chunk to RECORD. In place
        # before the gateway's first start (the unit reads it at start-up).
        for hub in HUBS:
            fab.sh(
                hub,
                f"mkdir -p $(dirname {DROPIN}) && printf '[Service]\\n"
                f"Environment=CLUSTERLINK_TEST_RELAY_RECORD={RECORD}\\n' > {DROPIN}",
            )
        lab_ready = time.monotonic()
        recap, _ = fab.playbook("site")  # ends only when every pair is reachable
        assert set(recap) == {HUB, SPOKE_1, SPOKE_2, HUB2} and no_failures(recap), recap
        report("lab created", lab_ready - started)
        report("site.yml (4 hosts, until every pair is reachable, s1 <-> s2 relayed)",
               time.monotonic() - lab_ready)  # fmt: skip
        fab.token = f"s1-{secrets.token_hex(4)}"
        fab.start_web(SPOKE_1, fab.token)
        yield fab
    finally:
        lab.destroy()


def test_service_on_one_outbound_only_site_used_from_the_other(relayed):
    fab = relayed
    token = fab.token
    fab.wait("s2 -> s1 through the hub", lambda: fab.get(SPOKE_2, 8080) == token, 60)
    assert fab.gets(SPOKE_2, 8080, 10) == [token] * 10
    for own, other in ((SPOKE_2, "s1"), (SPOKE_1, "s2")):
        peer = fab.peers(own)[other]
        assert peer["spec"] == {"dial": False, "gateways": [], "via": ["hub", "hub2"]}, peer
        status = peer["status"]
        assert status["reachable"] is True and status["via"] in HUBS.values(), status
        assert status.get("rtt_ms") is not None, status
        print(f"\nrelay: {own} -> {other}: via {status['via']}, rtt {status['rtt_ms']} ms")
    # status.yml's fabric table: HOST SITE READY PEER REACHABLE RTT VIA ...
    recap, out = fab.playbook("status", "-e", "clusterlink_status_strict=true")
    assert no_failures(recap), recap
    assert re.search(r'"c\s+s2\s+yes\s+s1\s+yes\s+\S+\s+hub2?\s', out), out[-3000:]
    # The spokes reach the hubs directly; the hubs hold them with reverse links, no via.
    assert fab.peers(SPOKE_2)["hub"]["status"]["via"] == "direct"
    assert fab.peers(SPOKE_2)["hub2"]["status"]["via"] == "direct"
    for hub in HUBS:
        for spoke in ("s1", "s2"):
            peer = fab.peers(hub)[spoke]
            assert "via" not in peer["spec"] and peer["status"]["via"] == "reverse", peer
    # Neither spoke can open a TCP connection to the other (only the hub joins them).
    public_s1 = fab.lab.status()["hosts"][SPOKE_1]["public_address"]
    probe = fab.lab.run(SPOKE_2, f"timeout 3 bash -c '</dev/tcp/{public_s1}/443'", timeout=30)
    assert probe.returncode != 0, probe
    # The hub in use counted the relayed streams and bytes, for this pair.
    text = fab.sh(relay_in_use(fab), METRICS)
    ok = metric(text, "clusterlink_relay_streams_total", source="s2", destination="s1", result="ok")
    up = metric(text, "clusterlink_relay_bytes_total", source="s2", destination="s1")
    assert ok >= 1 and up > 0, [line for line in text.splitlines() if "relay" in line]
    report("relayed streams s2 -> s1 counted at the hub (ok)", ok, "")


def recorded(fab: Fabric, hub: str) -> int:
    """Bytes the hub's relay has recorded so far (the file appears with its first splice)."""
    return int(fab.sh(hub, f"stat -c %s {RECORD} 2>/dev/null || echo 0").strip())


def relay_in_use(fab: Fabric) -> str:
    """The host of the hub that carries s2's link to s1 now (from s2's peer status)."""
    via = fab.peers(SPOKE_2)["s1"]["status"]["via"]
    return next(host for host, site in HUBS.items() if site == via)


def test_the_hubs_cannot_read(relayed):
    """A unique marker sent by the client reaches the server, and appears nowhere on the hubs:
    not in what their relays spliced (test hook), not in a capture of their interfaces'
    frames, not in their journals."""
    fab = relayed
    marker = f"relayans-marker-{secrets.token_hex(12)}"
    before = {h: recorded(fab, h) for h in HUBS}
    sniffers = {}
    for hub in HUBS:
        fab.sh(hub, f"rm -f {CAPTURE} /root/capture.stop")
        fab.lab.run(hub, "cat > /root/sniff.py", input=SNIFFER, timeout=30)
        sniffers[hub] = fab.lab.start_command(hub, f"python3 /root/sniff.py {CAPTURE}")
    captured = {}
    try:
        for sniffer in sniffers.values():
            assert next(sniffer.lines(timeout=30)).strip() == "ready"
        header = f"X-Marker: {marker * 8}"  # well over one short TLS record of plaintext
        for _ in range(3):
            got = fab.sh(
                SPOKE_2,
                f"curl -sS -m 10 -H '{header}' 'http://127.0.0.1:8080/index.html?m={marker}'",
            ).strip()
            assert got == fab.token, got
    finally:
        for hub, sniffer in sniffers.items():
            fab.sh(hub, "touch /root/capture.stop")
            done = sniffer.wait(60)
            captured[hub] = tuple(int(x) for x in done.stdout.split()[-3:])
    # It arrived at the server (the web server's request log on s1) ...
    arrived = fab.sh(SPOKE_1, f"journalctl -u web-8080 --no-pager | grep -c {marker}", check=False)
    assert int(arrived.strip() or 0) >= 3, arrived
    # ... through a hub: its relay spliced (and recorded) the bytes of these requests, and its
    # interfaces carried them on the peer port ...
    grown = {h: recorded(fab, h) - before[h] for h in HUBS}
    assert sum(grown.values()) > 3 * len(marker) * 8, grown
    assert sum(c[2] for c in captured.values()) > 3 * len(marker) * 8, captured
    # ... but the marker is in none of it, on either hub, nor in their journals.
    for hub in HUBS:
        for where in (RECORD, CAPTURE):
            count = fab.sh(hub, f"cat {where} 2>/dev/null | grep -c -a {marker}", check=False)
            count = count.strip()
            assert count == "0", (hub, where, count)
        journal = fab.sh(hub, f"journalctl --no-pager | grep -c {marker}", check=False).strip()
        assert journal == "0", (hub, journal)
    for hub in HUBS:
        frames, tls_frames, tls_bytes = captured[hub]
        print(
            f"\nrelay: {HUBS[hub]}: {grown[hub]} B spliced (recorded) during the marker requests;"
            f" capture {frames} frames, {tls_frames} on port 443 ({tls_bytes} B)"
        )


def _loop_around(fab: Fabric, name: str, fault: Callable[[], str]) -> tuple[float, list]:
    """A client loop on s2 through the relay while ``fault()`` runs on a hub (it returns the
    host clock after the fault); (seconds until traffic again, the loop's results)."""
    token = fab.token
    loop = ClientLoop(fab, SPOKE_2, 8080, name).start(300)
    try:
        fab.wait("the loop to run", lambda: len(loop.results()) >= 5, 30)
        since = float(fault())
        fab.wait(
            "traffic after the fault",
            lambda: recovered_after(loop.results(), since, token) is not None,
            120,
        )
        time.sleep(5)
    finally:
        results = loop.stop()
    back = recovered_after(results, since, token)
    assert back is not None
    after = [r for t, r in results if t > back]
    assert after and all(r == token for r in after), after[:20]
    return back - since, results


def test_hub_restart_and_kill_under_a_client_loop(relayed):
    """The hub in use restarted (graceful: its relay resets the spliced streams, the spokes
    dial again through the other hub): zero failed requests. Then the hub in use killed
    (SIGKILL; systemd starts it again): failed requests counted, traffic back."""
    fab = relayed
    token = fab.token
    hub = relay_in_use(fab)

    def restart() -> str:
        fab.sh(hub, f"systemctl restart {UNIT}")  # returns once the new process is ready
        return fab.sh(hub, "date +%s.%N")

    took, results = _loop_around(fab, "relayloop", restart)
    failed = [r for _, r in results if r != token]
    report(f"{HUBS[hub]} restarted; relayed traffic again after it was ready", took)
    report("requests failed around the restart (two hubs)", len(failed), "")
    assert not failed, failed[:10]
    print(f"relay: s2 -> s1 now via {fab.peers(SPOKE_2)['s1']['status']['via']}")

    hub = relay_in_use(fab)

    def kill() -> str:
        fab.sh(hub, f"systemctl kill -s KILL {UNIT}")
        return fab.sh(hub, "date +%s.%N")

    took, results = _loop_around(fab, "killloop", kill)
    report(f"{HUBS[hub]} killed; relayed traffic again after", took)
    report("requests failed around the kill (two hubs)", sum(r != token for _, r in results), "")
    fab.wait("the killed hub back", lambda: fab.reachable(SPOKE_2).get(HUBS[hub]), 90)


def test_relay_policy_forbidding_the_pair(relayed):
    """Last (it leaves the pair forbidden): both hubs' relay policies deny s2 -> s1 and
    s1 -> s2 through site.yml; the spokes' traffic stops, refused and counted at the hubs."""
    fab = relayed
    since = {h: fab.sh(h, "date '+%Y-%m-%d %H:%M:%S'").strip() for h in HUBS}
    denied_before = {
        h: metric(
            fab.sh(h, METRICS), "clusterlink_relay_streams_total", source="s2",
            destination="s1", result="denied",
        )
        for h in HUBS
    }  # fmt: skip
    pair = [
        {"matchLabels": {"peer.clusterlink.net/name": "s1"}},
        {"matchLabels": {"peer.clusterlink.net/name": "s2"}},
    ]
    for hub in HUBS:
        fab.host_vars[hub]["clusterlink_relay_policies"] = [
            {"name": "no-spoke-pair", "action": "deny", "from": pair, "to": pair},
            {"name": "any-pair", "action": "allow", "from": [{}], "to": [{}]},
        ]
    t0 = time.monotonic()
    recap, _ = fab.playbook("site", "--limit", ",".join(HUBS), "-e", "clusterlink_wait_reachable=0")
    assert no_failures(recap), recap
    report("site.yml --limit the hubs (relay policy; each hub restarts)", time.monotonic() - t0)
    for hub in HUBS:
        assert "no-spoke-pair" in fab.sh(hub, "cat /etc/clusterlink/gateway.yaml")
    fab.wait("s2 -> s1 refused", lambda: fab.get(SPOKE_2, 8080) != fab.token, 60)

    for hub in HUBS:

        def denied(hub: str = hub) -> float:
            text = fab.sh(hub, METRICS)
            return metric(
                text, "clusterlink_relay_streams_total", source="s2", destination="s1",
                result="denied",
            ) - denied_before[hub]  # fmt: skip

        count = fab.wait(f"a denied relay stream counted at {HUBS[hub]}", denied, 60)
        report(f"denied relay streams s2 -> s1 counted at {HUBS[hub]}", count, "")
        logged = fab.wait(
            f"the refusal in {HUBS[hub]}'s journal",
            lambda hub=hub: fab.sh(
                hub,
                f"journalctl -u {UNIT} --no-pager --since '{since[hub]}' | "
                "grep 'relay source=s2 destination=s1 result=denied' || true",
            ).strip(),
            60,
        )
        print(f"relay: {HUBS[hub]} journal: {logged.splitlines()[0]}")
    fab.wait(
        "s1 unreachable from s2",
        lambda: fab.peers(SPOKE_2)["s1"]["status"]["reachable"] is False,
        90,
    )
    print(f"relay: s2's status of s1 while denied: {fab.peers(SPOKE_2)['s1']['status']['error']}")
