"""Small probes for end-to-end tests: a TCP echo service, a round trip, /metrics, JSON logs."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from clusterlink_gateway.client import AdminClient

from .gateway import GatewayProcess


class TcpEcho:
    """A plain TCP echo server (keeps connections open for as long as the client wants)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def echo_once(port: int) -> bytes | None:
    """One short exchange with a new connection to ``port``; None if it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            got = roundtrip(sock, b"ping")
    except OSError:
        return None
    return got or None


def metrics(client: AdminClient) -> dict[str, float]:
    """``/metrics`` as {'name{labels}': value}."""
    resp = client.raw("GET", "/metrics")
    assert resp.status == 200
    out = {}
    for line in resp.body.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def log_records(gw: GatewayProcess, message: str) -> list[dict[str, Any]]:
    """The gateway's JSON log records with this message."""
    out = []
    for line in gw.log_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("msg") == message:
            out.append(rec)
    return out


def poll(condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.1) -> bool:
    """Wait until ``condition()`` is true; False if it never was within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
