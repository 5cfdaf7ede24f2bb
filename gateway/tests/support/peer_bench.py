"""Throughput of a gateway pair vs a direct TCP connection, on loopback.

    cd /work/main && .venv/bin/python -m support.peer_bench --seconds 5 --streams 1 8

(with ``PYTHONPATH=gateway/tests``). Four processes, like ``reference/perf-anchors.md``: a sink,
the exporting gateway (peer server splicing to the sink), the importing gateway (TCP listener
carrying each connection as a CONNECT stream over a ``PeerPool``) and this process as the load
generator. Prints Gbit/s received by the sink and the gateways' CPU seconds per GB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

LOCAL = "127.0.0.1"
CHUNK = 256 << 10


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- roles run in child processes --------------------------------------------------------------


async def _serve_forever(ready: dict[str, object]) -> None:
    print(json.dumps(ready), flush=True)
    await asyncio.Event().wait()


async def run_sink() -> None:
    from .peering import Sink

    server = await asyncio.get_running_loop().create_server(Sink, LOCAL, 0)
    await _serve_forever({"port": server.sockets[0].getsockname()[1]})


async def run_exporter(pki: Path, sink_port: int, window: int) -> None:
    from clusterlink_gateway.peering.h2core import Limits

    from .peering import Exporter, TLSContexts

    tls = TLSContexts(pki / "cl1.crt", pki / "cl1.key", pki / "test-fabric-ca.pem")
    exporter = await Exporter(tls, {"sink": sink_port}).start(limits=_limits(Limits, window))
    await _serve_forever({"port": exporter.port})


async def run_importer(pki: Path, peer_port: int, window: int, links: int) -> None:
    from clusterlink_gateway.peering import PeerPool
    from clusterlink_gateway.peering.h2core import Limits

    from .peering import Importer, TLSContexts

    tls = TLSContexts(pki / "cl0.crt", pki / "cl0.key", pki / "test-fabric-ca.pem")
    pool = PeerPool("cl1", [(LOCAL, peer_port)], tls, links=links, limits=_limits(Limits, window))
    await pool.request("GET", "/healthz")
    importer = await Importer(pool, "sink").start()
    await _serve_forever({"port": importer.port})


def _limits(cls: type, window: int) -> object:
    return cls(stream_window=window) if window else cls()


# -- load generator ----------------------------------------------------------------------------


async def _one_stream(port: int, seconds: float) -> int:
    reader, writer = await asyncio.open_connection(LOCAL, port)
    chunk = b"\x00" * CHUNK
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(16):
            writer.write(chunk)
        await writer.drain()
    writer.write_eof()
    received = int((await reader.read()) or b"0")
    writer.close()
    return received


async def measure(port: int, streams: int, seconds: float) -> float:
    """Gbit/s received by the sink over ``streams`` parallel connections."""
    start = time.monotonic()
    counts = await asyncio.gather(*(_one_stream(port, seconds) for _ in range(streams)))
    return sum(counts) * 8 / (time.monotonic() - start) / 1e9


class _Child:
    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "support.peer_bench", "--role", *args],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child {args[0]} failed to start")
        self.info = json.loads(line)

    @property
    def port(self) -> int:
        return int(self.info["port"])

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_bench(
    seconds: float, streams: list[int], *, window: int = 0, links: int = 2, tune: bool = True
) -> list[dict[str, object]]:
    """Direct vs tunnel for each stream count; returns result rows (and prints them)."""
    from .pki import TestCA

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ca = TestCA(Path(tmp))
        ca.issue("cl0")
        ca.issue("cl1")
        sink = _Child("sink")
        flags = () if tune else ("--no-tune",)
        exporter = _Child("exporter", tmp, str(sink.port), str(window), *flags)
        importer = _Child("importer", tmp, str(exporter.port), str(window), str(links), *flags)
        try:
            for n in streams:
                direct = uvloop.run(measure(sink.port, n, seconds))
                cpu0 = _cpu_seconds(exporter.proc.pid) + _cpu_seconds(importer.proc.pid)
                t0 = time.monotonic()
                tunnel = uvloop.run(measure(importer.port, n, seconds))
                elapsed = time.monotonic() - t0
                cpu = _cpu_seconds(exporter.proc.pid) + _cpu_seconds(importer.proc.pid) - cpu0
                gigabytes = tunnel * elapsed / 8
                row = {
                    "streams": n,
                    "direct_gbit_s": round(direct, 2),
                    "tunnel_gbit_s": round(tunnel, 2),
                    "ratio": round(tunnel / direct, 2) if direct else None,
                    "gateway_cpu_s_per_gb": round(cpu / gigabytes, 2) if gigabytes else None,
                }
                rows.append(row)
                print(
                    f"{n} stream(s): direct {direct:.2f} Gbit/s, through the gateway pair "
                    f"{tunnel:.2f} Gbit/s (x{row['ratio']}), "
                    f"gateways {row['gateway_cpu_s_per_gb']} CPU-s/GB",
                    flush=True,
                )
        finally:
            for child in (importer, exporter, sink):
                child.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", nargs="+")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--window", type=int, default=0, help="stream window bytes (0: default)")
    parser.add_argument("--links", type=int, default=2)
    parser.add_argument("--no-tune", action="store_true", help="skip tune_malloc() in gateways")
    args = parser.parse_args()
    if args.role:
        role, *rest = args.role
        if not args.no_tune:
            from clusterlink_gateway.peering import tune_malloc

            tune_malloc()
        if role == "sink":
            uvloop.run(run_sink())
        elif role == "exporter":
            uvloop.run(run_exporter(Path(rest[0]), int(rest[1]), int(rest[2])))
        elif role == "importer":
            uvloop.run(run_importer(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3])))
        return
    run_bench(
        args.seconds, args.streams, window=args.window, links=args.links, tune=not args.no_tune
    )


if __name__ == "__main__":
    main()
