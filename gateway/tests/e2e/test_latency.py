"""Per-message latency knobs on real gateways: TCP_NODELAY on every leg of a relayed
connection, and the audit line's level (``log.audit``), including a live change on SIGHUP."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
from pathlib import Path

import pytest

from support.fabric import Fabric
from support.probes import log_records, poll
from support.traffic import get

_SYS_PIDFD_GETFD = 438  # x86_64 and aarch64 (asm-generic) alike
_LIBC = ctypes.CDLL(None, use_errno=True)


def _socket_ports() -> dict[int, tuple[int, int]]:
    """inode -> (local port, remote port) of every TCP socket on the host."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            out[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
    return out


def _sockets_of(pid: int) -> dict[tuple[int, int], int]:
    """(local port, remote port) -> fd number, for the TCP sockets process ``pid`` holds."""
    ports = _socket_ports()
    out = {}
    fd_dir = Path(f"/proc/{pid}/fd")
    for entry in fd_dir.iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = int(target[8:-1])
            if inode in ports:
                out[ports[inode]] = int(entry.name)
    return out


def _nodelay(pid: int, fd: int) -> int:
    """TCP_NODELAY of socket ``fd`` in process ``pid``, read through a duplicate of it."""
    pidfd = os.pidfd_open(pid)
    try:
        dup = _LIBC.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOSYS, errno.EPERM):
                pytest.skip(f"pidfd_getfd not available here ({os.strerror(err)})")
            raise OSError(err, os.strerror(err))
    finally:
        os.close(pidfd)
    with socket.socket(fileno=dup) as sock:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_every_leg_of_a_relayed_connection_has_tcp_nodelay(fabric: Fabric) -> None:
    """client -> import listener, importer -> exporter link (both ends), exporter -> service:
    small messages are sent at once on each (Nagle off), not held for an ACK."""
    port = fabric.link_service("cl0", "cl1", "http-echo", fabric.echo_port("cl0"))
    assert get(port) == "cl0"
    importer, exporter = fabric["cl1"], fabric["cl0"]
    assert importer.proc is not None and exporter.proc is not None
    peer_port = int(exporter.config["listen"]["port"])
    service = fabric.echo_port("cl0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        # Silent client: the connection stays open through both gateways to the service.
        mine = client.getsockname()[1]
        legs: dict[str, list[tuple[int, int]]] = {}

        def find() -> bool:
            a = _sockets_of(importer.proc.pid)  # type: ignore[union-attr]
            b = _sockets_of(exporter.proc.pid)  # type: ignore[union-attr]
            ipid, epid = importer.proc.pid, exporter.proc.pid  # type: ignore[union-attr]
            legs.update(
                {
                    "importer: client socket": [
                        (ipid, fd) for ports, fd in a.items() if ports == (port, mine)
                    ],
                    "importer: link to the exporter": [
                        (ipid, fd) for (_, rp), fd in a.items() if rp == peer_port
                    ],
                    "exporter: link from the importer": [
                        (epid, fd) for (lp, rp), fd in b.items() if lp == peer_port and rp
                    ],
                    "exporter: socket to the service": [
                        (epid, fd) for (_, rp), fd in b.items() if rp == service
                    ],
                }
            )
            return all(legs.values())

        assert poll(find, timeout=20), f"a leg has no socket: {legs}"
        for leg, found in legs.items():
            for pid, fd in found:
                assert _nodelay(pid, fd) == 1, f"{leg}: TCP_NODELAY is off"


def test_audit_level_is_honoured_and_changes_live(fabric: Fabric) -> None:
    """``log.audit: off`` writes no audit line even at log.level debug; ``debug`` writes it
    only at log.level debug; back to ``info`` on SIGHUP writes it again."""
    fabric.start("cl0", extra={"log": {"audit": "off"}})  # log.level debug (the tests' default)
    fabric.start("cl1", extra={"log": {"level": "info", "audit": "debug"}})
    port = fabric.link_service("cl0", "cl1", "http-echo", fabric.echo_port("cl0"))
    for _ in range(3):
        assert get(port) == "cl0"
    importer, exporter = fabric["cl1"], fabric["cl0"]
    # the connections ended (counted as closed) before we look for their lines
    assert poll(lambda: "import_connections_closed" in _closed(fabric, "cl1", 3))
    assert log_records(importer, "connection") == []
    assert log_records(exporter, "ingress connection") == []

    importer.config["log"]["audit"] = "info"
    importer.write_config()
    importer.signal(signal.SIGHUP)
    assert poll(lambda: get(port) == "cl0" and log_records(importer, "connection"), timeout=30)
    [line, *_] = log_records(importer, "connection")
    assert line["level"] == "info" and line["import"] == "http-echo" and line["peer"] == "cl0"
    assert log_records(exporter, "ingress connection") == []


def _closed(fabric: Fabric, name: str, at_least: int) -> str:
    from support.probes import metrics

    m = metrics(fabric.client(name))
    done = m.get('clusterlink_import_connections_closed_total{import_name="http-echo"}', 0)
    return "import_connections_closed" if done >= at_least else ""
