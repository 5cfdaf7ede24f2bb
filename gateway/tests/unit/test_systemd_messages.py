"""sd_notify messages and LISTEN_FDS parsing of ``clusterlink_gateway.systemd`` (real sockets)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterlink_gateway import systemd


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setattr(systemd, "_inherited", None)
    yield sock
    sock.close()


def test_no_notify_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_new_listener_is_stored_with_its_name(notify_socket: socket.socket) -> None:
    sock = systemd.listening_socket("import-web", "127.0.0.1", 0)
    with sock:
        data, fds, _, _ = socket.recv_fds(notify_socket, 1024, 4)
        assert data.decode().splitlines() == ["FDSTORE=1", "FDNAME=import-web"]
        assert len(fds) == 1
        with socket.socket(fileno=fds[0]) as stored:
            assert stored.getsockname() == sock.getsockname()


def test_sockets_for_another_pid_are_not_adopted(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "peer")
    assert systemd._take_inherited() == {}
    assert "LISTEN_FDS" not in os.environ  # not passed on to children
