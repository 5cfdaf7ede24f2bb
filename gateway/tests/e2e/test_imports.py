"""Import listeners: port conflicts reported and recovered (TestImportConflictingTargetPort),
delete and re-use (TestImportDelete), an export to an explicit host (TestExportHost)."""

from __future__ import annotations

import socket
import time

from support.fabric import Fabric
from support.gateway import free_port
from support.traffic import get


def imp(name: str, port: int = 0, peer: str = "cl0") -> dict:
    return {
        "name": name,
        "spec": {"port": port, "sources": [{"peer": peer, "export": "http-echo"}]},
    }


def status(fabric: Fabric, name: str) -> dict:
    return fabric.client("cl0").get("imports", name)["status"]


def wait_listening(fabric: Fabric, name: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while not (st := status(fabric, name))["listening"]:
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    return st


def test_conflicting_import_ports(fabric: Fabric) -> None:
    cl0 = fabric.client("cl0")
    port = free_port()
    cl0.create("imports", imp("imp1", port))
    cl0.create("imports", imp("imp2", port))
    assert status(fabric, "imp1")["listening"] is True
    st2 = status(fabric, "imp2")
    assert st2["listening"] is False and "address in use" in st2["error"]
    assert cl0.status()["ready"] is True  # a conflict is a status, not a crash
    other = free_port()
    cl0.replace("imports", "imp2", imp("imp2", other))
    st2 = wait_listening(fabric, "imp2")
    assert st2["error"] is None and st2["port"] == other
    assert get(other) == "reset"  # listening; no source can serve it yet


def test_conflict_recovers_when_the_port_is_freed(fabric: Fabric) -> None:
    cl0 = fabric.client("cl0")
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    cl0.create("imports", imp("imp1", port))
    assert "address in use" in status(fabric, "imp1")["error"]
    holder.close()
    st = wait_listening(fabric, "imp1", timeout=5)
    assert st["error"] is None
    # and between imports: the loser takes the port over when the winner is deleted
    cl0.create("imports", imp("imp2", port))
    assert status(fabric, "imp2")["listening"] is False
    cl0.delete("imports", "imp1")
    wait_listening(fabric, "imp2", timeout=2)


def test_deleted_import_frees_its_port(fabric: Fabric) -> None:
    cl0 = fabric.client("cl0")
    port = free_port()
    cl0.create("imports", imp("imp1", port))
    cl0.delete("imports", "imp1")
    assert get(port) == "refused"
    cl0.create("imports", imp("imp2", port))
    assert wait_listening(fabric, "imp2")["port"] == port


def test_export_to_an_explicit_host(fabric: Fabric) -> None:
    """The export target is any host:port, here on another loopback address."""
    from support.traffic import EchoServer

    echo = EchoServer("far-away", host="127.0.0.2")
    try:
        cl0 = fabric.client("cl0")
        cl0.create(
            "exports", {"name": "http-echo", "spec": {"host": "127.0.0.2", "port": echo.port}}
        )
        fabric.allow_all("cl0")
        fabric.add_peer("cl0", "cl0")
        cl0.create("imports", imp("http-echo"))
        port = fabric.import_port("cl0", "http-echo")
        assert get(port) == "far-away"
    finally:
        echo.close()
