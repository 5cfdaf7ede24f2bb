"""The metrics of every process in one exposition: the families codec and merge, and the
main process's channel to a worker (a real socketpair, a real worker-side server)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from clusterlink_gateway.dataplane.refusals import RecentRefusals
from clusterlink_gateway.dataplane.refusals import merge as merge_refusals
from clusterlink_gateway.metrics import Metrics
from clusterlink_gateway.telemetry.channel import WorkerMetricsClient, serve_worker_metrics
from clusterlink_gateway.telemetry.families import decode, encode, merge, render
from clusterlink_gateway.telemetry.gather import gather


def registry(connections: int) -> CollectorRegistry:
    r = CollectorRegistry()
    Counter("demo_connections", "Connections", ["import_name"], registry=r).labels("db").inc(
        connections
    )
    Gauge("demo_up", "Up", registry=r).set(1)
    Histogram("demo_seconds", "Latency", buckets=(0.1, 1), registry=r).observe(0.5)
    return r


def parsed(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_encode_decode_round_trip_is_exact() -> None:
    families = list(registry(3).collect())
    again = decode(encode(families))
    assert [(f.name, f.type, f.documentation) for f in again] == [
        (f.name, f.type, f.documentation) for f in families
    ]
    assert [f.samples for f in again] == [
        [(s.name, s.labels, s.value, None, None, None) for s in f.samples] for f in families
    ]


@pytest.mark.parametrize("data", [b"", b"{}", b"[[1]]", b'[["a","b","counter","",[["x",1,2]]]]'])
def test_decode_refuses_what_encode_cannot_make(data: bytes) -> None:
    with pytest.raises(ValueError, match="metric families"):
        decode(data)


def test_merge_labels_each_process_and_keeps_one_family_per_name() -> None:
    text = render(
        merge([("0", registry(3).collect()), ("1", decode(encode(registry(5).collect())))])
    )
    samples = parsed(text)
    key = ("demo_connections_total", (("import_name", "db"), ("worker", "0")))
    assert samples[key] == 3
    assert samples[("demo_connections_total", (("import_name", "db"), ("worker", "1")))] == 5
    assert samples[("demo_seconds_bucket", (("le", "1.0"), ("worker", "1")))] == 1
    assert text.count(b"# TYPE demo_connections_total counter") == 1
    assert text.count(b"# TYPE demo_seconds histogram") == 1


@pytest.mark.asyncio
async def test_gather_asks_every_worker_and_reports_the_silent_one() -> None:
    main = Metrics()
    main.import_connections.labels("db").inc(2)
    worker = Metrics()
    worker.import_connections.labels("db").inc(7)

    async def answers(within: float) -> bytes | None:
        return encode(worker.registry.collect())

    async def silent(within: float) -> bytes | None:
        return None

    samples = parsed(await gather(main.registry, {"1": answers, "2": silent}))
    name = "clusterlink_import_connections_total"
    assert samples[(name, (("import_name", "db"), ("worker", "0")))] == 2
    assert samples[(name, (("import_name", "db"), ("worker", "1")))] == 7
    up = {k[1][0][1]: v for k, v in samples.items() if k[0] == "clusterlink_worker_up"}
    assert up == {"0": 1, "1": 1, "2": 0}


@pytest.mark.asyncio
async def test_channel_answers_drops_a_late_reply_and_ends_with_the_worker() -> None:
    """The worker side runs its own event loop in a thread (a worker is another process);
    its first answer comes after the client gave up on it."""
    ours, theirs = socket.socketpair()
    calls = 0

    def collect() -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            time.sleep(1.0)
        return b"reply-%d" % calls

    worker = threading.Thread(target=asyncio.run, args=(serve_worker_metrics(theirs, collect),))
    worker.start()
    client = WorkerMetricsClient(ours)
    try:
        assert await client.fetch(0.2) is None  # no answer in time
        assert await client.fetch(10) == b"reply-2"  # the late "reply-1" was dropped
        assert await client.fetch(10) == b"reply-3"
        theirs.shutdown(socket.SHUT_RDWR)  # the worker goes away
        worker.join(10)
        assert not worker.is_alive()
        assert await client.fetch(10) is None
        assert client.closed and await client.fetch(10) is None
    finally:
        client.close()
        worker.join(10)


@pytest.mark.asyncio
async def test_channel_answers_each_kind_and_nothing_for_an_unknown_one() -> None:
    """``refusals`` gets its own answer on the same pair; an unknown kind an empty one."""
    ours, theirs = socket.socketpair()
    serve = serve_worker_metrics(theirs, lambda: b"families", refusals=lambda: b'{"total": 3}')
    worker = threading.Thread(target=asyncio.run, args=(serve,))
    worker.start()
    client = WorkerMetricsClient(ours)
    try:
        assert await client.fetch(10) == b"families"
        assert await client.fetch(10, kind="refusals") == b'{"total": 3}'
        assert await client.fetch(10, kind="nonsense") == b""
        assert await client.fetch(10, kind="metrics") == b"families"
    finally:
        client.close()
        worker.join(10)


def test_refusals_of_every_process_merge_newest_first() -> None:
    main, worker = (
        RecentRefusals(size=3, clock=iter([1.0, 4.0]).__next__),
        RecentRefusals(size=3, clock=iter([2.0, 3.0, 5.0]).__next__),
    )
    main.add("egress", "cl1", "web", "denied")
    main.add("egress", "cl1", "web", "denied")
    for _ in range(3):
        worker.add("ingress", "cl2", "db", "not-allowed")
    docs = {"0": json.loads(main.encode()), "1": json.loads(worker.encode())}
    rows, total = merge_refusals(docs, size=4)
    assert [(r["time"], r["worker"]) for r in rows] == [
        (5.0, "1"),
        (4.0, "0"),
        (3.0, "1"),
        (2.0, "1"),
    ]
    assert total == 5
