"""Faults with real processes: a full disk under the store, an export target that dies
mid-stream, a gateway restarted while clients loop."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from clusterlink_gateway.client import APIError
from support.fabric import Fabric
from support.gateway import GatewayProcess, stored
from support.pki import TestCA
from support.traffic import get


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs for the state directory (needs root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_fails_writes_cleanly_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    gw = GatewayProcess(
        tmp_path, "cl0", TestCA(tmp_path / "pki"), extra={"state_dir": str(small_disk / "state")}
    )
    gw.start()
    try:
        c = gw.client
        acked = []
        for i in range(5):
            c.create("peers", {"name": f"p{i}", "spec": {"gateways": [{"host": "h"}]}})
            acked.append(f"p{i}")
        filler = small_disk / "filler"
        try:  # fill the disk to the last byte
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
        failures = 0
        for i in range(5, 40):
            try:
                c.create(
                    "peers",
                    {
                        "name": f"p{i}",
                        "labels": {"pad": "x" * 60},
                        "spec": {"gateways": [{"host": "h"}]},
                    },
                )
                acked.append(f"p{i}")
            except APIError as exc:
                assert exc.status == 507, exc
                assert "state store write failed" in exc.message
                failures += 1
        assert failures > 0, "the disk never filled up"
        # refused writes are not in memory either: what the API lists is what is on disk
        assert [p["name"] for p in stored(c, "peers")] == sorted(acked)
        assert c.status()["ready"] is True
        filler.unlink()
        c.create("peers", {"name": "after", "spec": {"gateways": [{"host": "h"}]}})
        acked.append("after")
        gw.stop()
        db = sqlite3.connect(small_disk / "state" / "state.db")
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        db.close()
        gw.start()
        assert sorted(p["name"] for p in stored(c, "peers")) == sorted(acked)
    finally:
        gw.stop()


class Dribbler:
    """A TCP target that sends a little, then dies (closes with RST) mid-stream."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.sendall(b"x" * 100_000)
        time.sleep(0.3)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()


def test_export_target_dies_mid_stream(fabric: Fabric) -> None:
    target = Dribbler()
    cl0, cl1 = fabric.client("cl0"), fabric.client("cl1")
    cl0.create("exports", {"name": "dribble", "spec": {"port": target.port}})
    fabric.export_echo("cl0")
    fabric.allow_all("cl0", "cl1")
    fabric.add_peer("cl1", "cl0")
    cl1.create("imports", {"name": "dribble", "spec": {"sources": [{"peer": "cl0"}]}})
    cl1.create("imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}})
    client = socket.create_connection(
        ("127.0.0.1", fabric.import_port("cl1", "dribble")), timeout=10
    )
    got = 0
    ended = False
    try:
        while chunk := client.recv(65536):
            got += len(chunk)
        ended = True
    except ConnectionResetError:
        ended = True
    assert ended and got == 100_000
    client.close()
    assert get(fabric.import_port("cl1", "http-echo")) == "cl0"  # both gateways healthy
    assert cl0.status()["ready"] and cl1.status()["ready"]


def test_restart_while_clients_loop(fabric: Fabric) -> None:
    """New connections work again soon after a restart of the importing gateway (about 1 s on a
    quiet machine: printed, not asserted, since a busy CI host starts Python slower); a
    connection through another gateway is untouched."""
    # about restart timing, not admission: cl0 admits its importers without Peers for them (and
    # so does not heartbeat them: no extra load while cl1 restarts)
    fabric.start("cl0", extra={"listen": {"open_fabric": True}})
    fabric.export_echo("cl0")
    fabric.allow_all("cl0", "cl1", "cl2")
    for importer in ("cl1", "cl2"):
        fabric.add_peer(importer, "cl0", mutual=False)
        fabric.client(importer).create(
            "imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}}
        )
    port1 = fabric.import_port("cl1", "http-echo")
    port2 = fabric.import_port("cl2", "http-echo")
    first = (get(port1), get(port2))
    assert first == ("cl0", "cl0"), first
    results: list[tuple[float, str]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            results.append((time.monotonic(), get(port1, timeout=2)))
            time.sleep(0.02)

    thread = threading.Thread(target=loop)
    thread.start()
    other = [get(port2) for _ in range(3)]
    fabric["cl1"].stop()
    fabric["cl1"].start(wait=False)
    started = time.monotonic()
    fabric["cl1"].wait_ready()
    time.sleep(3)
    other += [get(port2) for _ in range(3)]
    stop.set()
    thread.join()
    first_ok = min(t for t, r in results if r == "cl0" and t > started)
    print(f"\nrestart: new connections work again {first_ok - started:.2f} s after the start")
    assert first_ok - started < 20.0, first_ok - started  # back at all, not a speed bound
    assert all(r == "cl0" for t, r in results if t > first_ok), [
        r for t, r in results if t > first_ok
    ][:5]
    assert other == ["cl0"] * 6


def test_limits_connections_and_idle_timeout(fabric: Fabric) -> None:
    fabric.start("cl1", extra={"dataplane": {"max_connections_per_import": 3, "idle_timeout": 1.0}})
    cl0, cl1 = fabric.client("cl0"), fabric.client("cl1")
    holder = socket.create_server(("127.0.0.1", 0))  # a target that accepts and stays silent
    cl0.create("exports", {"name": "hold", "spec": {"port": holder.getsockname()[1]}})
    fabric.allow_all("cl0", "cl1")
    fabric.add_peer("cl1", "cl0")
    cl1.create("imports", {"name": "hold", "spec": {"sources": [{"peer": "cl0"}]}})
    port = fabric.import_port("cl1", "hold")
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    deadline = time.monotonic() + 5
    while cl1.get("imports", "hold")["status"]["active_connections"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # Over the limit: reset, never served. The reset can come before connect() has read the
    # socket's state (a busy machine), so connect() itself may raise it.
    with (
        pytest.raises((ConnectionResetError, BrokenPipeError)),
        socket.create_connection(("127.0.0.1", port), timeout=5) as extra,
    ):
        extra.sendall(b"x")
        assert extra.recv(1) == b"", "the connection over the limit was served"
    started = time.monotonic()
    for sock in held:  # idle for longer than idle_timeout: reset by the gateway
        with pytest.raises(ConnectionResetError):
            while sock.recv(1024):  # an orderly close would end the loop and fail the test
                pass
        sock.close()
    assert time.monotonic() - started < 15  # the idle timeout, not some much later close
    holder.close()
