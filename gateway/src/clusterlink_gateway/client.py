"""A small synchronous admin-API client (unix socket, or HTTPS with an admin certificate)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_SOCKET = "/run/clusterlink/admin.sock"


class APIError(Exception):
    """The API answered with an error; ``message`` is its own explanation."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any


class AdminClient:
    """``AdminClient(socket_path=...)`` or ``AdminClient(server="https://h:9443", cert=...)``."""

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        server: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        cacert: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.socket_path = socket_path or DEFAULT_SOCKET
        self.server = server
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if server:
            ctx = ssl.create_default_context(cafile=cacert)
            if cert:
                ctx.load_cert_chain(cert, key)
            self._ssl = ctx

    def _connection(self) -> http.client.HTTPConnection:
        if not self.server:
            return _UnixConnection(self.socket_path, self.timeout)
        url = urlsplit(self.server)
        if url.scheme != "https":
            raise ValueError("--server must be an https:// URL (the admin listener requires TLS)")
        return http.client.HTTPSConnection(
            url.hostname or "", url.port or 9443, timeout=self.timeout, context=self._ssl
        )

    @property
    def target(self) -> str:
        return self.server or self.socket_path

    def raw(self, method: str, path: str, body: bytes | None = None) -> Response:
        """One request; the body is parsed as JSON when it is JSON."""
        conn = self._connection()
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        parsed: Any = None
        if data:
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = data.decode(errors="replace")
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """A request that must succeed; APIError carries the API's message otherwise."""
        payload = None if body is None else json.dumps(body).encode()
        resp = self.raw(method, path, payload)
        if resp.status >= 400:
            message = resp.body.get("message") if isinstance(resp.body, dict) else resp.body
            raise APIError(resp.status, str(message or "request failed"), resp.body)
        return resp.body

    # Convenience wrappers ---------------------------------------------------------------------

    def list(self, plural: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/v1/{plural}")

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/{plural}/{name}")

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"/v1/{plural}", obj)

    def replace(self, plural: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", f"/v1/{plural}/{name}", obj)

    def delete(self, plural: str, name: str) -> None:
        self.request("DELETE", f"/v1/{plural}/{name}")

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/v1/status")
