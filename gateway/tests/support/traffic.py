"""Real traffic for data-plane tests: an HTTP echo service and a client that tells a reset,
a refused connection and an answer apart."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoServer:
    """``GET /`` answers the server's name (like hashicorp/http-echo in upstream's tests)."""

    def __init__(self, text: str, host: str = "127.0.0.1") -> None:
        body = text.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def get(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> str:
    """One HTTP GET with a new connection: the body, or ``reset`` / ``refused`` / ``closed``."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    with sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except TimeoutError:
            return "timeout"
    if not data:
        return "closed"
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
        return f"http-error: {head[:40]!r}"
    return body.decode()


def eventually(
    fn: Callable[[], str], expected: str, timeout: float = 20.0, interval: float = 0.1
) -> str:
    """Poll ``fn`` until it returns ``expected``; the last value otherwise."""
    deadline = time.monotonic() + timeout
    value = fn()
    while value != expected and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    return value
