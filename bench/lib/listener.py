"""A real gateway with its metrics listener on loopback, and a timing loop for its pages
(``bench/fabric_json.py``, ``bench/metrics_scrape.py``)."""

from __future__ import annotations

import http.client
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "gateway" / "tests"))

from support.gateway import GatewayProcess, free_port
from support.pki import TestCA


@contextmanager
def metrics_gateway(root: Path, workers: int) -> Iterator[tuple[GatewayProcess, int]]:
    """Gateway ``cl0`` with ``workers`` processes and a metrics listener: (gateway, port)."""
    port = free_port()
    extra = {"workers": workers, "metrics": {"address": "127.0.0.1", "port": port}}
    gw = GatewayProcess(root, "cl0", TestCA(root / "pki"), extra=extra).start()
    try:
        yield gw, port
    finally:
        gw.stop()


def get(port: int, path: str) -> int:
    """GET ``path`` on the metrics listener (200 expected): the body's size."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200, (path, resp.status)
    return len(body)


def summary(fn: Callable[[], int], runs: int, warmup: int = 10) -> str:
    """Call ``fn`` (it returns a size) ``warmup`` times, then time ``runs`` calls: median, p95
    and the last size, as one line."""
    for _ in range(warmup):
        fn()
    times, size = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        size = fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return (
        f"median {statistics.median(times) * 1000:.2f} ms, "
        f"p95 {times[int(len(times) * 0.95)] * 1000:.2f} ms, {size} bytes"
    )
