"""The HTTP/2 server role of a peer link: requests from a peer, each run by a handler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

from . import h2core
from .h2core import Limits
from .session import Session
from .stream import Stream, _Collector

log = logging.getLogger("clusterlink.peering")


Handler = Callable[["IncomingStream"], Awaitable[None]]


class IncomingStream:
    """A request from a peer. ``peer`` comes from its verified certificate, never a header."""

    def __init__(self, link: ServerLink, stream: Stream, ev: h2core.RequestReceived) -> None:
        self._link = link
        self.link = link  # the carrying link (for metrics, tests and draining)
        self.stream = stream
        self.peer = link.peer
        self.peer_fabric = link.fabric  # its certificate chains to the fabric CA
        self.method = ev.method
        self.path = ev.path
        self.authority = ev.authority
        self.headers = ev.headers
        self.client_address: tuple[str, int] = link.address or ("", 0)
        self.answered = False

    @property
    def stream_id(self) -> int:
        return self.stream.stream_id

    async def respond(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        """A complete answer (END_STREAM). A dead stream makes this a no-op."""
        self.answer(status, body, headers)

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """``respond`` without awaiting (it never blocks: the body is buffered if need be)."""
        if self.answered:
            raise RuntimeError("request already answered")
        if self.stream.closed:
            self.answered = True
            return
        core = self._link._core  # the session's own core: one object, one job (the answer)
        try:
            core.send_response(self.stream_id, status, headers, end_stream=not body)
            self.answered = True
            if body:
                core.send_data(self.stream_id, body)
                core.end_stream(self.stream_id)
        except h2core.StreamGone:
            return
        if not self.stream._eof and core.unsent(self.stream_id) == 0:
            # Answered before the request ended: ask the caller to stop sending (RFC 9113 8.1).
            core.reset_stream(self.stream_id, h2core.NO_ERROR)
        self._link._after_action()

    def accept(self, headers: dict[str, str] | None = None) -> Stream:
        """Answer 200 without END_STREAM; the stream then carries bytes both ways."""
        if self.answered:
            raise RuntimeError("request already answered")
        if not self.stream.closed:
            with contextlib.suppress(h2core.StreamGone):
                self._link._core.send_response(self.stream_id, 200, headers)
            self._link._after_action()
        self.answered = True
        return self.stream

    async def read_body(self, limit: int = 65536) -> bytes:
        """The request body (up to END_STREAM); BodyTooLarge above ``limit``."""
        collector = _Collector(limit)
        self.stream.set_protocol(collector)
        return await collector.done


def _json_error(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode()


class ServerLink(Session):
    """The HTTP/2 server role of a link: runs the handler as one task per incoming stream."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        *,
        idle_timeout: float | None,
        keepalive: float,
        registry: set[ServerLink] | None = None,
    ) -> None:
        super().__init__(limits, client_side=False, idle_timeout=idle_timeout, keepalive=keepalive)
        self._handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        self._registry = registry

    def _link_up(self) -> None:
        if self._registry is not None:
            self._registry.add(self)
        log.debug("peer link accepted", extra={"peer": self.peer, "client_address": self.address})

    def _link_down(self, exc: Exception | None) -> None:
        if self._registry is not None:
            self._registry.discard(self)
        log.debug("peer link closed", extra={"peer": self.peer, "error": str(exc) if exc else None})

    def _on_request(self, ev: h2core.RequestReceived) -> None:
        stream = Stream(self, ev.stream_id)
        self._streams[ev.stream_id] = stream
        incoming = IncomingStream(self, stream, ev)
        task = self._loop.create_task(self._run(incoming))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, incoming: IncomingStream) -> None:
        try:
            await self._handler(incoming)
        except Exception:
            log.exception(
                "peer request handler failed",
                extra={"peer": incoming.peer, "method": incoming.method, "path": incoming.path},
            )
            self._fail(incoming, "internal error")
            return
        if not incoming.answered and not incoming.stream.closed:
            log.error(
                "peer request handler returned without answering",
                extra={"peer": incoming.peer, "method": incoming.method, "path": incoming.path},
            )
            self._fail(incoming, "no answer")

    @staticmethod
    def _fail(incoming: IncomingStream, reason: str) -> None:
        """A 500 if nothing was answered yet, else reset the stream."""
        if not incoming.answered:
            try:
                incoming.answer(500, _json_error(reason), {"content-type": "application/json"})
                return
            except (ValueError, RuntimeError):
                pass
        incoming.stream.reset(h2core.INTERNAL_ERROR)
