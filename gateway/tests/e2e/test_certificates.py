"""Certificates are reloaded without a restart (TestDynamicPeerCertificates): on file change and
on SIGHUP; established connections survive; a gateway on another fabric is refused."""

from __future__ import annotations

import signal
import socket
import threading
import time

from support.fabric import Fabric
from support.pki import TestCA
from support.traffic import eventually, get


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
            while data := conn.recv(65536):
                conn.sendall(data)

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


def test_rotation_to_a_new_fabric_without_restart(fabric: Fabric) -> None:
    echo = TcpEcho()
    try:
        cl0, cl1 = fabric.client("cl0"), fabric.client("cl1")
        cl0.create("exports", {"name": "echo", "spec": {"port": echo.port}})
        cl0.create("exports", {"name": "http-echo", "spec": {"port": fabric.echo_port("cl0")}})
        fabric.allow_all("cl0", "cl1")
        fabric.add_peer("cl1", "cl0")
        cl1.create("imports", {"name": "echo", "spec": {"sources": [{"peer": "cl0"}]}})
        cl1.create("imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}})
        port = fabric.import_port("cl1", "http-echo")
        assert get(port) == "cl0"
        long_lived = socket.create_connection(
            ("127.0.0.1", fabric.import_port("cl1", "echo")), timeout=5
        )
        assert roundtrip(long_lived, b"before") == b"before"
        pids = {n: fabric[n].proc.pid for n in ("cl0", "cl1")}

        new = TestCA(fabric.root / "pki-2", name="fabric-2")
        # cl1 alone moves to the new fabric (file watch picks it up): cl0 is now foreign to it
        fabric["cl1"].install_tls(new.issue("cl1"), new.ca_path.read_bytes())
        deadline = time.monotonic() + 20
        while cl1.get("peers", "cl0")["status"]["reachable"] is not False:
            assert time.monotonic() < deadline, cl1.get("peers", "cl0")
            time.sleep(0.1)
        assert get(port) == "reset"
        # the established connection was not dropped by the reload
        assert roundtrip(long_lived, b"during") == b"during"
        # cl0 follows, this time through SIGHUP
        fabric["cl0"].install_tls(new.issue("cl0"), new.ca_path.read_bytes())
        fabric["cl0"].signal(signal.SIGHUP)
        assert eventually(lambda: get(port), "cl0", timeout=30) == "cl0"
        assert roundtrip(long_lived, b"after") == b"after"
        assert {n: fabric[n].proc.pid for n in ("cl0", "cl1")} == pids  # no restart
        assert "certificates reloaded" in fabric["cl0"].log_text()
        long_lived.close()
    finally:
        echo.close()


def test_overlapping_bundle_allows_a_rollover(fabric: Fabric) -> None:
    """Old and new CA trusted together: a gateway re-issued by the new CA keeps working."""
    cl0, cl1 = fabric.client("cl0"), fabric.client("cl1")
    fabric.export_echo("cl0")
    fabric.allow_all("cl0", "cl1")
    fabric.add_peer("cl1", "cl0")
    cl1.create("imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}})
    port = fabric.import_port("cl1", "http-echo")
    assert get(port) == "cl0"
    new = TestCA(fabric.root / "pki-2", name="fabric-2")
    both = fabric.ca.ca_path.read_bytes() + new.ca_path.read_bytes()
    for name in ("cl0", "cl1"):  # step 1: trust both, keep the old certificates
        gw = fabric[name]
        gw.install_tls(_current(gw), both)
        gw.signal(signal.SIGHUP)
    assert get(port) == "cl0"
    fabric["cl0"].install_tls(new.issue("cl0"), both)  # step 2: re-issue one side
    fabric["cl0"].signal(signal.SIGHUP)
    for _ in range(20):
        assert get(port) == "cl0"
        time.sleep(0.05)
    assert cl0.status()["ready"]


def _current(gw):  # the gateway's own certificate and key, unchanged
    from support.pki import Issued

    return Issued(gw.tls_dir / "gateway.crt", gw.tls_dir / "gateway.key")
