"""Reverse links without sockets: the accepting side's rule, the dialer's backoff, and the
heartbeat answer that asks for reverse links."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from clusterlink_gateway.config import Heartbeat
from clusterlink_gateway.dataplane.heartbeat import PeerMonitor
from clusterlink_gateway.peering.lending import MAX_BACKOFF, backoff
from clusterlink_gateway.peering.reverse import (
    REVERSE_LIMIT,
    REVERSE_UNEXPECTED,
    reverse_refusal,
)


def test_reverse_link_only_for_a_dial_false_peer_below_its_limit() -> None:
    assert reverse_refusal("edge", False, 0, 8) is None
    assert reverse_refusal("edge", False, 7, 8) is None
    over = reverse_refusal("edge", False, 8, 8)
    assert over is not None and over.reason == REVERSE_LIMIT and over.name == "edge"
    dials = reverse_refusal("edge", True, 0, 8)
    assert dials is not None and dials.reason == REVERSE_UNEXPECTED and "dial: true" in dials.detail
    unknown = reverse_refusal("edge", None, 0, 8)
    assert unknown is not None and unknown.reason == REVERSE_UNEXPECTED


def test_dialer_backoff_grows_to_a_cap() -> None:
    delays = [backoff(n) for n in range(12)]
    assert delays[0] == 0.0 and delays[1] > 0
    assert delays == sorted(delays) and max(delays) == MAX_BACKOFF
    assert MAX_BACKOFF < 10  # within the heartbeat window of an unreachable peer (10 s)


class _Pool:
    on_link_up = None
    connected = True
    last_answer = 0.0

    def __init__(self, body: dict[str, object]) -> None:
        self.body = json.dumps(body).encode()

    async def request(self, *_: object, **__: object) -> SimpleNamespace:
        return SimpleNamespace(status=200, body=self.body)


async def _probe(body: dict[str, object]) -> tuple[bool, list[int]]:
    asked: list[int] = []
    monitor = PeerMonitor("p", _Pool(body), Heartbeat())  # type: ignore[arg-type]
    monitor.on_reverse = asked.append
    return await monitor.probe(), asked


@pytest.mark.asyncio
async def test_heartbeat_answer_says_how_many_reverse_links_the_peer_wants() -> None:
    assert await _probe({"labels": {}, "reverse_links": 2}) == (True, [2])
    assert await _probe({"labels": {}}) == (True, [0])  # it does not want any (any more)
    for bad in (-1, 65, "2", True, None):
        ok, asked = await _probe({"labels": {}, "reverse_links": bad})
        assert not ok and asked == []
