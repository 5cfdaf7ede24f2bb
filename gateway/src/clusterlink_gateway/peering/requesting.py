"""The HTTP/2 client role of a peer link: requests and CONNECTs to the peer."""

from __future__ import annotations

from collections.abc import Callable

from . import h2core
from .h2core import Limits
from .session import KEEPALIVE, Session
from .stream import NotProcessed, RequestRejected, Response, Stream, _Collector, _retrieve


class ClientLink(Session):
    """The HTTP/2 client role of a link: sends requests and CONNECTs to ``peer_name``."""

    def __init__(
        self,
        peer_name: str,
        limits: Limits,
        *,
        keepalive: float = KEEPALIVE,
        on_lost: Callable[[ClientLink], None] | None = None,
    ) -> None:
        super().__init__(limits, client_side=True, idle_timeout=None, keepalive=keepalive)
        self.expected_peer = peer_name
        self.endpoint: tuple[str, int] | None = None
        self.draining = False
        self._on_lost = on_lost

    @property
    def usable(self) -> bool:
        return not self.draining and super().usable

    @property
    def closed_gracefully(self) -> bool:
        """The peer said GOAWAY without an error (e.g. idle or shutting down)."""
        return self._core.goaway_received is not None and self._core.failed is None

    def drain(self) -> None:
        """No new streams; close once the active ones finished."""
        self.draining = True
        if not self._streams and self._transport is not None:
            self.close()

    def _link_down(self, exc: Exception | None) -> None:
        if self._on_lost is not None:
            self._on_lost(self)

    def _on_stream_closed(self, ev: h2core.StreamClosed) -> None:
        super()._on_stream_closed(ev)
        if self.draining and not self._streams:
            self.close()

    def _on_response(self, ev: h2core.ResponseReceived) -> None:
        stream = self._streams.get(ev.stream_id)
        if stream is not None and stream._response is not None and not stream._response.done():
            stream._response.set_result((ev.status, ev.headers))

    def _open(
        self,
        method: str,
        authority: str,
        path: str | None,
        headers: dict[str, str] | None,
        end: bool,
    ) -> Stream:
        if not self.usable:
            raise NotProcessed(f"link to {self.peer or self.expected_peer} is not usable")
        try:
            sid = self._core.open_stream(
                method, authority, path=path, headers=headers, end_stream=end
            )
        except h2core.CannotOpenStream as exc:
            raise NotProcessed(str(exc)) from None
        except ValueError as exc:  # headers too large or not valid in HTTP/2
            raise RequestRejected(str(exc)) from None
        stream = Stream(self, sid)
        stream._response = self._loop.create_future()
        stream._response.add_done_callback(_retrieve)
        self._streams[sid] = stream
        self._flush()
        return stream

    async def request(
        self,
        method: str,
        path: str,
        *,
        authority: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        max_body: int = 1 << 20,
    ) -> Response:
        stream = self._open(method, authority, path, headers, not body)
        collector = _Collector(max_body)
        stream.set_protocol(collector)
        try:
            if body:
                stream.write(body)
                stream.write_eof()
            status, response_headers = await stream._response  # type: ignore[misc]
            data = await collector.done
        except BaseException:
            stream.reset()
            raise
        return Response(status, response_headers, data)

    async def open_connect(
        self, authority: str, headers: dict[str, str] | None = None, *, max_body: int = 65536
    ) -> tuple[Response, Stream | None]:
        stream = self._open("CONNECT", authority, None, headers, False)
        try:
            status, response_headers = await stream._response  # type: ignore[misc]
            if 200 <= status < 300:
                return Response(status, response_headers, b""), stream
            collector = _Collector(max_body)
            stream.set_protocol(collector)
            body = await collector.done
        except BaseException:
            stream.reset()
            raise
        stream.write_eof()
        return Response(status, response_headers, body), None
