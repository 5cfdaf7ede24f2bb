"""Memory per pending TLS handshake on the peer port (RSS delta per connection).

A peer server (``start_peer_server``, uvloop, caps lifted) runs in a child process; N raw TCP
connections each send a ClientHello and then stall, so each holds a handshake in progress.
Run: ``.venv/bin/python bench/pending_handshake_cost.py [N]`` (default 2,000; needs
``ulimit -n`` above 2 N).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "gateway" / "tests"
WARM_UP = 50

SERVER = """
import asyncio, sys
from pathlib import Path
import uvloop
sys.path.insert(0, sys.argv[2])
from support.peering import tls_for
from support.pki import TestCA
from clusterlink_gateway.peering import start_peer_server

async def main():
    tls = tls_for(TestCA(Path(sys.argv[1])), "cl1")
    async def handler(stream):
        pass
    server = await start_peer_server(
        "127.0.0.1", 0, tls, handler, handshake_timeout=600, backlog=4096,
        max_handshakes=1_000_000, max_handshakes_per_source=1_000_000,
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def client_hello() -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="cl1")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def stall(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(client_hello())
        socks.append(sock)
    return socks


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    pki = Path(tempfile.mkdtemp()) / "pki"
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(pki), str(TESTS)], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        socks = stall(port, WARM_UP)  # first-use allocations are not counted
        time.sleep(2)
        before = rss_kib(server.pid)
        socks += stall(port, count)
        after, previous = before, -1
        for _ in range(60):  # until the server answered every ClientHello
            time.sleep(1)
            after = rss_kib(server.pid)
            if after == previous:
                break
            previous = after
        print(
            f"{count} pending handshakes: RSS {before} -> {after} KiB, "
            f"{(after - before) / count:.1f} KiB each"
        )
        for sock in socks:
            sock.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
