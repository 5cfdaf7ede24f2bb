"""Upstream TestLoadBalancing{RoundRobin,Static,Random} (clusterlink.md 9.2 scenarios 11-13).

Three gateways each export http-echo with allow-all; cl0 imports it with sources cl0, cl1,
cl2 in that order (cl0 is its own peer). Sequences are pinned exactly as upstream's."""

from __future__ import annotations

import time

import pytest

from support.fabric import Fabric
from support.traffic import get

NAMES = ("cl0", "cl1", "cl2")


def setup_three(fabric: Fabric, scheme: str) -> int:
    for name in NAMES:
        fabric.export_echo(name)
        fabric.allow_all(name)
        fabric.add_peer("cl0", name)
    fabric.client("cl0").create(
        "imports",
        {
            "name": "my-import",
            "spec": {
                "lb_scheme": scheme,
                "sources": [{"peer": n, "export": "http-echo"} for n in NAMES],
            },
        },
    )
    deadline = time.monotonic() + 20
    while not all(p["status"]["reachable"] for p in fabric.client("cl0").list("peers")):
        assert time.monotonic() < deadline, fabric.client("cl0").list("peers")
        time.sleep(0.1)
    return fabric.import_port("cl0", "my-import")


def test_round_robin(fabric: Fabric) -> None:
    port = setup_three(fabric, "round-robin")
    assert [get(port) for _ in range(30)] == [NAMES[(i + 1) % 3] for i in range(30)]
    fabric.client("cl0").delete("exports", "http-echo")
    assert [get(port) for _ in range(30)] == [NAMES[1 + i % 2] for i in range(30)]
    fabric.client("cl1").delete("exports", "http-echo")
    assert [get(port) for _ in range(30)] == ["cl2"] * 30


def test_static(fabric: Fabric) -> None:
    port = setup_three(fabric, "static")
    assert [get(port) for _ in range(30)] == ["cl0"] * 30
    fabric.client("cl0").delete("exports", "http-echo")
    assert [get(port) for _ in range(30)] == ["cl1"] * 30
    fabric.client("cl1").delete("exports", "http-echo")
    assert [get(port) for _ in range(30)] == ["cl2"] * 30


def test_random(fabric: Fabric) -> None:
    port = setup_three(fabric, "random")
    assert set(get(port) for _ in range(100)) == set(NAMES)
    fabric.client("cl0").delete("exports", "http-echo")
    assert set(get(port) for _ in range(30)) == {"cl1", "cl2"}
    fabric.client("cl1").delete("exports", "http-echo")
    assert [get(port) for _ in range(30)] == ["cl2"] * 30


@pytest.mark.parametrize("scheme", ["round-robin", "static", "random"])
def test_unreachable_peer_is_tried_last(fabric: Fabric, scheme: str) -> None:
    """A stopped peer is marked unreachable and then never costs a client its connection."""
    port = setup_three(fabric, scheme)
    fabric["cl1"].stop()
    deadline = time.monotonic() + 20
    while fabric.client("cl0").get("peers", "cl1")["status"]["reachable"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    answers = [get(port) for _ in range(30)]
    assert "cl1" not in answers and all(a in ("cl0", "cl2") for a in answers), answers


def test_a_source_naming_an_unknown_peer_is_just_a_failed_source(fabric: Fabric) -> None:
    fabric.export_echo("cl1")
    fabric.allow_all("cl0", "cl1")
    fabric.add_peer("cl0", "cl1")
    fabric.client("cl0").create(
        "imports",
        {
            "name": "mixed",
            "spec": {
                "lb_scheme": "static",
                "sources": [
                    {"peer": "ghost", "export": "http-echo"},
                    {"peer": "cl1", "export": "http-echo"},
                ],
            },
        },
    )
    port = fabric.import_port("cl0", "mixed")
    assert [get(port) for _ in range(5)] == ["cl1"] * 5
