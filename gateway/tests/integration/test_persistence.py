"""State survives restarts and ``kill -9`` exactly; bad stored objects never stop the daemon."""

from __future__ import annotations

import random
import sqlite3
import threading
import time

from clusterlink_gateway.client import AdminClient, APIError
from support.gateway import GatewayProcess, stored


def peer(name: str, port: int = 443) -> dict:
    return {"name": name, "spec": {"gateways": [{"host": "127.0.0.1", "port": port}]}}


def test_restart_keeps_objects_and_import_ports(gateway: GatewayProcess) -> None:
    c = gateway.client
    c.create("peers", peer("cl1"))
    c.create("exports", {"name": "db", "labels": {"tier": "data"}, "spec": {"port": 5432}})
    ports = {}
    for name in ("a", "b", "c"):
        ports[name] = c.create("imports", {"name": name, "spec": {"sources": [{"peer": "cl1"}]}})[
            "status"
        ]["port"]
    c.delete("imports", "b")
    c.create(
        "policies",
        {"name": "p", "spec": {"action": "deny", "privileged": True, "from": [{}], "to": [{}]}},
    )
    before = {p: stored(c, p) for p in ("peers", "exports", "imports", "policies")}
    gateway.stop()
    gateway.start()
    after = {p: stored(c, p) for p in ("peers", "exports", "imports", "policies")}
    assert after == before
    assert {i["name"]: i["status"]["port"] for i in c.list("imports")} == {
        "a": ports["a"],
        "c": ports["c"],
    }
    # a freed port may be reused, a kept one never
    d = c.create("imports", {"name": "d", "spec": {"sources": [{"peer": "cl1"}]}})
    assert d["status"]["port"] not in (ports["a"], ports["c"])


def _writer(client: AdminClient, prefix: str, acked: list[str], stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        name = f"{prefix}-{i}"
        try:
            client.create("peers", peer(name, 1 + i % 60000))
        except (OSError, APIError):
            return  # the daemon died mid-request: this write was not acknowledged
        acked.append(name)
        i += 1


def test_kill9_during_write_burst_loses_no_acknowledged_write(gateway: GatewayProcess) -> None:
    rng = random.Random(7)
    for round_ in range(3):
        acked: list[list[str]] = [[] for _ in range(4)]
        stop = threading.Event()
        clients = [AdminClient(str(gateway.socket), timeout=5) for _ in acked]
        threads = [
            threading.Thread(target=_writer, args=(clients[i], f"r{round_}w{i}", acked[i], stop))
            for i in range(len(acked))
        ]
        for t in threads:
            t.start()
        time.sleep(0.3 + rng.random() * 0.7)
        gateway.kill9()
        stop.set()
        for t in threads:
            t.join(10)
        gateway.start()
        stored = {p["name"] for p in gateway.client.list("peers")}
        all_acked = {n for names in acked for n in names}
        assert len(all_acked) > 20, "the burst should have written something"
        missing = all_acked - stored
        assert not missing, f"acknowledged writes lost after kill -9: {sorted(missing)[:5]}"
        assert gateway.client.status()["invalid"] == []


def test_invalid_stored_objects_are_reported_not_fatal(gateway: GatewayProcess) -> None:
    c = gateway.client
    c.create("peers", peer("good"))
    c.create("peers", peer("victim"))
    gateway.stop()
    db = sqlite3.connect(gateway.root / "state" / "state.db")
    with db:
        db.execute(
            "UPDATE objects SET body = ? WHERE kind = 'peers' AND name = 'victim'",
            (
                '{"object": {"name": "victim", "spec": {"gateways": [{"host": "h", "port": 70000}]}}}',
            ),
        )
        db.execute("INSERT INTO objects VALUES ('peers', 'garbage', 'not json at all')")
        db.execute("INSERT INTO objects VALUES ('widgets', 'w', '{}')")
    db.close()
    gateway.start()
    status = c.status()
    invalid = {(i["kind"], i["name"]): i["error"] for i in status["invalid"]}
    assert set(invalid) == {("peers", "victim"), ("peers", "garbage"), ("widgets", "w")}
    assert "spec.gateways[0].port" in invalid[("peers", "victim")]
    assert [p["name"] for p in c.list("peers")] == ["good"]
    # an invalid object can be replaced or deleted through the API, and not re-created over
    try:
        c.create("peers", peer("victim"))
        raise AssertionError("create over an invalid stored object must conflict")
    except APIError as exc:
        assert exc.status == 409
    c.replace("peers", "victim", peer("victim"))
    c.delete("peers", "garbage")
    gateway.stop()
    gateway.start()
    assert [p["name"] for p in c.list("peers")] == ["good", "victim"]
    assert [(i["kind"], i["name"]) for i in c.status()["invalid"]] == [("widgets", "w")]
