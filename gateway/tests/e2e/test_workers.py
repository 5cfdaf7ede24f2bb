"""``workers: 2``: a data-plane worker process beside the main one, sharing the peer and import
ports (SO_REUSEPORT), following object changes, restarted when it dies, gone with the main."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

from support.fabric import Fabric
from support.traffic import eventually

WORKERS = {"workers": 2}


class HoldSink:
    """Greets every connection with one byte and holds it open."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.sendall(b"!")
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def children(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def sockets_on_port(port: int, state: str) -> set[int]:
    """Inodes of the TCP sockets with local ``port`` in ``state`` (01 established, 0A listen)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(int(fields[9]))
    return inodes


def held_by(pid: int, inodes: set[int]) -> int:
    count = 0
    for fd in os.scandir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(fd.path)
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            count += 1
    return count


def wait_for(check, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert sock.recv(1) == b"!"
    return sock


def test_two_workers_share_the_ports_follow_changes_and_die_with_the_main(
    fabric: Fabric,
) -> None:
    sink = HoldSink()
    held: list[socket.socket] = []
    try:
        cl0, cl1 = fabric.start("cl0", extra=WORKERS), fabric.start("cl1", extra=WORKERS)
        main = cl1.proc.pid  # type: ignore[union-attr]
        wait_for(lambda: len(children(main)) == 1)
        (worker,) = children(main)
        # an import created after the workers started: the worker listens on its port too
        port = fabric.link_service("cl0", "cl1", "sink", sink.port)
        wait_for(lambda: held_by(worker, sockets_on_port(port, "0A")) == 1)
        assert held_by(main, sockets_on_port(port, "0A")) == 1
        assert eventually(lambda: "ok" if connect(port) else "", "ok") == "ok"

        # the kernel spreads new connections over both processes; each one is carried
        held = [connect(port) for _ in range(64)]
        established = sockets_on_port(port, "01")
        per_process = {pid: held_by(pid, established) for pid in (main, worker)}
        assert all(per_process.values()), per_process
        assert sum(per_process.values()) == len(held), per_process
        print(f"\nconnections per process (main, worker): {per_process}")

        # a worker that dies is replaced, and the replacement serves the import
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: [p for p in children(main) if p != worker and alive(p)] != [])
        (replacement,) = [p for p in children(main) if alive(p)]
        wait_for(lambda: held_by(replacement, sockets_on_port(port, "0A")) == 1)
        for _ in range(10):
            connect(port).close()

        # a deleted import stops listening in the worker too
        fabric.client("cl1").delete("imports", "sink")
        wait_for(lambda: not sockets_on_port(port, "0A"))

        # kill -9 of the main process takes its worker with it (no orphan)
        exporter_workers = children(cl0.proc.pid)  # type: ignore[union-attr]
        cl1.kill9()
        wait_for(lambda: not alive(replacement), timeout=10)
        assert exporter_workers and all(alive(p) for p in exporter_workers)
        assert cl0.stop() == 0
        wait_for(lambda: not any(alive(p) for p in exporter_workers), timeout=10)
        assert "Traceback" not in cl0.log_text() + cl1.log_text()
    finally:
        for sock in held:
            sock.close()
        sink.close()
