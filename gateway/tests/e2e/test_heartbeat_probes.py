"""Heartbeats between full requests (HTTP/2 PINGs, the kernel's keepalive view), on real gateway
processes on loopback, with the fast test timings (interval 0.2 s, timeout 1 s, 5 failures):

* a frozen peer process (SIGSTOP: its kernel still answers TCP keepalives, the process does not
  answer PINGs) and a killed one are marked unreachable within the configured window;
* the RTT in the status is measured while the probes are PINGs and kernel checks;
* an outbound-only site learns the reverse-links count from a later full heartbeat: its peer
  switches to ``dial: false`` after the site's probes became cheap ones.

Generous deadlines; the detection times are printed (``-s``), not asserted tightly.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from support.fabric import FAST_HEARTBEAT, Fabric

# How long a reachable peer may take to be marked down: the next PING (ping_every intervals),
# then failures_down probes, each bounded by the timeout, at the interval.
WINDOW = 5 * FAST_HEARTBEAT["interval"] + FAST_HEARTBEAT["failures_down"] * (
    FAST_HEARTBEAT["interval"] + FAST_HEARTBEAT["timeout"]
)


def status(fabric: Fabric, on: str, peer: str) -> dict[str, Any]:
    return fabric.client(on).get("peers", peer)["status"]


def wait_for(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def meshed(fabric: Fabric) -> None:
    fabric.add_peer("cl0", "cl1")
    wait_for(lambda: status(fabric, "cl0", "cl1")["reachable"] is True, 30, "cl1 reachable")
    time.sleep(2.0)  # past the first full heartbeats: the probes are PINGs and kernel checks


def test_frozen_peer_is_marked_unreachable_within_the_window(fabric: Fabric) -> None:
    meshed(fabric)
    before = status(fabric, "cl0", "cl1")
    assert before["rtt_ms"] is not None and before["rtt_ms"] > 0, before
    fabric["cl1"].signal(signal.SIGSTOP)
    try:
        took = wait_for(
            lambda: status(fabric, "cl0", "cl1")["reachable"] is False, 60, "cl1 unreachable"
        )
        print(f"frozen peer marked unreachable after {took:.2f} s (window {WINDOW:.1f} s)")
        assert status(fabric, "cl0", "cl1")["error"]
    finally:
        fabric["cl1"].signal(signal.SIGCONT)
    wait_for(lambda: status(fabric, "cl0", "cl1")["reachable"] is True, 60, "cl1 back")


def test_killed_peer_is_marked_unreachable_within_the_window(fabric: Fabric) -> None:
    meshed(fabric)
    fabric["cl1"].kill9()
    took = wait_for(
        lambda: status(fabric, "cl0", "cl1")["reachable"] is False, 60, "cl1 unreachable"
    )
    print(f"killed peer marked unreachable after {took:.2f} s (window {WINDOW:.1f} s)")


def test_reverse_links_count_reaches_the_outbound_site_from_a_later_full_heartbeat(
    fabric: Fabric,
) -> None:
    meshed(fabric)  # cl1's probes of cl0 are cheap ones now; cl0 dials cl1 too
    assert status(fabric, "cl1", "cl0")["reverse_links"] == 0
    fabric.client("cl0").replace("peers", "cl1", {"name": "cl1", "spec": {"dial": False}})
    took = wait_for(
        lambda: status(fabric, "cl1", "cl0")["reverse_links"] >= 1, 60, "reverse links on cl1"
    )
    print(f"reverse-links count reached the outbound-only site after {took:.2f} s")
    wait_for(lambda: status(fabric, "cl0", "cl1")["links"] >= 1, 30, "cl0 uses them")
    assert status(fabric, "cl0", "cl1")["via"] == "reverse"
