"""systemd integration without systemd: a real daemon with a real ``$NOTIFY_SOCKET`` and the
sockets of its fd store passed back as ``LISTEN_FDS``. A restart refuses no client: the kernel
queues connections on the stored sockets until the next process takes them over; relayed
connections drain at SIGTERM; a peer's new link waits out the restart."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fabric import Fabric
from support.gateway import free_port
from support.service_manager import ServiceManager
from support.traffic import eventually, get

REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ServiceManager]:
    m = ServiceManager(tmp_path / "notify.sock")
    yield m
    m.close()


def body(sock: socket.socket) -> str:
    """Send one GET on a connected socket; the response body."""
    with sock:
        sock.sendall(REQUEST)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2].decode()


def web_import(fabric: Fabric, on: str = "cl0", peer: str = "cl1") -> int:
    """Import ``web`` on ``on`` from ``peer``'s echo export; its port once it answers."""
    fabric.export_echo(peer)
    fabric.allow_all(on, peer)
    fabric.add_peer(on, peer)
    spec = {"port": 0, "sources": [{"peer": peer, "export": "http-echo"}]}
    fabric.client(on).create("imports", {"name": "web", "spec": spec})
    port = fabric.import_port(on, "web")
    assert eventually(lambda: get(port), peer) == peer
    return port


def test_restart_serves_a_client_queued_in_the_gap(fabric: Fabric, manager: ServiceManager) -> None:
    cl0 = fabric.start("cl0", launch=manager.start)
    manager.wait_for("READY")
    fabric.start("cl1")
    port = web_import(fabric)
    assert manager.names() == ["import-web", "peer"]

    cl0.stop()
    manager.wait_for("STOPPING")
    client = socket.create_connection(("127.0.0.1", port), timeout=15)  # queued: no process
    client.sendall(REQUEST)
    time.sleep(0.5)
    manager.start(cl0)
    manager.wait_for("READY")
    assert body(client) == "cl1"
    assert cl0.log_text().count("listening socket inherited") == 2
    assert manager.names() == ["import-web", "peer"]  # not stored twice

    fabric.client("cl0").delete("imports", "web")  # a deleted import leaves the store
    assert manager.names() == ["peer"]
    assert get(port) == "refused"


def test_inherited_socket_on_another_address_is_replaced(
    fabric: Fabric, manager: ServiceManager
) -> None:
    cl0 = fabric.start("cl0", launch=manager.start)
    manager.wait_for("READY")
    cl0.stop()
    old_port = cl0.config["listen"]["port"]
    cl0.config["listen"]["port"] = new_port = free_port()
    manager.start(cl0)
    manager.wait_for("READY")
    assert manager.names() == ["peer"]
    stored = socket.socket(fileno=os.dup(manager.store[0][1]))
    with stored:
        assert stored.getsockname()[1] == new_port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", old_port), timeout=2).close()


def test_stop_drains_relayed_connections(fabric: Fabric) -> None:
    cl0 = fabric.start("cl0")
    fabric.start("cl1")
    port = web_import(fabric)
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    time.sleep(0.5)  # relayed: CONNECT answered, nothing sent yet
    cl0.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert cl0.proc is not None and cl0.proc.poll() is None, "exited before the drain"
    assert body(client) == "cl1"
    assert cl0.proc.wait(5) == 0


def test_second_signal_exits_at_once(fabric: Fabric) -> None:
    cl0 = fabric.start("cl0")
    fabric.start("cl1")
    port = web_import(fabric)
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    time.sleep(0.5)
    cl0.signal(signal.SIGTERM)
    time.sleep(0.5)
    cl0.signal(signal.SIGTERM)
    assert cl0.proc is not None and cl0.proc.wait(3) == 1
    client.close()


def test_link_waits_for_a_restarting_peer(fabric: Fabric, manager: ServiceManager) -> None:
    fabric.start("cl0")
    cl1 = fabric.start("cl1", launch=manager.start)
    manager.wait_for("READY")
    port = web_import(fabric)
    cl1.stop()  # its links to cl0 get GOAWAY; its peer socket stays in the store
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(get(port, timeout=20)))
    thread.start()
    time.sleep(3)  # longer than the importer's connect_timeout (2 s)
    manager.start(cl1)
    thread.join(20)
    assert result == ["cl1"], fabric["cl0"].log_text()[-6000:]
