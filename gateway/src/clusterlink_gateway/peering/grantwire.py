"""The grant redemption connection on the peer port: one request, one answer, then close.

The redeemer dials the granting gateway's peer port asking for ``GRANT_SNI`` and offering only
``GRANT_ALPN`` (``tls``), without a client certificate (its CA is not known there yet); it
verifies the granting gateway's certificate against the CA bundle in the grant and that it
names a granting site. It then sends one frame (4-byte big-endian length, then JSON, at most
``MAX_REQUEST`` bytes) and reads one answer frame ``{"result": ..., "message": ...}``. Nothing
else is served on such a connection: ``GrantSession`` reads the one request within
``timeout`` seconds, answers, and closes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from .tls import GRANT_ALPN, GRANT_SNI

MAX_REQUEST = 65536  # bytes of one redemption request (two CA bundles fit with room)
MAX_ANSWER = 65536
ELSEWHERE = "elsewhere"  # answered by a data-plane worker: the redeemer dials again

# Given the request bytes, our address as the client saw it ... : the answer document.
GrantHandler = Callable[[bytes, str | None], Awaitable[dict[str, Any]]]


def frame(doc: dict[str, Any]) -> bytes:
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return struct.pack(">I", len(data)) + data


class GrantSession(asyncio.Protocol):
    """The server side of one grant connection (after its TLS handshake)."""

    peer = "(grant redemption)"  # for the acceptor: not a refused handshake
    fabric = False

    def __init__(self, handler: GrantHandler, *, timeout: float = 10.0) -> None:
        self._handler = handler
        self._timeout = timeout
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's TLS app transport
        peer = transport.get_extra_info("peername")
        self._client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else None
        self._timer = asyncio.get_running_loop().call_later(self._timeout, transport.abort)

    def data_received(self, data: bytes) -> None:
        if self._task is not None:
            return  # one request per connection
        self._buffer += data
        if len(self._buffer) < 4:
            return
        (size,) = struct.unpack(">I", self._buffer[:4])
        if size > MAX_REQUEST:
            self._answer({"result": "bad-request", "message": f"request over {MAX_REQUEST} B"})
            return
        if len(self._buffer) < 4 + size:
            return
        body = bytes(self._buffer[4 : 4 + size])
        self._task = asyncio.get_running_loop().create_task(self._serve(body))

    async def _serve(self, body: bytes) -> None:
        try:
            answer = await self._handler(body, self._client)
        except Exception as exc:  # the handler logs; the redeemer gets a class, not a trace
            answer = {"result": "error", "message": type(exc).__name__}
        self._answer(answer)

    def _answer(self, doc: dict[str, Any]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame(doc))
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


def client_context(ca_pem: str) -> ssl.SSLContext:
    """The redeemer's context: verifies the granting gateway against the grant's bundle; no
    client certificate; only GRANT_ALPN."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # the SNI is GRANT_SNI; the name is checked below
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_pem)
    ctx.set_alpn_protocols([GRANT_ALPN])
    return ctx


def _dns_names(cert: dict[str, Any] | None) -> list[str]:
    return [str(v) for k, v in (cert or {}).get("subjectAltName", ()) if k == "DNS"]


async def redeem(
    host: str,
    port: int,
    ca_pem: str,
    site_names: list[str],
    make_request: Callable[[str], bytes],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - bounds the whole exchange
) -> dict[str, Any]:
    """Dial ``host:port`` for a redemption; ``make_request(binding)`` builds the request once the
    server's certificate (sha256 ``binding``) was verified and names one of ``site_names``.
    Returns the answer document; ConnectionError/TimeoutError if none came."""
    async with asyncio.timeout(timeout):
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=client_context(ca_pem), server_hostname=GRANT_SNI
            )
        except ssl.SSLCertVerificationError as exc:
            raise ConnectionError(
                f"{host}:{port}: certificate rejected: {exc.verify_message}"
            ) from None
        except (ssl.SSLError, OSError) as exc:
            raise ConnectionError(f"{host}:{port}: {str(exc) or type(exc).__name__}") from None
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object.selected_alpn_protocol() != GRANT_ALPN:
                raise ConnectionError(f"{host}:{port}: does not accept grant redemptions")
            names = _dns_names(ssl_object.getpeercert())
            if not set(names) & set(site_names):
                raise ConnectionError(
                    f"{host}:{port}: its certificate names {names}, not a granting site"
                )
            der = ssl_object.getpeercert(binary_form=True)
            writer.write(frame_bytes(make_request(hashlib.sha256(der).hexdigest())))
            await writer.drain()
            head = await reader.readexactly(4)
            (size,) = struct.unpack(">I", head)
            if size > MAX_ANSWER:
                raise ConnectionError(f"{host}:{port}: answer over {MAX_ANSWER} B")
            answer = json.loads(await reader.readexactly(size))
        except ConnectionError:
            raise
        except (asyncio.IncompleteReadError, ssl.SSLError, OSError, ValueError) as exc:
            raise ConnectionError(
                f"{host}:{port}: no answer to the redemption: {str(exc) or type(exc).__name__}"
            ) from None
        finally:
            writer.close()
    if not isinstance(answer, dict):
        raise ConnectionError(f"{host}:{port}: answer is not a JSON object")
    return answer


def frame_bytes(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data
