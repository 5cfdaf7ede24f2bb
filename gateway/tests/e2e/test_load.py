"""Load: thousands of concurrent connections held through a gateway pair, then churn; no
file-descriptor or memory growth once it is over.

CI runs the short mode (5,000 held 5 s, churn 10 s). ``CLUSTERLINK_LOAD_FULL=1`` selects the
documented full run (5,000 held 60 s, churn 10 min; docs/load.md);
``CLUSTERLINK_LOAD_CONNECTIONS``, ``CLUSTERLINK_LOAD_SECONDS``, ``CLUSTERLINK_CHURN_SECONDS`` and
``CLUSTERLINK_CHURN_CLIENTS`` override single figures, and ``CLUSTERLINK_LOAD_REPORT=FILE``
writes the measured figures as JSON.

Memory bound: the churn runs in ten equal segments and RSS is sampled after each; the growth
from the end of the first (warm) segment to the end must stay below CHURN_RSS_GROWTH_KIB. The
h2 library remembers up to 65,536 closed streams per link (~89 bytes each), so RSS rises by
up to ~5.6 MiB per link before that levels off; two links per peer make ~11 MiB of expected,
bounded growth. Over the full run (~200,000 connections on this machine) the bound then
catches a leak of ~25 bytes per connection; over CI's run, one of a few KiB. The full run of
2026-11-21 exceeded it (docs/load.md).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import selectors
import socket
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from support.fabric import Fabric

FULL = os.environ.get("CLUSTERLINK_LOAD_FULL", "") not in ("", "0")
CONCURRENT = int(os.environ.get("CLUSTERLINK_LOAD_CONNECTIONS", "5000"))
HOLD_SECONDS = float(os.environ.get("CLUSTERLINK_LOAD_SECONDS", "60" if FULL else "5"))
CHURN_SECONDS = float(os.environ.get("CLUSTERLINK_CHURN_SECONDS", "600" if FULL else "10"))
CHURN_CLIENTS = int(os.environ.get("CLUSTERLINK_CHURN_CLIENTS", "4"))
CHURN_RSS_GROWTH_KIB = 16 * 1024
REPORT = os.environ.get("CLUSTERLINK_LOAD_REPORT")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _churn_client(port: int, source: str, end: float, out: Connection) -> None:
    done = errors = 0
    samples: list[str] = []
    while time.monotonic() < end:
        try:
            with socket.create_connection(
                ("127.0.0.1", port), timeout=10, source_address=(source, 0)
            ) as sock:
                ok = sock.recv(1) == b"!"
                sock.sendall(b"x")
                ok = sock.recv(1) == b"x" and ok
        except OSError as exc:
            ok = False
            if len(samples) < 5:
                samples.append(repr(exc))
        done += 1
        errors += not ok
    out.send((done, errors, samples))


def churn(port: int, seconds: float, clients: int) -> tuple[int, int, list[str]]:
    """Short connections from ``clients`` processes (each from its own 127.0.0.x source
    address, so the client side never runs out of ports) for ``seconds``:
    (done, errors, the first error messages)."""
    ctx = multiprocessing.get_context("fork")
    end = time.monotonic() + seconds
    procs, pipes = [], []
    for i in range(clients):
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_churn_client, args=(port, f"127.0.0.{2 + i}", end, send))
        proc.start()
        procs.append(proc)
        pipes.append(receive)
    results = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join()
    return (
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        [m for r in results for m in r[2]],
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class HoldSink:
    """Accepts connections, answers each with one byte and echoes what it gets; holds them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ)
        self.conns: set[socket.socket] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.1):
                if key.fileobj is self.sock:
                    try:
                        conn, _ = self.sock.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    conn.send(b"!")
                    self.conns.add(conn)
                    self.sel.register(conn, selectors.EVENT_READ)
                else:
                    conn = key.fileobj
                    try:
                        data = conn.recv(65536)
                    except (BlockingIOError, ConnectionResetError):
                        data = b""
                    if data:
                        conn.send(data)
                    else:
                        self.sel.unregister(conn)
                        self.conns.discard(conn)
                        conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for conn in self.conns:
            conn.close()
        self.sock.close()


@pytest.mark.slow
@pytest.mark.timeout(int(HOLD_SECONDS + CHURN_SECONDS + 300))
def test_concurrent_connections_then_churn(fabric: Fabric) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * CONCURRENT + 1000
    if hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    sink = HoldSink()
    try:
        fabric.start("cl0")
        fabric.start("cl1")
        port = fabric.link_service("cl0", "cl1", "sink", sink.port)
        pids = {n: fabric[n].proc.pid for n in ("cl0", "cl1")}
        # warm up (links, allocator) before taking the baseline
        first = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert first.recv(1) == b"!"
        first.close()
        time.sleep(0.5)
        base = {n: (fds(p), rss_kib(p)) for n, p in pids.items()}

        clients = []
        for i in range(CONCURRENT):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=30))
            if i % 500 == 499:
                time.sleep(0.05)
        for sock in clients:  # every one of them is really carried end to end
            assert sock.recv(1) == b"!"
        held = {n: (fds(p), rss_kib(p)) for n, p in pids.items()}
        assert held["cl1"][0] - base["cl1"][0] >= CONCURRENT
        deadline = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:
            time.sleep(min(1.0, HOLD_SECONDS))
        for sock in clients[:: max(1, CONCURRENT // 100)]:  # still alive at the end
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        for sock in clients:
            sock.close()
        per_conn = {n: (held[n][1] - base[n][1]) / CONCURRENT for n in pids}

        # churn: short connections as fast as the clients can make them (the gateways' CPU
        # is the limit on this machine); RSS sampled once warm, and at the end
        cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
        load_start = os.getloadavg()
        started = time.monotonic()
        done = errors = 0
        samples: list[str] = []
        series: dict[str, list[int]] = {n: [] for n in pids}
        for _ in range(10):
            d, e, m = churn(port, CHURN_SECONDS / 10, CHURN_CLIENTS)
            done, errors, samples = done + d, errors + e, samples + m
            for n, p in pids.items():
                series[n].append(rss_kib(p))
        elapsed = time.monotonic() - started
        warm = {n: series[n][0] for n in pids}
        cpu = {n: round(cpu_seconds(p) - cpu0[n], 1) for n, p in pids.items()}
        assert errors == 0 and done > 100, (done, errors, samples)

        # afterwards: descriptors back to the baseline, memory not growing with the churn
        deadline = time.monotonic() + 15
        while any(fds(p) > base[n][0] + 10 for n, p in pids.items()):
            assert time.monotonic() < deadline, {n: (base[n][0], fds(p)) for n, p in pids.items()}
            time.sleep(0.2)
        after = {n: (fds(p), rss_kib(p)) for n, p in pids.items()}
        figures = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "mode": "full" if FULL else "short",
            "held": CONCURRENT,
            "hold_s": HOLD_SECONDS,
            "churn_s": CHURN_SECONDS,
            "churn_clients": CHURN_CLIENTS,
            "churn_connections": done,
            "churn_rate_per_s": round(done / elapsed),
            "errors": errors,
            "gateway_cpu_s_during_churn": cpu,
            "load_avg_start": load_start,
            "load_avg_end": os.getloadavg(),
            "fds_base_held_after": {n: (base[n][0], held[n][0], after[n][0]) for n in pids},
            "rss_kib_base_held_warm_after": {
                n: (base[n][1], held[n][1], warm[n], after[n][1]) for n in pids
            },
            "rss_kib_per_held_connection": {n: round(per_conn[n], 1) for n in pids},
            "rss_kib_during_churn_by_tenth": series,
        }
        print("\nload: " + json.dumps(figures))
        if REPORT:
            Path(REPORT).write_text(json.dumps(figures, indent=2) + "\n")
        for n in pids:
            assert after[n][1] - warm[n] < CHURN_RSS_GROWTH_KIB, (n, warm[n], after[n][1])
            assert after[n][1] - base[n][1] < 64 * 1024, (n, base[n][1], after[n][1])
            assert after[n][0] <= base[n][0] + 10, (n, base[n][0], after[n][0])
        status = fabric.client("cl1").status()
        assert status["ready"] and fabric.client("cl0").status()["ready"]
    finally:
        sink.close()


@pytest.mark.slow
def test_new_connection_cost_does_not_grow_with_open_connections(fabric: Fabric) -> None:
    """Opening a stream used to walk every stream of the link (h2's open-stream count): the CPU
    per new connection grew with the connections held open. This measures it at 0-3,000 held
    and prints the figures; it asserts only that every connection worked (no timing asserts)."""
    held_steps, batch = (0, 1000, 2000, 3000), 300
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * held_steps[-1] + 1000
    if hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    sink = HoldSink()
    held: list[socket.socket] = []
    try:
        fabric.start("cl0")
        fabric.start("cl1")
        port = fabric.link_service("cl0", "cl1", "sink", sink.port)
        pids = [fabric[n].proc.pid for n in ("cl0", "cl1")]
        ms_per_conn: dict[int, float] = {}
        for target in held_steps:
            while len(held) < target:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                held.append(sock)
                assert sock.recv(1) == b"!"
            before = sum(cpu_seconds(p) for p in pids)
            for _ in range(batch):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    assert sock.recv(1) == b"!"
            ms_per_conn[target] = (sum(cpu_seconds(p) for p in pids) - before) * 1000 / batch
        print(f"\npair CPU-ms per new connection by connections held open: {ms_per_conn}")
    finally:
        for sock in held:
            sock.close()
        sink.close()
