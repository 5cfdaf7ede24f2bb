"""Peer transport end to end on loopback: real mTLS, real sockets, uvloop.

Topology of most tests (all in this process):

    client socket -> Importer (TcpRelay + PeerPool "cl0") ==h2/mTLS==> Exporter "cl1"
                     (start_peer_server, handler splices with TcpRelay) -> target (echo, ...)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import resource
import shutil
import socket
import ssl
import struct
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import uvloop
from hyperframe.frame import SettingsFrame

from clusterlink_gateway.peering import (
    IncomingStream,
    PeerPool,
    RequestRejected,
    TcpRelay,
    TLSContexts,
    TLSError,
    peer_identity,
)
from support.peering import (
    LOCAL,
    Exporter,
    Importer,
    Pusher,
    open_plain_transports,
    port_of,
    start_banner,
    start_echo,
    start_target,
    tls_for,
)
from support.pki import TestCA

pytestmark = pytest.mark.asyncio

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MiB = 1 << 20
T = 30.0  # generous: these only bound how long a broken test hangs on a busy machine


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


@dataclass
class Fabric:
    ca: TestCA
    server_tls: TLSContexts
    client_tls: TLSContexts
    exporter: Exporter
    pool: PeerPool
    echo: asyncio.Server
    importers: list[Importer]
    refusals: list[str]  # reasons the exporter's peer port reported

    async def refused(self, count: int) -> list[str]:
        """The refusal reasons once ``count`` were reported (they may trail the client)."""
        for _ in range(int(T / 0.01)):
            if len(self.refusals) >= count:
                break
            await asyncio.sleep(0.01)
        return self.refusals

    async def importer(self, export: str = "echo", pool: PeerPool | None = None) -> Importer:
        imp = await Importer(pool or self.pool, export, connect_timeout=T).start()
        self.importers.append(imp)
        return imp

    async def add_target(self, name: str, server: asyncio.Server) -> None:
        self.exporter.targets[name] = port_of(server)


async def _fabric(tmp_path: Path, **server_kwargs: object) -> AsyncIterator[Fabric]:
    ca = TestCA(tmp_path / "pki")
    server_tls, client_tls = tls_for(ca, "cl1"), tls_for(ca, "cl0")
    echo = await start_echo()
    refusals: list[str] = []
    exporter = await Exporter(server_tls, {"echo": port_of(echo)}).start(
        on_handshake_failure=refusals.append, **server_kwargs
    )
    pool = PeerPool("cl1", [(LOCAL, exporter.port)], client_tls, connect_timeout=10)
    fabric = Fabric(ca, server_tls, client_tls, exporter, pool, echo, [], refusals)
    try:
        yield fabric
    finally:
        for imp in fabric.importers:
            await imp.stop()
        await pool.close()
        await exporter.stop()
        echo.close()


@pytest_asyncio.fixture
async def fabric(tmp_path: Path) -> AsyncIterator[Fabric]:
    async for f in _fabric(tmp_path, handshake_timeout=0.5):
        yield f


async def roundtrip(port: int, payload: bytes, *, within: float = T) -> bytes:
    reader, writer = await asyncio.open_connection(LOCAL, port)
    try:
        writer.write(payload)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()


# -- basics ------------------------------------------------------------------------------------


async def test_healthz_names_the_caller_from_its_certificate(fabric: Fabric) -> None:
    response = await fabric.pool.request(
        "GET", "/healthz", headers={"x-clusterlink-peer": "forged"}, timeout=T
    )
    assert response.status == 200
    assert response.json() == {"name": "cl1", "caller": "cl0"}
    assert fabric.exporter.seen[0].peer == "cl0"
    assert fabric.pool.connected


async def test_request_with_body(fabric: Fabric) -> None:
    body = os.urandom(60_000)
    response = await fabric.pool.request("POST", "/echo", body=body, timeout=T)
    assert (response.status, response.body) == (200, body)
    # Above read_body's limit (64 KiB) the handler fails: a 500 on that stream only.
    response = await fabric.pool.request("POST", "/echo", body=body * 2, timeout=T)
    assert response.status == 500
    assert (await fabric.pool.request("GET", "/healthz", timeout=T)).status == 200


async def test_connect_round_trip(fabric: Fabric) -> None:
    imp = await fabric.importer()
    assert await roundtrip(imp.port, b"hello through the fabric") == b"hello through the fabric"
    incoming = fabric.exporter.seen[-1]
    assert incoming.method == "CONNECT"
    assert incoming.authority == "cl1:443"
    assert incoming.headers["x-clusterlink-export"] == "echo"
    assert incoming.headers["x-clusterlink-client-ip"] == "127.0.0.1"
    assert incoming.client_address[0] == "127.0.0.1"
    relay = imp.relays[-1]
    await asyncio.wait_for(relay.closed, T)
    assert (relay.bytes_in, relay.bytes_out) == (24, 24)


async def test_refused_connect_returns_status_and_json_body(fabric: Fabric) -> None:
    response, stream = await fabric.pool.open_connect({"x-clusterlink-export": "denied"}, timeout=T)
    assert stream is None
    assert response.status == 403
    assert response.json() == {"error": "denied by policy"}

    response, stream = await fabric.pool.open_connect({"x-clusterlink-export": "nope"}, timeout=T)
    assert (response.status, stream) == (404, None)
    assert "nope" in response.json()["error"]

    # Through an import listener, the client sees a reset.
    imp = await fabric.importer("denied")
    reader, writer = await asyncio.open_connection(LOCAL, imp.port)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), T)
    writer.close()
    assert imp.refusals == [403]
    # The refused streams are gone on both sides; the link is still fine.
    assert all(link.active_streams == 0 for link in fabric.pool.links)
    assert (await fabric.pool.request("GET", "/healthz", timeout=T)).status == 200


async def test_oversized_request_headers_are_refused_locally(fabric: Fabric) -> None:
    assert (await fabric.pool.request("GET", "/healthz", timeout=T)).status == 200
    links = fabric.pool.links
    with pytest.raises(RequestRejected):
        await fabric.pool.open_connect({"x-clusterlink-export": "echo", "x-big": "v" * 20000})
    with pytest.raises(RequestRejected):
        await fabric.pool.open_connect({"x-clusterlink-export": "echo\r\nx-injected: 1"})
    assert fabric.pool.links == links and all(link.usable for link in links)


async def test_handler_exception_is_a_500_on_that_stream_only(fabric: Fabric) -> None:
    async def boom(incoming: IncomingStream) -> bool:
        if incoming.path == "/boom":
            raise RuntimeError("handler bug")
        return False

    async def misbehave(incoming: IncomingStream) -> bool:
        if incoming.path == "/silent":
            return True  # returns without answering
        if incoming.headers.get("x-clusterlink-export") == "crash-after-accept":
            incoming.accept()
            raise RuntimeError("bug after accept")
        return await boom(incoming)

    fabric.exporter.hook = misbehave
    first = await fabric.pool.request("GET", "/healthz", timeout=T)
    response = await fabric.pool.request("GET", "/boom", timeout=T)
    assert response.status == 500
    assert response.json() == {"error": "internal error"}
    response = await fabric.pool.request("GET", "/silent", timeout=T)
    assert (response.status, response.json()) == (500, {"error": "no answer"})
    response, stream = await fabric.pool.open_connect(
        {"x-clusterlink-export": "crash-after-accept"}, timeout=T
    )
    assert response.status == 200 and stream is not None
    for _ in range(100):  # the handler's crash resets the accepted stream
        if stream.closed:
            break
        await asyncio.sleep(0.02)
    assert stream.closed
    again = await fabric.pool.request("GET", "/healthz", timeout=T)
    assert first.status == again.status == 200
    assert not any(i.link.lost.done() for i in fabric.exporter.seen)  # no link was harmed


# -- byte pipe semantics -----------------------------------------------------------------------


class HashSink(asyncio.Protocol):
    """Hashes what it receives; on EOF answers with the hex digest and the byte count."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.hash = hashlib.sha256()
        self.count = 0

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)

    def eof_received(self) -> bool:
        self.transport.write(f"{self.hash.hexdigest()} {self.count}".encode())  # type: ignore[attr-defined]
        self.transport.close()
        return True


def pattern(size: int, seed: bytes = b"") -> tuple[list[bytes], str]:
    """Deterministic non-repeating chunks and their sha256."""
    block = os.urandom(MiB)
    chunks, digest = [], hashlib.sha256()
    for i in range(size // MiB):
        chunk = i.to_bytes(8, "big") + seed + block[8 + len(seed) :]
        chunks.append(chunk)
        digest.update(chunk)
    return chunks, digest.hexdigest()


async def test_bulk_transfer_integrity(fabric: Fabric) -> None:
    size = 256 * MiB
    await fabric.add_target("hash", await start_target(HashSink))
    imp = await fabric.importer("hash")
    chunks, digest = pattern(size)
    reader, writer = await asyncio.open_connection(LOCAL, imp.port)
    start = time.monotonic()
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 60)
    elapsed = time.monotonic() - start
    writer.close()
    assert answer.decode() == f"{digest} {size}"
    print(f"\n256 MiB through the pair in one process: {size * 8 / elapsed / 1e9:.2f} Gbit/s")


async def test_bulk_transfer_integrity_towards_the_client(fabric: Fabric) -> None:
    size = 128 * MiB
    chunks, digest = pattern(size, b"down")

    class Source(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.it = iter(chunks)
            self.paused = False
            self.push()

        def push(self) -> None:
            for chunk in self.it:
                self.transport.write(chunk)  # type: ignore[attr-defined]
                if self.paused:
                    return
            self.transport.write_eof()  # type: ignore[attr-defined]

        def pause_writing(self) -> None:
            self.paused = True

        def resume_writing(self) -> None:
            self.paused = False
            self.push()

    await fabric.add_target("source", await start_target(Source))
    imp = await fabric.importer("source")
    reader, writer = await asyncio.open_connection(LOCAL, imp.port, limit=4 * MiB)
    got, count = hashlib.sha256(), 0
    while data := await asyncio.wait_for(reader.read(MiB), 30):
        got.update(data)
        count += len(data)
    writer.close()
    assert (count, got.hexdigest()) == (size, digest)


async def test_half_close_by_the_client_still_gets_the_reply(fabric: Fabric) -> None:
    imp = await fabric.importer()
    reader, writer = await asyncio.open_connection(LOCAL, imp.port)
    writer.write(b"request body")
    writer.write_eof()  # our write side is closed from here on
    assert await asyncio.wait_for(reader.read(), T) == b"request body"  # echo, then EOF
    writer.close()


async def test_half_close_by_the_target_lets_the_client_keep_sending(fabric: Fabric) -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"all I have to say")
        writer.write_eof()  # target's write side closed, still reading
        received.set_result(await reader.read())
        writer.close()

    await fabric.add_target("talker", await asyncio.start_server(serve, LOCAL, 0))
    imp = await fabric.importer("talker")
    reader, writer = await asyncio.open_connection(LOCAL, imp.port)
    assert await asyncio.wait_for(reader.read(), T) == b"all I have to say"  # EOF arrived
    writer.write(b"but I still talk")
    writer.write_eof()
    assert await asyncio.wait_for(received, T) == b"but I still talk"
    writer.close()


async def test_half_closed_connections_are_closed_not_dropped(fabric: Fabric) -> None:
    """After half-closes either way, every plain TCP transport involved (client, both relays,
    the target) is closed, none left open for the GC: uvloop frees a dropped transport whose
    ``write_eof`` shutdown is still pending, and libuv then calls back into the freed object
    (a segfault, whenever the GC happens to run in that window)."""
    imp = await fabric.importer()
    assert await roundtrip(imp.port, b"warm-up") == b"warm-up"  # the link is up from here
    before = {id(t) for t in open_plain_transports()}

    async def talker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"said")
        writer.write_eof()
        await reader.read()
        writer.close()

    await fabric.add_target("talker", await asyncio.start_server(talker, LOCAL, 0))
    for _ in range(5):
        assert await roundtrip(imp.port, b"client ends first") == b"client ends first"
    talk = await fabric.importer("talker")
    for _ in range(5):
        reader, writer = await asyncio.open_connection(LOCAL, talk.port)
        assert await asyncio.wait_for(reader.read(), T) == b"said"  # the target ended first
        writer.write_eof()
        writer.close()
    left: list[asyncio.Transport] = []
    for _ in range(int(T / 0.05)):
        left = [t for t in open_plain_transports() if id(t) not in before]
        if not left:
            break
        await asyncio.sleep(0.05)
    assert [(t, type(t.get_protocol()).__name__) for t in left] == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    assert [str(w.message) for w in caught if "TCPTransport" in str(w.message)] == []


async def test_server_speaks_first(fabric: Fabric) -> None:
    await fabric.add_target("banner", await start_banner(b"220 ready\r\n"))
    imp = await fabric.importer("banner")
    reader, writer = await asyncio.open_connection(LOCAL, imp.port)
    assert await asyncio.wait_for(reader.readexactly(11), T) == b"220 ready\r\n"
    writer.write(b"HELO")
    assert await asyncio.wait_for(reader.read(), T) == b"got:HELO"
    writer.close()


async def test_client_speaks_first_bytes_are_kept_until_attached(fabric: Fabric) -> None:
    gate = asyncio.Event()
    original = fabric.pool.open_connect

    async def slow_connect(headers: dict[str, str], **kwargs: float):  # type: ignore[no-untyped-def]
        await gate.wait()  # the source is "being chosen" while the client already talks
        return await original(headers, **kwargs)

    fabric.pool.open_connect = slow_connect  # type: ignore[method-assign]
    imp = await fabric.importer()
    reader, writer = await asyncio.open_connection(LOCAL, imp.port)
    early = os.urandom(200_000)  # more than the relay keeps: reading pauses, nothing is lost
    writer.write(early)
    await asyncio.sleep(0.2)
    assert imp.relays[-1].buffered() <= 64 * 1024 + 256 * 1024
    gate.set()
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), T) == early
    writer.close()


# -- backpressure and fairness -----------------------------------------------------------------


def python_side_bytes(fabric: Fabric) -> int:
    """Bytes buffered by both gateways in Python: stream send buffers, TLS and TCP buffers."""
    total = fabric.pool.buffered()
    total += sum(link.buffered() for link in {i.link for i in fabric.exporter.seen})
    total += sum(r.buffered() for r in fabric.exporter.relays)
    total += sum(r.buffered() for imp in fabric.importers for r in imp.relays)
    return total


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def test_slow_reader_keeps_gateway_buffers_bounded(fabric: Fabric) -> None:
    size = 200 * MiB
    pushers: list[Pusher] = []

    def make() -> Pusher:
        pushers.append(Pusher(size))
        return pushers[-1]

    await fabric.add_target("push", await start_target(make))
    imp = await fabric.importer("push")
    rss_before = rss()
    reader, writer = await asyncio.open_connection(LOCAL, imp.port, limit=64 * 1024)
    peak = 0
    for _ in range(40):  # the client does not read for 2 s
        await asyncio.sleep(0.05)
        peak = max(peak, python_side_bytes(fabric))
    stalled_left = pushers[0].left
    rss_stalled = rss() - rss_before
    count = 0
    while data := await asyncio.wait_for(reader.read(MiB), 30):
        count += len(data)
        peak = max(peak, python_side_bytes(fabric))
    writer.close()
    print(
        f"\nslow reader: peak Python-side buffers {peak / MiB:.2f} MiB, "
        f"RSS growth while stalled {rss_stalled / MiB:.1f} MiB, "
        f"target blocked with {stalled_left / MiB:.0f} MiB unsent"
    )
    assert count == size
    assert stalled_left > size // 2  # the target really was held back
    assert peak < 8 * MiB
    assert rss_stalled < 64 * MiB


async def test_stalled_stream_does_not_block_another_on_the_same_link(
    fabric: Fabric,
) -> None:
    pool = PeerPool("cl1", [(LOCAL, fabric.exporter.port)], fabric.client_tls, links=1)
    try:
        await fabric.add_target("push", await start_target(lambda: Pusher(100 * MiB)))
        stalled_imp = await fabric.importer("push", pool)
        echo_imp = await fabric.importer("echo", pool)
        stalled_reader, stalled_writer = await asyncio.open_connection(
            LOCAL, stalled_imp.port, limit=64 * 1024
        )
        await asyncio.sleep(0.5)  # the stalled stream's window fills up
        payload = os.urandom(16 * MiB)
        start = time.monotonic()
        assert await roundtrip(echo_imp.port, payload, within=20) == payload
        elapsed = time.monotonic() - start
        assert len(pool.links) == 1
        assert pool.links[0].active_streams >= 1  # the stalled one is still there
        print(f"\n16 MiB echo beside a stalled stream: {elapsed:.2f} s")
        stalled_writer.close()
        with contextlib.suppress(ConnectionError):
            await stalled_reader.read()
    finally:
        await pool.close()


async def test_a_thousand_concurrent_streams_on_one_link(fabric: Fabric) -> None:
    n = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * n + 500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * n + 500), hard))
        soft = min(hard, 4 * n + 500)
    n = min(n, (soft - 500) // 4)
    pool = PeerPool(
        "cl1", [(LOCAL, fabric.exporter.port)], fabric.client_tls, links=1, connect_timeout=30
    )
    try:
        await pool.request("GET", "/healthz", timeout=30)  # the link is up before the rush
        imp = await fabric.importer("echo", pool)
        imp.connect_timeout = 60  # a thousand CONNECTs at once on a possibly busy machine
        opened = await asyncio.gather(*(asyncio.open_connection(LOCAL, imp.port) for _ in range(n)))
        for i, (_, writer) in enumerate(opened):
            writer.write(f"stream {i} ".encode() * 10)
        await asyncio.sleep(0)
        answers = await asyncio.wait_for(
            asyncio.gather(
                *(
                    reader.readexactly(len(f"stream {i} ") * 10)
                    for i, (reader, _) in enumerate(opened)
                )
            ),
            60,
        )
        assert all(a == f"stream {i} ".encode() * 10 for i, a in enumerate(answers))
        assert len(pool.links) == 1
        link = pool.links[0]
        assert link.active_streams == n  # all of them open at once on this link
        for _, writer in opened:
            writer.close()
        for _ in range(100):
            if link.active_streams == 0:
                break
            await asyncio.sleep(0.05)
        assert link.active_streams == 0
    finally:
        await pool.close()


# -- TLS refusals ------------------------------------------------------------------------------


def client_ctx(
    cert: Path | None, key: Path | None, ca: Path, alpn: list[str] | None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def h2_attempt(port: int, ctx: ssl.SSLContext, server_name: str | None = "cl1") -> str:
    """'answered' if the server speaks HTTP/2 back, else how it refused."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(LOCAL, port, ssl=ctx, server_hostname=server_name or ""), 5
        )
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return f"handshake failed: {exc}"
    try:
        writer.write(PREFACE + SettingsFrame(0).serialize())
        data = await asyncio.wait_for(reader.read(9), T)
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return f"closed: {exc}"
    finally:
        writer.close()
    return "answered" if len(data) == 9 and data[3] == 0x4 else f"closed: {data!r}"


async def raw_attempt(port: int, payload: bytes) -> tuple[bytes, float]:
    """Send raw bytes; what came back before the server closed, and when it closed."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(LOCAL, port)
    writer.write(payload)
    got = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), T):
            got += chunk
    writer.close()
    return got, time.monotonic() - start


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "peer handshake refused"]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("valid", None),
        ("no-client-cert", "no-certificate"),
        ("other-ca", "unknown-ca"),
        ("expired", "expired"),
        ("alpn-http1", "no-alpn"),
        ("no-alpn", "no-alpn"),
        ("sni-other-peer", "bad-name"),
        ("no-sni", "bad-name"),
    ],
)
async def test_tls_refusals_during_handshake(
    fabric: Fabric,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: str,
    reason: str | None,
) -> None:
    caplog.set_level(logging.INFO, "clusterlink.peering")
    ca = fabric.ca
    good = ca.issue("cl0")
    server_name: str | None = "cl1"
    if case == "valid":
        ctx = client_ctx(good.cert, good.key, ca.ca_path, ["h2"])
    elif case in ("sni-other-peer", "no-sni"):
        ctx = client_ctx(good.cert, good.key, ca.ca_path, ["h2"])
        ctx.check_hostname = False  # the server must refuse it, not the client
        server_name = "cl2" if case == "sni-other-peer" else None
    elif case == "no-client-cert":
        ctx = client_ctx(None, None, ca.ca_path, ["h2"])
    elif case == "other-ca":
        rogue = TestCA(tmp_path / "rogue", "rogue-ca").issue("cl0")
        ctx = client_ctx(rogue.cert, rogue.key, ca.ca_path, ["h2"])
    elif case == "expired":
        expired = ca.issue("cl0-expired", dns=["cl0"], expired=True)
        ctx = client_ctx(expired.cert, expired.key, ca.ca_path, ["h2"])
    elif case == "alpn-http1":
        ctx = client_ctx(good.cert, good.key, ca.ca_path, ["http/1.1"])
    else:
        ctx = client_ctx(good.cert, good.key, ca.ca_path, None)
    outcome = await h2_attempt(fabric.exporter.port, ctx, server_name)
    if case == "valid":
        assert outcome == "answered"
        await asyncio.sleep(0.2)
        assert fabric.refusals == [] and refusal_lines(caplog) == []
    else:
        assert outcome != "answered", case
        assert await fabric.refused(1) == [reason]
        (line,) = refusal_lines(caplog)
        assert line.reason == reason and line.client_address.startswith(f"{LOCAL}:")  # type: ignore[attr-defined]
        assert "BEGIN" not in line.detail  # type: ignore[attr-defined]
    assert not [i for i in fabric.exporter.seen if i.peer != "cl0"]
    # A normal CONNECT still works afterwards.
    imp = await fabric.importer()
    assert await roundtrip(imp.port, b"still fine") == b"still fine"


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: cl1\r\n\r\n",
        b"\x00\x01\x02garbage" * 100,
        PREFACE + SettingsFrame(0).serialize(),  # cleartext h2 (h2c) is not accepted either
    ],
    ids=["http1", "garbage", "h2c"],
)
async def test_non_tls_clients_are_closed(fabric: Fabric, payload: bytes) -> None:
    got, elapsed = await raw_attempt(fabric.exporter.port, payload)
    assert b"HTTP/" not in got and elapsed < T
    assert await fabric.refused(1) == ["not-tls"]
    imp = await fabric.importer()
    assert await roundtrip(imp.port, b"still fine") == b"still fine"


async def test_hanging_up_mid_handshake_is_counted_as_closed(fabric: Fabric) -> None:
    _, writer = await asyncio.open_connection(LOCAL, fabric.exporter.port)
    writer.write(b"\x16\x03\x01")  # the start of a ClientHello, then hang up
    await writer.drain()
    writer.close()
    assert await fabric.refused(1) == ["closed"]
    assert (await fabric.pool.request("GET", "/healthz", timeout=T)).status == 200


async def test_slowloris_is_closed_by_the_handshake_timeout(fabric: Fabric) -> None:
    got, elapsed = await raw_attempt(fabric.exporter.port, b"\x16\x03\x01")  # then silence
    assert got == b""
    assert 0.3 < elapsed < 10  # handshake_timeout is 0.5 s in this fixture
    assert await fabric.refused(1) == ["timeout"]
    assert (await fabric.pool.request("GET", "/healthz", timeout=T)).status == 200


async def test_server_name_must_match_the_certificate(fabric: Fabric) -> None:
    # cl1's server is asked for as "cl2": the client must refuse the handshake.
    impostor = PeerPool("cl2", [(LOCAL, fabric.exporter.port)], fabric.client_tls)
    try:
        with pytest.raises(ConnectionError, match="certificate"):
            await impostor.request("GET", "/healthz", timeout=T)
        assert not impostor.connected
        assert "bad-name" in await fabric.refused(1)  # the server refused SNI cl2 itself
    finally:
        await impostor.close()
    assert (await fabric.pool.request("GET", "/healthz", timeout=T)).status == 200


# -- link loss, GOAWAY, failover ---------------------------------------------------------------


async def test_next_connect_works_after_the_link_was_killed(fabric: Fabric) -> None:
    pool = PeerPool("cl1", [(LOCAL, fabric.exporter.port)], fabric.client_tls, links=1)
    try:
        imp = await fabric.importer("echo", pool)
        assert await roundtrip(imp.port, b"one") == b"one"
        reader, writer = await asyncio.open_connection(LOCAL, imp.port)  # stays open
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), T) == b"x"
        (before,) = pool.links
        (server_side,) = {i.link for i in fabric.exporter.seen}
        server_side.abort()  # the server side drops the link
        await asyncio.wait_for(before.lost, T)
        with pytest.raises(ConnectionResetError):  # its client connection is reset
            await asyncio.wait_for(reader.read(), T)
        writer.close()
        assert await roundtrip(imp.port, b"two") == b"two"  # the next one gets a new link
        assert before not in pool.links
    finally:
        await pool.close()


async def test_client_reset_reaches_the_target_as_a_reset(fabric: Fabric) -> None:
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
            outcome.set_result("eof")
        except ConnectionResetError:
            outcome.set_result("reset")
        writer.close()

    await fabric.add_target("watch", await asyncio.start_server(serve, LOCAL, 0))
    imp = await fabric.importer("watch")
    _reader, writer = await asyncio.open_connection(LOCAL, imp.port)
    writer.write(b"hello")
    await writer.drain()
    await asyncio.sleep(0.2)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # TCP RST from the client
    assert await asyncio.wait_for(outcome, T) == "reset"


async def test_goaway_before_the_answer_is_retried_transparently(fabric: Fabric) -> None:
    calls: list[int] = []

    async def goaway_first(incoming: IncomingStream) -> bool:
        if incoming.method != "CONNECT":
            return False
        calls.append(incoming.stream_id)
        if len(calls) == 1:
            incoming.link.goaway(last_stream_id=0)  # "never processed" this stream
            return True
        return False

    fabric.exporter.hook = goaway_first
    response, stream = await fabric.pool.open_connect({"x-clusterlink-export": "echo"}, timeout=T)
    assert response.status == 200 and stream is not None
    assert len(calls) == 2
    assert fabric.exporter.seen[0].link is not fabric.exporter.seen[-1].link
    stream.reset()


async def test_link_lost_before_the_answer_is_retried_transparently(fabric: Fabric) -> None:
    calls = 0

    async def drop_first(incoming: IncomingStream) -> bool:
        nonlocal calls
        if incoming.method != "CONNECT":
            return False
        calls += 1
        if calls == 1:
            incoming.link.abort()
            return True
        return False

    fabric.exporter.hook = drop_first
    imp = await fabric.importer()
    assert await roundtrip(imp.port, b"survives a reconnect") == b"survives a reconnect"
    assert calls == 2


async def test_pool_fails_over_to_the_second_endpoint(fabric: Fabric) -> None:
    dead = await asyncio.start_server(lambda r, w: None, LOCAL, 0)
    dead_port = port_of(dead)
    dead.close()
    await dead.wait_closed()
    pool = PeerPool(
        "cl1", [(LOCAL, dead_port), (LOCAL, fabric.exporter.port)], fabric.client_tls, links=1
    )
    try:
        assert (await pool.request("GET", "/healthz", timeout=T)).status == 200
        assert [link.endpoint for link in pool.links] == [(LOCAL, fabric.exporter.port)]
        imp = await fabric.importer("echo", pool)
        assert await roundtrip(imp.port, b"via the second") == b"via the second"
    finally:
        await pool.close()


async def test_no_endpoint_works_raises_connection_error(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    dead = await asyncio.start_server(lambda r, w: None, LOCAL, 0)
    port = port_of(dead)
    dead.close()
    await dead.wait_closed()
    pool = PeerPool("cl1", [(LOCAL, port)], tls_for(ca, "cl0"), connect_timeout=1.0)
    try:
        with pytest.raises(ConnectionError):
            await pool.open_connect({"x-clusterlink-export": "echo"})
        start = time.monotonic()
        dials = pool.on_demand.dials
        with pytest.raises(ConnectionError, match="no endpoint reachable"):
            # dials on demand within connect_timeout (with backoff), then gives up
            await pool.open_connect({"x-clusterlink-export": "echo"})
        assert time.monotonic() - start < 1.0 + 2  # connect_timeout, with a margin
        assert pool.on_demand.dials - dials <= 3  # backoff: the dead peer is not hammered
    finally:
        await pool.close()


async def test_set_endpoints_drains_links_to_removed_endpoints(tmp_path: Path) -> None:
    async for f in _fabric(tmp_path):
        second = await Exporter(f.server_tls, dict(f.exporter.targets)).start()
        try:
            assert (await f.pool.request("GET", "/healthz", timeout=T)).status == 200
            old_links = f.pool.links
            f.pool.set_endpoints([(LOCAL, second.port)])
            await asyncio.sleep(0.1)
            assert (await f.pool.request("GET", "/healthz", timeout=T)).status == 200
            assert all(link.endpoint == (LOCAL, second.port) for link in f.pool.links)
            assert all(link.lost.done() for link in old_links)
        finally:
            await second.stop()


async def test_idle_links_are_closed_by_the_server_and_redialed(tmp_path: Path) -> None:
    async for f in _fabric(tmp_path, idle_timeout=0.3):
        assert (await f.pool.request("GET", "/healthz", timeout=T)).status == 200
        first = f.pool.links
        await asyncio.sleep(1.0)
        assert all(link.lost.done() for link in first)
        assert (await f.pool.request("GET", "/healthz", timeout=T)).status == 200


# -- certificates ------------------------------------------------------------------------------


def install(issued_cert: Path, issued_key: Path, cert: Path, key: Path) -> None:
    """Replace files the way a deployment tool does: write aside, then rename over."""
    for src, dst in ((issued_cert, cert), (issued_key, key)):
        tmp = dst.with_suffix(".new")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)


async def test_certificate_reload_keeps_streams_and_uses_new_material(tmp_path: Path) -> None:
    old_ca = TestCA(tmp_path / "ca1", "fabric-1")
    new_ca = TestCA(tmp_path / "ca2", "fabric-2")
    live = tmp_path / "live"
    live.mkdir()
    files = {}
    for name in ("cl0", "cl1"):
        issued = old_ca.issue(name)
        files[name] = (live / f"{name}.crt", live / f"{name}.key")
        install(issued.cert, issued.key, *files[name])
    bundle = live / "ca.pem"
    shutil.copyfile(old_ca.ca_path, bundle)
    server_tls = TLSContexts(*files["cl1"], bundle)
    client_tls = TLSContexts(*files["cl0"], bundle)
    stale_client = TLSContexts(*files["cl0"], bundle)  # never reloaded

    issuers: list[str] = []

    async def record_issuer(incoming: IncomingStream) -> bool:
        ssl_object = incoming.link._transport.get_extra_info("ssl_object")
        issuers.append(dict(x[0] for x in ssl_object.getpeercert()["issuer"])["commonName"])
        return False

    echo = await start_echo()
    exporter = await Exporter(server_tls, {"echo": port_of(echo)}, hook=record_issuer).start()
    pool = PeerPool("cl1", [(LOCAL, exporter.port)], client_tls, links=1)
    try:
        response, stream = await pool.open_connect({"x-clusterlink-export": "echo"}, timeout=T)
        assert response.status == 200 and stream is not None
        collected = bytearray()
        ended = asyncio.Event()

        class Collect:
            def stream_data_received(self, data: bytes) -> None:
                collected.extend(data)

            def stream_eof_received(self) -> None:
                ended.set()

            def stream_closed(self, exc: Exception | None) -> None:
                ended.set()

            def stream_pause_writing(self) -> None: ...
            def stream_resume_writing(self) -> None: ...

        stream.set_protocol(Collect())
        stream.write(b"before ")

        # Rotate to a new CA on both sides.
        for name in ("cl0", "cl1"):
            issued = new_ca.issue(name)
            install(issued.cert, issued.key, *files[name])
        shutil.copyfile(new_ca.ca_path, bundle)
        assert server_tls.reload() is True
        assert client_tls.reload() is True
        assert client_tls.reload() is False  # nothing changed since

        stream.write(b"after")  # the established stream keeps flowing
        stream.write_eof()
        await asyncio.wait_for(ended.wait(), T)
        assert bytes(collected) == b"before after"

        # New links use the new material on both sides...
        fresh = PeerPool("cl1", [(LOCAL, exporter.port)], client_tls, links=1)
        try:
            assert (await fresh.request("GET", "/healthz", timeout=T)).status == 200
        finally:
            await fresh.close()
        assert issuers[0] == "fabric-1" and issuers[-1] == "fabric-2"
        # ...and old material is refused by the reloaded server.
        stale = PeerPool("cl1", [(LOCAL, exporter.port)], stale_client, links=1)
        try:
            with pytest.raises(ConnectionError):
                await stale.request("GET", "/healthz", timeout=T)
        finally:
            await stale.close()
    finally:
        await pool.close()
        await exporter.stop()
        echo.close()


async def test_watch_reloads_on_file_change_and_survives_bad_files(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    issued = ca.issue("cl0")
    cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    install(issued.cert, issued.key, cert, key)
    tls = TLSContexts(cert, key, ca.ca_path)
    before = tls.client_context()
    task = asyncio.create_task(tls.watch(interval=0.05))
    try:
        cert.write_text("not a certificate")  # broken: logged, old material kept
        await asyncio.sleep(0.3)
        assert tls.client_context() is before
        renewed = ca.issue("cl0-renewed", dns=["cl0"])
        install(renewed.cert, renewed.key, cert, key)
        for _ in range(40):
            await asyncio.sleep(0.05)
            if tls.client_context() is not before:
                break
        assert tls.client_context() is not before
        assert tls.local_name == "cl0"
    finally:
        task.cancel()


async def test_tls_material_errors_are_clear(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    a, b = ca.issue("cl0"), ca.issue("cl1")
    with pytest.raises(TLSError, match="cannot read"):
        TLSContexts(tmp_path / "missing.crt", a.key, ca.ca_path)
    with pytest.raises(TLSError, match="does not match"):
        TLSContexts(a.cert, b.key, ca.ca_path)
    with pytest.raises(TLSError, match="expired"):
        old = ca.issue("old", expired=True)
        TLSContexts(old.cert, old.key, ca.ca_path)
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(TLSError, match="empty"):
        TLSContexts(a.cert, a.key, empty)
    tls = TLSContexts(a.cert, a.key, ca.ca_path)
    assert tls.local_name == "cl0"
    ctx = tls.server_context()
    # optional at the listener (a grant redemption comes without a certificate); any other
    # connection without one is refused right after the handshake (test_tls_refusals_...)
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert tls.client_context().check_hostname
    # A failed reload keeps the old material.
    install(b.cert, b.cert, a.cert, a.key)  # key file now holds a certificate
    with pytest.raises(TLSError):
        tls.reload()
    assert tls.local_name == "cl0"
    assert tls.server_context() is ctx


async def test_peer_identity_prefers_the_dns_san(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    issued = ca.issue("cn-name", dns=["san-name", "other"])
    tls = TLSContexts(issued.cert, issued.key, ca.ca_path)
    assert tls.local_name == "san-name"
    assert peer_identity(None) is None


# -- throughput report -------------------------------------------------------------------------


@pytest.mark.slow
async def test_throughput_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints Gbit/s through a gateway pair (separate processes) vs direct TCP; no assertion
    on speed, only that data flowed."""
    from support.peer_bench import run_bench

    rows = await asyncio.to_thread(run_bench, 2.0, [1, 8])
    with capsys.disabled():
        for row in rows:
            print(f"\nthroughput: {json.dumps(row)}")
    assert all(row["tunnel_gbit_s"] and row["tunnel_gbit_s"] > 0 for row in rows)  # type: ignore[operator]


async def test_relay_reset_sends_tcp_rst(fabric: Fabric) -> None:
    relays: list[TcpRelay] = []
    server = await asyncio.get_running_loop().create_server(
        lambda: TcpRelay(lambda r: (relays.append(r), r.reset())), LOCAL, 0
    )
    try:
        with pytest.raises(ConnectionResetError):  # the reset may already fail the connect
            reader, writer = await asyncio.open_connection(LOCAL, port_of(server))
            try:
                await asyncio.wait_for(reader.read(), T)
            finally:
                writer.close()
        await asyncio.wait_for(relays[0].closed, T)
    finally:
        server.close()
