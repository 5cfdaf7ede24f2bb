"""The part of systemd that a ``Type=notify`` service with a file descriptor store talks to:
a ``$NOTIFY_SOCKET`` receiving READY/STOPPING/FDSTORE/FDSTOREREMOVE, and a launcher passing the
stored sockets back as ``LISTEN_FDS``/``LISTEN_FDNAMES`` with ``LISTEN_PID`` set to the child."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from .gateway import GatewayProcess

# Runs in the child: move the passed fds to 3, 4, ..., set LISTEN_PID to its own pid, exec.
LAUNCHER = """
import fcntl, os, sys
fds = [int(x) for x in sys.argv[1].split(",") if x]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)))
os.execv(sys.argv[2], sys.argv[2:])
"""


class ServiceManager:
    """Receives a service's notifications and keeps its fd store, like systemd does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.store: list[tuple[str, int]] = []  # (name, fd), in the order stored
        self.messages: list[dict[str, str]] = []

    def collect(self) -> None:
        """Read every pending notification and apply it."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 4096, 16)
            except BlockingIOError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)
            name = fields.get("FDNAME", "stored")
            if fields.get("FDSTOREREMOVE") == "1":
                for old_name, fd in [item for item in self.store if item[0] == name]:
                    os.close(fd)
                    self.store.remove((old_name, fd))
            if fields.get("FDSTORE") == "1":
                self.store += [(name, fd) for fd in fds]
            else:
                for fd in fds:
                    os.close(fd)

    def wait_for(self, key: str, value: str = "1", timeout: float = 15.0) -> dict[str, str]:
        """The first message since the last call with ``key=value``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.collect()
            for i, fields in enumerate(self.messages):
                if fields.get(key) == value:
                    del self.messages[: i + 1]
                    return fields
            time.sleep(0.02)
        raise TimeoutError(f"no {key}={value} notification; got {self.messages}")

    def names(self) -> list[str]:
        self.collect()
        return sorted(name for name, _ in self.store)

    def start(self, gateway: GatewayProcess, *, wait: bool = True) -> None:
        """Start ``gateway`` with the stored sockets, as systemd starts a service."""
        self.collect()
        fds = [fd for _, fd in self.store]
        gateway.start(
            wait=wait,
            prefix=[sys.executable, "-c", LAUNCHER, ",".join(map(str, fds))],
            env={
                "NOTIFY_SOCKET": str(self.path),
                "LISTEN_FDNAMES": ":".join(name for name, _ in self.store),
            },
            pass_fds=tuple(fds),
        )

    def close(self) -> None:
        for _, fd in self.store:
            os.close(fd)
        self.store.clear()
        self.sock.close()
