"""The import name server's sockets: UDP and TCP on one loopback address and port.

A thin layer around ``answer``: parse a query, answer it from the current imports, send the
response (over UDP truncated with TC set when it exceeds the client's payload size). A packet
that is not a DNS query is dropped, a malformed query gets FORMERR when its header can be read.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode

from .answer import DEFAULT_TTL, Record, answer

log = logging.getLogger("clusterlink.dns")

UDP_PAYLOAD = 512
TCP_IDLE_SECONDS = 10.0
MAX_TCP_CONNECTIONS = 64

Records = Callable[[], Mapping[str, Record]]


def respond(wire: bytes, zone: dns.name.Name, records: Records, ttl: int) -> bytes | None:
    """The wire response to one wire query, or None when nothing should be sent."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return _formerr(wire)
    if query.flags & dns.flags.QR:
        return None
    return answer(query, zone, records(), ttl=ttl).to_wire()


def _formerr(wire: bytes) -> bytes | None:
    if len(wire) < 12:
        return None
    qid, flags = struct.unpack("!HH", wire[:4])
    if flags & dns.flags.QR:
        return None
    flags = (dns.flags.QR | (flags & (dns.flags.RD | 0x7800))) | dns.rcode.FORMERR
    return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)


def fit_udp(response: bytes, query_wire: bytes) -> bytes:
    """Truncate (header and question only, TC set) a response over the client's UDP size."""
    limit = UDP_PAYLOAD
    with suppress(dns.exception.DNSException):
        query = dns.message.from_wire(query_wire)
        if query.edns >= 0:
            limit = max(UDP_PAYLOAD, query.payload)
    if len(response) <= limit:
        return response
    message = dns.message.from_wire(response)
    message.flags |= dns.flags.TC
    message.answer.clear()
    message.authority.clear()
    message.additional.clear()
    return message.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: NameServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.server.handle(data)
        if out is not None and self.transport is not None:
            self.transport.sendto(fit_udp(out, data), addr)


class NameServer:
    """Answers DNS for the imports' zone over UDP and TCP on ``address``:``port``."""

    def __init__(
        self,
        zone: dns.name.Name,
        address: str,
        port: int,
        records: Records,
        *,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self.zone = zone
        self.address = address
        self.port = port
        self.records = records
        self.ttl = ttl
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    def handle(self, wire: bytes) -> bytes | None:
        try:
            return respond(wire, self.zone, self.records, self.ttl)
        except Exception:  # one bad query never stops the server
            log.exception("dns query failed")
            return _servfail(wire)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(self._serve_tcp, self.address, self.port)
        port = self._tcp.sockets[0].getsockname()[1]
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.address, port)
            )
        except OSError:
            self._tcp.close()
            raise
        self._udp = transport
        self.port = port
        log.info(
            "dns listening",
            extra={"address": f"{self.address}:{port}", "zone": self.zone.to_text()},
        )

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self._clients.add(task)
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS)
                (length,) = struct.unpack("!H", head)
                wire = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_SECONDS)
                out = self.handle(wire)
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._clients):
                task.cancel()
            await self._tcp.wait_closed()
            self._tcp = None


def _servfail(wire: bytes) -> bytes | None:
    out = _formerr(wire)
    if out is None:
        return None
    flags = (struct.unpack("!H", out[2:4])[0] & ~0xF) | dns.rcode.SERVFAIL
    return out[:2] + struct.pack("!H", flags) + out[4:]
