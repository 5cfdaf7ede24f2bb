# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Relayed paths on real hosts, deployed with site.yml: two outbound-only sites through a hub.

The lab's cloud topology with three sites: ``hub`` (host a) accepts the peer port on its
public address; ``s1`` (host b) and ``s2`` (host c) are outbound-only (their routers drop every
inbound connection), so neither can reach the other. The inventory says only
``clusterlink_inbound: false`` for b and c, ``clusterlink_relay: true`` for a and
``clusterlink_relays: [hub]`` for everyone: site.yml gives each spoke the other as a Peer with
``via: [hub]`` and ends only once every pair is reachable (the relayed one included, whose
heartbeats travel the relayed path). b exports ``web`` (a web server answering a token); c
imports it on port 8080.

One lab for every test, in order: traffic and status; the hub cannot read (a unique marker
sent by the client reaches the server but is neither in the payload the hub's relay splices,
recorded by its test hook ``CLUSTERLINK_TEST_RELAY_RECORD``, nor in a packet capture of the
hub's interfaces, nor in its journal); the hub's gateway restarted under a client loop; and
last a relay policy that forbids the pair (site.yml with ``clusterlink_relay_policies``):
refused, counted in ``clusterlink_relay_streams_total{result="denied"}`` and logged at the hub.
Recovery times and failed requests are printed (``-s``).

Run: ``.venv/bin/python -m pytest -m lab tests/integration/lab_e2e/test_relay.py`` (root).
"""

from __future__ import annotations

import re
import secrets
import time

import pytest

from tests.lab import Lab

from .support import UNIT, ClientLoop, Fabric, can_run, no_failures

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not can_run(), reason="lab tests need root and the lab's packages"),
    pytest.mark.timeout(1200),
]

HUB, SPOKE_1, SPOKE_2 = "a", "b", "c"  # hosts of the sites hub, s1, s2
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
            hosts=[HUB, SPOKE_1, SPOKE_2],
            topology="cloud",
            sites={HUB: "hub", SPOKE_1: "s1", SPOKE_2: "s2"},
            outbound_only={"s1", "s2"},
        )
        fab = Fabric(lab, tmp_path_factory.mktemp("relay"), f"relay-{secrets.token_hex(3)}")
        fab.group_vars.update(
            clusterlink_peer_labels={"env": "lab"},
            clusterlink_relays=["hub"],  # one list for all: the hub drops out of its own
            clusterlink_policies=[
                {
                    "name": "allow-lab-sites",
                    "action": "allow",
                    "from": [{"matchLabels": {"peer.clusterlink.net/labels.env": "lab"}}],
                }
            ],
        )
        fab.host_vars[HUB] = {"clusterlink_relay": True, "clusterlink_metrics_enabled": True}
        fab.host_vars[SPOKE_1] = {"clusterlink_exports": [{"name": "web", "port": 8080}]}
        fab.host_vars[SPOKE_2] = {
            "clusterlink_imports": [{"name": "web", "port": 8080, "sources": [{"peer": "s1"}]}]
        }
        # The test hook on the hub: its relay appends every spliced chunk to RECORD. In place
        # before the gateway's first start (the unit reads it at start-up).
        fab.sh(
            HUB,
            f"mkdir -p $(dirname {DROPIN}) && printf '[Service]\\n"
            f"Environment=CLUSTERLINK_TEST_RELAY_RECORD={RECORD}\\n' > {DROPIN}",
        )
        lab_ready = time.monotonic()
        recap, _ = fab.playbook("site")  # ends only when every pair is reachable
        assert set(recap) == {HUB, SPOKE_1, SPOKE_2} and no_failures(recap), recap
        report("lab created", lab_ready - started)
        report("site.yml (3 hosts, until every pair is reachable, s1 <-> s2 relayed)",
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
        assert peer["spec"] == {"dial": False, "gateways": [], "via": ["hub"]}, peer["spec"]
        status = peer["status"]
        assert status["reachable"] is True and status["via"] == "hub", status
        assert status.get("rtt_ms") is not None, status
        print(f"\nrelay: {own} -> {other}: via {status['via']}, rtt {status['rtt_ms']} ms")
    # The spokes reach the hub directly; the hub holds them with reverse links, no via.
    assert fab.peers(SPOKE_2)["hub"]["status"]["via"] == "direct"
    for spoke in ("s1", "s2"):
        peer = fab.peers(HUB)[spoke]
        assert "via" not in peer["spec"] and peer["status"]["via"] == "reverse", peer
    # Neither spoke can open a TCP connection to the other (only the hub joins them).
    public_s1 = fab.lab.status()["hosts"][SPOKE_1]["public_address"]
    probe = fab.lab.run(SPOKE_2, f"timeout 3 bash -c '</dev/tcp/{public_s1}/443'", timeout=30)
    assert probe.returncode != 0, probe
    # The hub counted the relayed streams and bytes, for this pair.
    text = fab.sh(HUB, METRICS)
    ok = metric(text, "clusterlink_relay_streams_total", source="s2", destination="s1", result="ok")
    up = metric(text, "clusterlink_relay_bytes_total", source="s2", destination="s1")
    assert ok >= 1 and up > 0, [line for line in text.splitlines() if "relay" in line]
    report("relayed streams s2 -> s1 counted at the hub (ok)", ok, "")


def test_the_hub_cannot_read(relayed):
    """A unique marker sent by the client reaches the server, and appears nowhere on the hub:
    not in what its relay spliced (test hook), not in a capture of its interfaces' frames,
    not in its journal."""
    fab = relayed
    marker = f"relayans-marker-{secrets.token_hex(12)}"
    before = int(fab.sh(HUB, f"stat -c %s {RECORD}").strip())
    fab.sh(HUB, f"rm -f {CAPTURE} /root/capture.stop")
    fab.lab.run(HUB, "cat > /root/sniff.py", input=SNIFFER, timeout=30)
    sniffer = fab.lab.start_command(HUB, f"python3 /root/sniff.py {CAPTURE}")
    try:
        assert next(sniffer.lines(timeout=30)).strip() == "ready"
        header = f"X-Marker: {marker * 8}"  # well over one short TLS record of plaintext
        for _ in range(3):
            got = fab.sh(
                SPOKE_2,
                f"curl -sS -m 10 -H '{header}' 'http://127.0.0.1:8080/index.html?m={marker}'",
            ).strip()
            assert got == fab.token, got
    finally:
        fab.sh(HUB, "touch /root/capture.stop")
        done = sniffer.wait(60)
    frames, tls_frames, tls_bytes = (int(x) for x in done.stdout.split()[-3:])
    # It arrived at the server (the web server's request log on s1) ...
    arrived = fab.sh(SPOKE_1, f"journalctl -u web-8080 --no-pager | grep -c {marker}", check=False)
    assert int(arrived.strip() or 0) >= 3, arrived
    # ... through the hub: its relay spliced (and recorded) the bytes of these requests, and
    # its interfaces carried them on the peer port ...
    after = int(fab.sh(HUB, f"stat -c %s {RECORD}").strip())
    assert after - before > 3 * len(marker) * 8, (before, after)
    assert tls_frames > 0 and tls_bytes > 3 * len(marker) * 8, (frames, tls_frames, tls_bytes)
    # ... but the marker is in neither, nor in the hub's journal.
    for where in (RECORD, CAPTURE):
        count = fab.sh(HUB, f"grep -c -a {marker} {where}", check=False).strip()
        assert count == "0", (where, count)
    journal = fab.sh(HUB, f"journalctl --no-pager | grep -c {marker}", check=False).strip()
    assert journal == "0", journal
    report("hub: relayed bytes recorded during the marker requests", after - before, "B")
    print(f"relay: hub capture: {frames} frames, {tls_frames} on port 443 ({tls_bytes} B)")


def test_hub_restart_under_a_client_loop(relayed):
    fab = relayed
    token = fab.token
    loop = ClientLoop(fab, SPOKE_2, 8080, "relayloop").start(300)
    try:
        fab.wait("the loop to run", lambda: len(loop.results()) >= 5, 30)
        fab.sh(HUB, f"systemctl restart {UNIT}")  # returns once the new process is ready
        restarted = float(fab.sh(HUB, "date +%s.%N"))
        fab.wait(
            "traffic after the hub's restart",
            lambda: recovered_after(loop.results(), restarted, token) is not None,
            120,
        )
        time.sleep(5)
    finally:
        results = loop.stop()
    back = recovered_after(results, restarted, token)
    assert back is not None
    after = [r for t, r in results if t > back]
    assert after and all(r == token for r in after), after[:20]
    report("hub's gateway restarted; relayed traffic again after it was ready", back - restarted)
    failed = sum(r != token for _, r in results)
    report("requests failed around the restart (one hub)", failed, "")


def test_relay_policy_forbidding_the_pair(relayed):
    """Last (it leaves the pair forbidden): the hub's relay policy denies s2 -> s1 and
    s1 -> s2 through site.yml; the spokes' traffic stops, refused and counted at the hub."""
    fab = relayed
    since = fab.sh(HUB, "date '+%Y-%m-%d %H:%M:%S'").strip()
    denied_before = metric(
        fab.sh(HUB, METRICS), "clusterlink_relay_streams_total", source="s2", destination="s1",
        result="denied",
    )  # fmt: skip
    pair = [
        {"matchLabels": {"peer.clusterlink.net/name": "s1"}},
        {"matchLabels": {"peer.clusterlink.net/name": "s2"}},
    ]
    fab.host_vars[HUB]["clusterlink_relay_policies"] = [
        {"name": "no-spoke-pair", "action": "deny", "from": pair, "to": pair},
        {"name": "any-pair", "action": "allow", "from": [{}],
         "to": [{}]},
    ]  # fmt: skip
    t0 = time.monotonic()
    recap, _ = fab.playbook("site", "--limit", HUB, "-e", "clusterlink_wait_reachable=0")
    assert no_failures(recap), recap
    report("site.yml --limit hub (relay policy; the hub restarts)", time.monotonic() - t0)
    assert "no-spoke-pair" in fab.sh(HUB, "cat /etc/clusterlink/gateway.yaml")
    fab.wait("s2 -> s1 refused", lambda: fab.get(SPOKE_2, 8080) != fab.token, 60)

    def denied() -> float:
        text = fab.sh(HUB, METRICS)
        return metric(
            text, "clusterlink_relay_streams_total", source="s2", destination="s1",
            result="denied",
        ) - denied_before  # fmt: skip

    count = fab.wait("a denied relay stream counted at the hub", denied, 60)
    report("denied relay streams s2 -> s1 counted at the hub", count, "")
    logged = fab.wait(
        "the refusal in the hub's journal",
        lambda: fab.sh(
            HUB,
            f"journalctl -u {UNIT} --no-pager --since '{since}' | "
            "grep 'relay source=s2 destination=s1 result=denied' || true",
        ).strip(),
        60,
    )
    print(f"relay: hub journal: {logged.splitlines()[0]}")
    status = fab.peers(SPOKE_2)["s1"]["status"]
    fab.wait(
        "s1 unreachable from s2",
        lambda: fab.peers(SPOKE_2)["s1"]["status"]["reachable"] is False,
        90,
    )
    print(f"relay: s2's status of s1 while denied: {status.get('error')}")
