"""Reverse links with real gateway processes on loopback: an outbound-only site exports.

cl0 is the public site; cl1 is outbound-only: cl0 holds it as a Peer with ``dial: false`` and no
endpoints (cl0 cannot dial it), cl1 holds cl0 as usual. cl1's heartbeats learn that cl0 wants
reverse links; cl1 opens them and serves cl0's streams on them.

* a service on cl1 is imported and used on cl0; offers and status (``via: reverse``) work;
* policies decide at both ends as on a forward link;
* reverse links from a name cl0 holds with ``dial: true``, from a name that is no Peer, and over
  ``listen.max_reverse_links_per_peer`` are refused, counted by reason and logged;
* a reverse dialer that never answers heartbeats is not reachable, however many links it holds;
* cl0 restarted under a client loop: cl1 dials again, and no connection fails once it is back;
* an import with a forward (cl2) and a reverse (cl1) source fails over both ways.

Figures are printed (``-s``).
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

from test_peer_port import handshake_failures, log_lines, tls_client

from support.fabric import Fabric
from support.traffic import get

REVERSE_ALPN = "clusterlink-reverse/1"
DENY_ALL = {"name": "deny-all", "spec": {"action": "deny", "from": [{}], "to": [{}]}}


def outbound_only(fabric: Fabric, pub: str = "cl0", out: str = "cl1", **listen: Any) -> int:
    """``out`` exports http-echo and is outbound-only towards ``pub``, which imports it."""
    fabric.start(pub, extra={"listen": listen} if listen else None)
    fabric.client(pub).create("peers", {"name": out, "spec": {"dial": False}})
    fabric.add_peer(out, pub, mutual=False)
    fabric.export_echo(out)
    fabric.allow_all(pub, out)
    fabric.client(pub).create(
        "imports", {"name": "http-echo", "spec": {"sources": [{"peer": out}]}}
    )
    return fabric.import_port(pub, "http-echo")


def peer_status(fabric: Fabric, on: str, peer: str) -> dict[str, Any]:
    return fabric.client(on).get("peers", peer)["status"]


def wait_for(predicate, timeout: float = 30.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def accepted(sock: ssl.SSLSocket) -> bool:
    """A reverse link's dialer only listens: the acceptor, as HTTP/2 client, speaks first
    (its preface); a refused link is closed or reset right after the TLS 1.3 handshake."""
    try:
        return sock.recv(1024).startswith(b"PRI * HTTP/2.0")
    except (ssl.SSLError, OSError):
        return False


def eventually(port: int, want: str, timeout: float = 30.0) -> float:
    started = time.monotonic()
    wait_for(lambda: get(port) == want, timeout, f"{want} on port {port}")
    return time.monotonic() - started


def test_service_on_outbound_only_site_is_imported_over_reverse_links(fabric: Fabric) -> None:
    port = outbound_only(fabric)
    took = eventually(port, "cl1")
    wait_for(lambda: peer_status(fabric, "cl0", "cl1")["reachable"] is True, what="reachable")
    status = peer_status(fabric, "cl0", "cl1")
    assert status["via"] == "reverse" and status["links"] >= 1, status
    mine = peer_status(fabric, "cl1", "cl0")
    assert mine["via"] == "direct" and mine["reverse_links"] >= 1, mine
    spec = fabric.client("cl0").get("peers", "cl1")["spec"]
    assert spec["dial"] is False and spec["gateways"] == []
    offers = fabric.client("cl0").raw("GET", "/v1/peers/cl1/offers")
    assert offers.status == 200 and [o["name"] for o in offers.body] == ["http-echo"]
    assert all(get(port) == "cl1" for _ in range(20))

    # an update of the Peer (labels) keeps its reverse links: nothing is dropped or redialed
    def redials() -> int:
        return sum(
            len(log_lines(fabric, msg, "cl1"))
            for msg in ("reverse link lost; dialing again", "cannot open reverse link")
        )

    before = redials()
    fabric.client("cl0").replace(
        "peers", "cl1", {"name": "cl1", "labels": {"tier": "edge"}, "spec": {"dial": False}}
    )
    time.sleep(1)
    assert get(port) == "cl1" and peer_status(fabric, "cl0", "cl1")["links"] == 2
    assert redials() == before
    offers = fabric.client("cl0").raw("GET", "/v1/peers/cl1/offers")
    assert offers.status == 200 and [o["name"] for o in offers.body] == ["http-echo"]
    assert all(get(port) == "cl1" for _ in range(20))
    # cl0 never dialed cl1: cl1's peer port saw no handshake at all
    assert not log_lines(fabric, "peer handshake refused", "cl1")
    print(f"\nreverse: first answer {took:.2f} s after the objects were applied")


def test_policies_decide_at_both_ends_of_a_reverse_link(fabric: Fabric) -> None:
    port = outbound_only(fabric)
    eventually(port, "cl1")
    for side in ("cl1", "cl0"):  # exporter's ingress policy, then importer's egress policy
        fabric.client(side).create("policies", DENY_ALL)
        wait_for(lambda: get(port) != "cl1", 10, f"deny on {side}")
        assert all(get(port) != "cl1" for _ in range(5))
        fabric.client(side).delete("policies", "deny-all")
        eventually(port, "cl1", 10)
    # the exporter's allowed_peers: neither offered to cl0 nor served to it
    export = fabric.client("cl1").get("exports", "http-echo")
    fabric.client("cl1").replace(
        "exports", "http-echo", {**export, "spec": {**export["spec"], "allowed_peers": ["cl9"]}}
    )
    assert fabric.client("cl0").raw("GET", "/v1/peers/cl1/offers").body == []
    assert all(get(port) != "cl1" for _ in range(3))


def test_reverse_links_are_refused_from_unexpected_names_and_over_the_limit(
    fabric: Fabric,
) -> None:
    port = outbound_only(fabric, max_reverse_links_per_peer=3)
    fabric.add_peer("cl0", "cl2", mutual=False)  # cl0 dials cl2: no reverse links from it
    eventually(port, "cl1")
    wait_for(lambda: peer_status(fabric, "cl0", "cl1")["links"] == 2, what="cl1's 2 links")
    before = handshake_failures(fabric)
    ca = fabric.ca.ca_path
    held = []

    def reverse_from(name: str) -> Any:
        sock = tls_client(fabric, fabric.ca.issue(name), ca, alpn=REVERSE_ALPN)
        held.append(sock)
        return sock

    assert not accepted(reverse_from("cl2"))  # a Peer with dial: true
    assert not accepted(reverse_from("cl7"))  # no Peer at all: refused by admission first
    assert accepted(reverse_from("cl1"))  # the third link of cl1: within the limit
    assert not accepted(reverse_from("cl1"))  # the fourth: over it
    wait_for(
        lambda: (
            {r: n - before.get(r, 0) for r, n in handshake_failures(fabric).items()}.items()
            >= {"reverse-unexpected": 1, "unknown-peer": 1, "reverse-limit": 1}.items()
        ),
        10,
        "refusal counters",
    )
    reasons = {line["reason"] for line in log_lines(fabric, "peer handshake refused")}
    assert {"reverse-unexpected", "reverse-limit", "unknown-peer"} <= reasons
    for sock in held:  # the accepted one never answers: with it closed, cl1's links remain
        sock.close()
    wait_for(lambda: peer_status(fabric, "cl0", "cl1")["links"] == 2, 10, "cl1's links only")
    assert [get(port) for _ in range(5)] == ["cl1"] * 5  # the real links kept working


def test_reverse_dialer_that_never_answers_heartbeats_is_unreachable(fabric: Fabric) -> None:
    fabric.start("cl0")
    fabric.client("cl0").create("peers", {"name": "cl1", "spec": {"dial": False}})
    assert peer_status(fabric, "cl0", "cl1")["reachable"] is not True
    sock = tls_client(fabric, fabric.ca.issue("cl1"), fabric.ca.ca_path, alpn=REVERSE_ALPN)
    try:
        assert accepted(sock)  # cl0 plays the HTTP/2 client and sends its preface
        wait_for(lambda: peer_status(fabric, "cl0", "cl1")["links"] == 1, 10, "the silent link")
        time.sleep(3)  # several heartbeats (0.2 s apart, 1 s timeout) went unanswered
        status = peer_status(fabric, "cl0", "cl1")
        assert status["reachable"] is False, status
        assert "cl1" in status["error"] or "timeout" in status["error"].lower() or status["error"]
    finally:
        sock.close()


def test_public_site_restart_under_a_client_loop(fabric: Fabric) -> None:
    port = outbound_only(fabric)
    eventually(port, "cl1")
    results: list[tuple[float, str]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            results.append((time.monotonic(), get(port, timeout=10)))
            time.sleep(0.02)

    client = threading.Thread(target=loop, daemon=True)
    client.start()
    try:
        time.sleep(0.5)
        fabric["cl0"].stop()
        fabric["cl0"].start()
        back = time.monotonic()
        took = eventually(port, "cl1", 60)
        first_ok = back + took
        time.sleep(2)
    finally:
        stop.set()
        client.join(15)
    after = [answer for at, answer in results if at > first_ok]
    assert after and all(answer == "cl1" for answer in after), after[:20]
    print(
        f"\nreverse: cl0 restarted; traffic again {took:.2f} s after it was up, "
        f"{len(after)} requests after that, 0 failed"
    )


def test_import_with_a_forward_and_a_reverse_source_fails_over_both_ways(
    fabric: Fabric,
) -> None:
    outbound_only(fabric)
    fabric.export_echo("cl2")
    fabric.allow_all("cl2")
    fabric.add_peer("cl0", "cl2")
    fabric.client("cl0").replace(
        "imports",
        "http-echo",
        {"name": "http-echo", "spec": {"sources": [{"peer": "cl1"}, {"peer": "cl2"}]}},
    )
    port = fabric.import_port("cl0", "http-echo")
    wait_for(lambda: {get(port) for _ in range(6)} == {"cl1", "cl2"}, 30, "both sources")
    for down, up in (("cl1", "cl2"), ("cl2", "cl1")):
        fabric[down].stop()
        answers = [get(port, timeout=10) for _ in range(10)]
        assert answers == [up] * 10, (down, answers)
        fabric[down].start()
        wait_for(lambda: {get(port) for _ in range(6)} == {"cl1", "cl2"}, 60, f"{down} back")


def test_status_after_a_change_of_path_comes_from_the_new_path(fabric: Fabric) -> None:
    """cl0 reaches cl1 directly, then its Peer says ``dial: false``: from that PUT on, status
    may say "reachable" only once a heartbeat went over a link of the new path (a reverse link),
    never from the old, drained forward links (site.yml's wait would pass on a stale verdict)."""
    fabric.start("cl0")
    fabric.add_peer("cl0", "cl1")  # mutual: cl1 holds cl0 too (and dials it)
    fabric.export_echo("cl1")
    fabric.allow_all("cl0", "cl1")
    wait_for(lambda: peer_status(fabric, "cl0", "cl1")["reachable"] is True, what="direct")
    assert peer_status(fabric, "cl0", "cl1")["via"] == "direct"
    fabric.client("cl0").replace("peers", "cl1", {"name": "cl1", "spec": {"dial": False}})
    samples = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = peer_status(fabric, "cl0", "cl1")
        samples.append((status["reachable"], status["links"]))
        if status["reachable"] is True:
            break
        time.sleep(0.02)
    # the first sample is read right after the PUT: unknown, or false, not the old verdict
    assert samples[0][0] is not True, samples[:5]
    assert samples[-1][0] is True and samples[-1][1] >= 1, samples[-5:]
    assert peer_status(fabric, "cl0", "cl1")["via"] == "reverse"
