"""HandshakeGate: caps on unauthenticated peer-port connections, and when to trim the heap."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterlink_gateway.config import ConfigError, load_config
from clusterlink_gateway.peering.gate import TRIM_INTERVAL, HandshakeGate, source_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_total_cap_refuses_the_next_connection_and_frees_a_slot_on_release() -> None:
    gate = HandshakeGate(3, 3, clock=Clock())
    assert [gate.admit(f"10.0.0.{i}") for i in range(3)] == [None] * 3
    refusal = gate.admit("10.0.0.9")
    assert refusal is not None and "listen.max_handshakes (3)" in refusal
    assert gate.refused_total == 1 and gate.pending == 3
    gate.release("10.0.0.1")
    assert gate.admit("10.0.0.9") is None


def test_per_source_cap_keeps_one_address_from_starving_others() -> None:
    gate = HandshakeGate(100, 2, clock=Clock())
    assert gate.admit("127.0.0.2") is None and gate.admit("127.0.0.2") is None
    refusal = gate.admit("127.0.0.2")
    assert refusal is not None and "max_handshakes_per_source (2)" in refusal
    assert "127.0.0.2" in refusal and gate.refused_per_source == 1
    assert gate.admit("127.0.0.3") is None  # another source is not affected
    assert gate.from_source("127.0.0.2") == 2 and gate.pending == 3
    gate.release("127.0.0.2")
    gate.release("127.0.0.2")
    assert gate.from_source("127.0.0.2") == 0
    assert gate.admit("127.0.0.2") is None


def test_ipv6_sources_count_by_their_64_and_mapped_ipv4_as_ipv4() -> None:
    assert (
        source_key("2001:db8:1:2::5") == source_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    )
    assert source_key("2001:db8:1:3::5") != source_key("2001:db8:1:2::5")
    assert source_key("::ffff:10.1.2.3") == "10.1.2.3"
    gate = HandshakeGate(100, 1, clock=Clock())
    assert gate.admit("2001:db8::1") is None
    assert gate.admit("2001:db8::2") is not None  # same /64
    assert gate.admit("2001:db8:0:1::1") is None


def test_release_without_admit_is_a_bug_not_a_negative_count() -> None:
    gate = HandshakeGate(10, 10, clock=Clock())
    with pytest.raises(RuntimeError):
        gate.release("10.0.0.1")
    with pytest.raises(ValueError):
        HandshakeGate(0, 1)


def test_heap_trim_is_due_after_a_drained_burst_at_most_once_per_interval() -> None:
    clock = Clock()
    gate = HandshakeGate(10_000, 10_000, trim_after=100, clock=clock)
    hosts = [f"127.0.0.{i % 200}" for i in range(400)]
    for h in hosts[:50]:
        assert gate.admit(h) is None
    for h in hosts[:50]:
        gate.release(h)
    assert gate.trim_delay() is None  # 50 is no burst
    for h in hosts:
        gate.admit(h)
    assert gate.trim_delay() is None  # not drained yet
    for h in hosts[:300]:
        gate.release(h)
    assert gate.trim_delay() == 0.0  # 100 of a 400 peak left: trim now
    gate.trimmed()
    assert gate.trim_delay() is None  # the peak restarts from what is left
    for h in hosts[:300]:
        gate.admit(h)
    for h in hosts:
        gate.release(h)
    clock.now += 1
    assert gate.trim_delay() == pytest.approx(TRIM_INTERVAL - 1)  # not twice in an interval
    clock.now += TRIM_INTERVAL
    assert gate.trim_delay() == 0.0


def _config(tmp_path: Path, listen: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"peer_name: cl0\nlisten:\n{listen}")
    return path


def test_config_keys_have_defaults_and_clear_errors(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, "  port: 8443\n"))
    assert (cfg.listen.max_handshakes, cfg.listen.max_handshakes_per_source) == (512, 64)
    assert cfg.listen.handshake_timeout == 5.0
    with pytest.raises(ConfigError, match=r"listen\.max_handshakes"):
        load_config(_config(tmp_path, "  max_handshakes: 0\n"))
    with pytest.raises(ConfigError, match="max_handshakes_per_source must not exceed"):
        load_config(_config(tmp_path, "  max_handshakes: 10\n  max_handshakes_per_source: 20\n"))
    with pytest.raises(ConfigError, match=r"listen\.max_handshakes_per_source"):
        load_config(_config(tmp_path, "  max_handshakes_per_source: many\n"))
