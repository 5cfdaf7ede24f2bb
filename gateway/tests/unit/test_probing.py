"""Which heartbeat probe comes next (full request, HTTP/2 PING, kernel check, none), the tick
grid that coalesces the monitors' wake-ups, and the kernel's TCP view of a real socket."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from types import SimpleNamespace

import pytest

from clusterlink_gateway.config import Heartbeat
from clusterlink_gateway.dataplane.heartbeat import PeerMonitor
from clusterlink_gateway.dataplane.probing import Probe, ProbePlan, next_tick
from clusterlink_gateway.peering.liveness import (
    TcpInfo,
    enable_keepalive,
    parse_tcp_info,
    tcp_info,
)

UP = {"reachable": True, "link_up": True, "answered_within_interval": False}


def settled(full_every: int = 30, ping_every: int = 5) -> ProbePlan:
    """A plan whose last full heartbeat succeeded."""
    plan = ProbePlan(full_every, ping_every)
    plan.record(Probe.FULL, True)
    return plan


def test_first_probe_is_a_full_heartbeat() -> None:
    plan = ProbePlan()
    assert plan.decide(tick=7, **UP) is Probe.FULL
    plan.record(Probe.FULL, False)
    assert plan.decide(tick=8, **UP) is Probe.FULL  # none succeeded yet


def test_between_full_heartbeats_kernel_checks_and_pings() -> None:
    plan = settled()
    kinds = []
    for tick in range(1, 31):
        kind = plan.decide(tick=tick, **UP)
        kinds.append(kind)
        plan.record(kind, True)
    assert kinds[29] is Probe.FULL  # tick 30
    assert [t + 1 for t, k in enumerate(kinds) if k is Probe.PING] == [5, 10, 15, 20, 25]
    assert kinds.count(Probe.TCP) == 24


def test_full_heartbeat_when_not_known_reachable_no_link_or_after_a_failure() -> None:
    plan = settled()
    assert plan.decide(tick=1, **{**UP, "reachable": None}) is Probe.FULL
    assert plan.decide(tick=1, **{**UP, "reachable": False}) is Probe.FULL
    assert plan.decide(tick=1, **{**UP, "link_up": False}) is Probe.FULL
    plan.record(Probe.TCP, False)
    assert plan.decide(tick=2, **UP) is Probe.FULL  # a failed probe is retried as a request
    plan.record(Probe.FULL, True)
    assert plan.decide(tick=3, **UP) is Probe.TCP


def test_a_missed_full_tick_is_made_up() -> None:
    plan = settled(full_every=3, ping_every=100)
    for _ in range(3):
        plan.record(Probe.TCP, True)
    assert plan.decide(tick=4, **UP) is Probe.FULL  # tick 3 was missed (a slow probe)


def test_answered_traffic_skips_the_probe_but_not_the_full_heartbeat() -> None:
    plan = settled()
    traffic = {**UP, "answered_within_interval": True}
    assert plan.decide(tick=1, **traffic) is Probe.SKIP
    assert plan.decide(tick=5, **traffic) is Probe.SKIP
    assert plan.decide(tick=30, **traffic) is Probe.FULL


def test_full_every_one_is_the_old_behaviour() -> None:
    plan = settled(full_every=1)
    assert {plan.decide(tick=t, **UP) for t in range(50)} == {Probe.FULL}


def test_ping_every_one_never_uses_the_kernel_check() -> None:
    plan = settled(ping_every=1)
    assert {plan.decide(tick=t, **UP) for t in range(1, 30)} == {Probe.PING}


def test_ticks_fall_on_a_shared_grid() -> None:
    assert next_tick(10.2, 1.0) == 11.0
    assert next_tick(11.0, 1.0) == 12.0
    assert next_tick(3.1, 0.5) == 3.5
    # two monitors started at different moments wake at the same instant
    assert next_tick(100.01, 1.0) == next_tick(100.93, 1.0)


def test_parse_tcp_info() -> None:
    raw = bytearray(104)
    struct.pack_into("=I", raw, 56, 1500)  # tcpi_last_ack_recv, ms
    struct.pack_into("=I", raw, 68, 250)  # tcpi_rtt, us
    assert parse_tcp_info(bytes(raw)) == TcpInfo(1.5, 0.00025)
    assert parse_tcp_info(bytes(40)) is None


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="Linux only")
def test_kernel_keepalive_answers_are_seen_on_a_real_idle_socket() -> None:
    """With keepalive every 1 s, an idle connection's last ACK stays fresh: the kernel
    answers, no process sends anything."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        try:
            assert enable_keepalive(client, 1)
            time.sleep(2.5)
            info = tcp_info(client)
            assert info is not None
            assert info.last_ack_s < 2.0, info  # a keepalive was answered meanwhile
            assert 0 < info.rtt_s < 1.0
        finally:
            client.close()
            accepted.close()


class _LinkPool:
    """A PeerPool stand-in with a link up whose kernel view and PING answers are set."""

    def __init__(self, last_ack_s: float | None, ping_rtt: float | None) -> None:
        self.connected = True
        self.last_answer = 0.0
        self.on_link_up: object = None
        self.last_ack_s, self.ping_rtt = last_ack_s, ping_rtt
        self.requests = 0

    def tcp_liveness(self, idle: int) -> TcpInfo | None:
        return None if self.last_ack_s is None else TcpInfo(self.last_ack_s, 0.0001)

    async def ping(self) -> float:
        if self.ping_rtt is None:
            await asyncio.sleep(3600)
        return self.ping_rtt or 0.0

    async def request(self, *args: object, **kwargs: object) -> object:
        self.requests += 1
        return SimpleNamespace(status=200, body=b'{"labels": {"a": "b"}}')


TIMINGS = Heartbeat(interval=1, timeout=0.2, failures_down=5, successes_up=3)


@pytest.mark.asyncio
async def test_kernel_check_fails_when_the_peer_kernel_went_silent() -> None:
    monitor = PeerMonitor("p", _LinkPool(0.5, 0.001), TIMINGS)  # type: ignore[arg-type]
    assert monitor.tcp_probe() is True
    monitor.pool.last_ack_s = 5.0  # type: ignore[attr-defined]
    assert monitor.tcp_probe() is False
    assert "no TCP answer" in (monitor.health.error or "")
    monitor.pool.last_ack_s = None  # type: ignore[attr-defined]  # no TCP_INFO here
    assert monitor.tcp_probe() is None


@pytest.mark.asyncio
async def test_ping_sets_the_rtt_and_an_unanswered_ping_fails() -> None:
    pool = _LinkPool(0.5, 0.0042)
    monitor = PeerMonitor("p", pool, TIMINGS)  # type: ignore[arg-type]
    assert await monitor.ping_probe() is True
    assert monitor.health.rtt_ms == 4.2 and monitor.health.last_seen
    pool.ping_rtt = None  # a frozen peer process: its kernel answers, it does not
    assert await monitor.ping_probe() is False
    assert "ping" in (monitor.health.error or "")


@pytest.mark.asyncio
async def test_monitor_sends_a_full_heartbeat_first_then_cheaper_probes() -> None:
    pool = _LinkPool(0.5, 0.001)
    timings = Heartbeat(interval=0.01, timeout=0.2, full_every=7, ping_every=1000)
    monitor = PeerMonitor("p", pool, timings)  # type: ignore[arg-type]
    for _ in range(12):
        ok = await monitor.probe()
        assert ok is True
        monitor.health.state.record(ok)  # what the monitor's loop does
        await asyncio.sleep(0.011)  # the next tick
    assert monitor.health.labels == {"a": "b"}
    assert monitor.probes[Probe.FULL] == pool.requests >= 1
    assert monitor.probes[Probe.FULL] < 12 and monitor.probes[Probe.TCP] > 0
