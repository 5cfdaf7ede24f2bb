"""The fabric page's data: the refusal ring, counts summed over processes, the snapshot of a
real registry, and the listener's routes (a real aiohttp server on loopback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from clusterlink_gateway.dataplane.imports import _refusal_class
from clusterlink_gateway.dataplane.refusals import SIZE, RecentRefusals
from clusterlink_gateway.metrics import Metrics
from clusterlink_gateway.model.objects import KINDS
from clusterlink_gateway.registry import Registry
from clusterlink_gateway.store.sqlite import Store
from clusterlink_gateway.telemetry.fabric import snapshot, traffic
from clusterlink_gateway.telemetry.families import decode, encode, merge
from clusterlink_gateway.telemetry.listener import build_metrics_app


def test_refusal_ring_keeps_the_last_ones_newest_first() -> None:
    ticks = iter(range(1000))
    ring = RecentRefusals(clock=lambda: float(next(ticks)))
    for i in range(SIZE + 7):
        ring.add("ingress", f"p{i}", "db", "denied", policy="deny-all", decision="deny by policy")
    ring.add("egress", "cl1", "web", "no-source", import_name="web", detail="unreachable: x")
    recent = ring.recent()
    assert len(recent) == SIZE and ring.total == SIZE + 8
    assert recent[0] == {
        "time": float(SIZE + 7),
        "side": "egress",
        "peer": "cl1",
        "export": "web",
        "reason": "no-source",
        "policy": None,
        "decision": None,
        "import_name": "web",
        "detail": "unreachable: x",
    }
    assert recent[1]["peer"] == f"p{SIZE + 6}" and recent[-1]["peer"] == "p8"
    assert json.loads(json.dumps(recent)) == recent


def test_egress_refusal_classes() -> None:
    assert _refusal_class("denied by egress policy") == "denied"
    assert _refusal_class("unreachable: timeout") == "unreachable"
    assert _refusal_class("403: denied by ingress policy (deny by policy x)") == "peer-refused"
    assert _refusal_class("unknown peer") == "unknown-peer"


def process(connections: int, closed: int, sent: int) -> Metrics:
    m = Metrics()
    m.import_connections.labels("db").inc(connections)
    m.import_closed.labels("db").inc(closed)
    m.import_failures.labels("db").inc(1)
    m.import_bytes.labels("db", "in").inc(sent)
    m.import_bytes.labels("db", "out").inc(2 * sent)
    m.export_connections.labels("web", "cl1").inc(connections)
    m.export_connections.labels("web", "cl2").inc(1)
    m.export_closed.labels("web", "cl1").inc(closed)
    m.export_bytes.labels("web", "in").inc(sent)
    return m


def test_traffic_sums_every_process_and_calling_peer() -> None:
    main, worker = process(5, 3, 100), process(2, 2, 10)
    families = merge(
        [("0", main.registry.collect()), ("1", decode(encode(worker.registry.collect())))]
    )
    counts = traffic(families)
    assert counts["imports"] == {
        "db": {"connections": 7, "closed": 5, "failures": 2, "bytes_in": 110, "bytes_out": 220}
    }
    assert counts["exports"] == {
        "web": {"connections": 9, "closed": 5, "failures": 0, "bytes_in": 110, "bytes_out": 0}
    }


async def registry(tmp_path: Path) -> Registry:
    reg = Registry(Store(tmp_path / "state.db"), import_bind="127.0.0.1", port_range=(41000, 41999))
    await reg.store.open()
    await reg.load()
    await reg.create(
        KINDS["peers"],
        {"name": "cl1", "labels": {"zone": "a"}, "spec": {"gateways": [{"host": "h", "port": 1}]}},
    )
    await reg.create(KINDS["peers"], {"name": "cl2", "spec": {"dial": False}})
    await reg.create(
        KINDS["imports"],
        {"name": "db", "spec": {"sources": [{"peer": "cl1"}, {"peer": "cl2", "export": "pg"}]}},
    )
    await reg.create(
        KINDS["exports"],
        {"name": "web", "spec": {"host": "10.9.9.9", "port": 8080, "allowed_peers": ["cl1"]}},
    )
    return reg


@pytest.mark.asyncio
async def test_snapshot_of_a_registry(tmp_path: Path) -> None:
    reg = await registry(tmp_path)
    reg.status_providers["peers"] = lambda e: {
        "reachable": e.name == "cl1",
        "rtt_ms": 1.5,
        "links": 2,
        "via": "direct" if e.name == "cl1" else "reverse",
        "reverse_links": 0,
        "labels": {"learned": "yes"},
    }
    families = merge([("0", process(4, 1, 50).registry.collect())])
    refusals = [{"side": "ingress", "peer": "cl2", "reason": "denied", "policy": "p"}]
    doc = snapshot(
        reg,
        {"peer_name": "cl0", "labels": {"site": "x"}},
        families,
        {"0": True, "1": False},
        refusals,
        refusals_total=3,
    )
    assert doc["gateway"] == {"name": "cl0", "labels": {"site": "x"}}
    cl1, cl2 = doc["peers"]
    assert cl1["name"] == "cl1" and cl1["reachable"] is True and cl1["via"] == "direct"
    assert cl1["labels"] == {"learned": "yes", "zone": "a"} and cl1["rtt_ms"] == 1.5
    assert cl2["dial"] is False and cl2["via"] == "reverse" and cl2["reachable"] is False
    (imp,) = doc["imports"]
    assert imp["sources"] == [{"peer": "cl1", "export": "db"}, {"peer": "cl2", "export": "pg"}]
    assert imp["active"] == 3 and imp["connections"] == 4 and imp["bytes_out"] == 100
    (exp,) = doc["exports"]
    assert exp == {
        "name": "web",
        "allowed_peers": ["cl1"],
        "active": 4,
        "connections": 5,
        "failures": 0,
        "bytes_in": 50,
        "bytes_out": 0,
    }
    assert "10.9.9.9" not in json.dumps(doc)  # no export backend address
    assert doc["processes"]["answered"] == ["0"] and doc["processes"]["missing"] == ["1"]
    assert doc["processes"]["scope"]  # with workers the page says what covers what
    assert doc["refusals"] == refusals and doc["refusals_total"] == 3
    await reg.store.close()


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.mark.asyncio
async def test_listener_serves_the_page_only_when_asked() -> None:
    async def scrape() -> bytes:
        return b"# nothing\n"

    async def fabric() -> dict[str, Any]:
        return {"gateway": {"name": "cl0"}}

    runner, base = await serve(build_metrics_app(scrape, fabric))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/fabric.json") as resp:
                assert resp.status == 200 and await resp.json() == {"gateway": {"name": "cl0"}}
            async with session.get(f"{base}/fabric") as resp:
                page = await resp.text()
                assert resp.status == 200 and 'src="fabric/app.js"' in page
                assert "http" not in page.replace('href="fabric.json"', "")  # nothing remote
            async with session.get(f"{base}/fabric/app.js") as resp:
                assert resp.status == 200 and "fabric.json" in await resp.text()
            async with session.post(f"{base}/fabric.json") as resp:
                assert resp.status == 405
    finally:
        await runner.cleanup()
    runner, base = await serve(build_metrics_app(scrape))
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/fabric", "/fabric.json", "/fabric/app.js"):
                async with session.get(f"{base}{path}") as resp:
                    assert resp.status == 404, path
            async with session.get(f"{base}/metrics") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
