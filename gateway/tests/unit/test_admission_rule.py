"""The admission rule of the peer port and its per-name log limiter (pure, no sockets)."""

from __future__ import annotations

from typing import Any

from clusterlink_gateway.peering.admission import (
    NO_DNS_SAN,
    UNKNOWN_PEER,
    Admission,
    Admitted,
    RefusalLog,
    Refused,
    decide,
    dns_name,
)
from clusterlink_gateway.policy.attributes import asserted_client_ip


def cert(cn: str | None = None, *dns: str, ip: str | None = None) -> dict[str, Any]:
    """A certificate as ``getpeercert()`` describes it."""
    out: dict[str, Any] = {}
    if cn:
        out["subject"] = ((("commonName", cn),),)
    san = [("DNS", d) for d in dns] + ([("IP Address", ip)] if ip else [])
    if san:
        out["subjectAltName"] = tuple(san)
    return out


PEERS = {"cl1", "cl2"}


def test_a_peer_with_a_dns_san_is_admitted_under_its_first_dns_san() -> None:
    verdict = decide(cert("ignored", "cl1", "cl2"), is_peer=PEERS.__contains__, open_fabric=False)
    assert verdict == Admitted("cl1", fabric=True)


def test_a_name_that_is_not_a_peer_is_refused_as_unknown_peer() -> None:
    verdict = decide(cert("cl9", "cl9"), is_peer=PEERS.__contains__, open_fabric=False)
    assert isinstance(verdict, Refused)
    assert (verdict.reason, verdict.name) == (UNKNOWN_PEER, "cl9")
    assert "cl9" in verdict.detail


def test_a_cn_only_certificate_is_refused_even_if_the_cn_is_a_peer() -> None:
    for open_fabric in (False, True):
        verdict = decide(cert("cl1"), is_peer=PEERS.__contains__, open_fabric=open_fabric)
        assert isinstance(verdict, Refused)
        assert (verdict.reason, verdict.name) == (NO_DNS_SAN, "cl1")


def test_an_ip_san_is_not_a_name() -> None:
    verdict = decide(cert(None, ip="127.0.0.1"), is_peer=None, open_fabric=True)
    assert isinstance(verdict, Refused) and verdict.reason == NO_DNS_SAN
    assert verdict.name is None
    assert dns_name(None) is None and dns_name({}) is None


def test_open_fabric_admits_any_dns_san_name() -> None:
    assert decide(cert(None, "cl9"), is_peer=PEERS.__contains__, open_fabric=True) == Admitted(
        "cl9"
    )
    assert decide(cert(None, "cl9"), is_peer=None, open_fabric=False) == Admitted("cl9")


def test_a_foreign_anchor_marks_the_link_as_not_fabric() -> None:
    verdict = decide(cert(None, "cl1"), is_peer=PEERS.__contains__, open_fabric=False, fabric=False)
    assert verdict == Admitted("cl1", fabric=False)


def test_admission_follows_the_live_peer_set() -> None:
    peers: set[str] = set()
    admission = Admission(peers.__contains__)
    assert not admission.admits("cl1")
    peers.add("cl1")  # created: admitted at once
    assert admission.admits("cl1")
    peers.discard("cl1")
    assert not admission.admits("cl1")
    assert Admission(peers.__contains__, open_fabric=True).admits("cl1")
    assert isinstance(admission.check(None), Refused)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusal_log_allows_one_line_per_reason_and_name_per_window() -> None:
    clock = Clock()
    limiter = RefusalLog(60.0, clock=clock)
    assert limiter.allow(UNKNOWN_PEER, "cl9") == (True, 0)
    for _ in range(49):
        clock.now += 0.5
        assert limiter.allow(UNKNOWN_PEER, "cl9") == (False, 0)
    # other names and other reasons have their own budget
    assert limiter.allow(UNKNOWN_PEER, "cl8") == (True, 0)
    assert limiter.allow(NO_DNS_SAN, "cl9") == (True, 0)
    clock.now = 1000.0 + 60.0
    assert limiter.allow(UNKNOWN_PEER, "cl9") == (True, 49)  # the next line says how many
    assert limiter.allow(UNKNOWN_PEER, "cl9") == (False, 0)


def test_refusal_log_memory_is_bounded() -> None:
    clock = Clock()
    limiter = RefusalLog(60.0, clock=clock, max_keys=100)
    for i in range(1000):
        assert limiter.allow(UNKNOWN_PEER, f"n{i}")[0]
    assert len(limiter) <= 100
    clock.now += 61
    limiter.allow(UNKNOWN_PEER, "fresh")
    assert len(limiter) == 1  # expired keys are dropped first


def test_client_attributes_honoured_by_default_only_within_the_fabric() -> None:
    assert asserted_client_ip("10.0.0.1", None, fabric=True) == "10.0.0.1"
    assert asserted_client_ip("10.0.0.1", None, fabric=False) is None
    assert asserted_client_ip("10.0.0.1", "honor", fabric=False) == "10.0.0.1"
    assert asserted_client_ip("10.0.0.1", "ignore", fabric=True) is None
    assert asserted_client_ip(None, "honor", fabric=True) is None
