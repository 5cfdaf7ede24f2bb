"""Backups: ``gwctl export`` writes a gateway's objects with the allocated import ports;
``gwctl apply`` of that file on an empty gateway restores them with the same ports, and is
idempotent; a bad file names the document, object and field and changes nothing; a refusal
part-way through an apply is rolled back."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import yaml

from support.gateway import BIN, GatewayProcess, free_port, stored
from support.pki import TestCA


def gwctl(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "gwctl"), "--socket", str(gw.socket), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


OBJECTS = [
    {
        "kind": "Peer",
        "name": "east",
        "labels": {"site": "e"},
        "spec": {"gateways": [{"host": "127.0.0.1", "port": 9}]},
    },
    {"kind": "Export", "name": "web", "labels": {"app": "web"}, "spec": {"port": 8080}},
    {"kind": "Import", "name": "db", "spec": {"sources": [{"peer": "east"}]}},  # port 0
    {
        "kind": "Import",
        "name": "cache",
        "spec": {"sources": [{"peer": "east", "export": "redis"}], "lb_scheme": "static"},
    },  # port 0
    {
        "kind": "Policy",
        "name": "allow-east",
        "spec": {"action": "allow", "from": [{"matchLabels": {"site": "e"}}], "to": [{}]},
    },
]


def _listens(port: int) -> bool:
    """Something accepts on ``port``. The import resets the connection at once (its peer is
    not there); on a busy machine that reset can beat ``connect()``'s return: still accepted."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionResetError:
        return True
    except OSError:
        return False
    return True


def test_export_then_apply_on_a_fresh_gateway_restores_ports(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    old = GatewayProcess(tmp_path / "old", "cl0", ca).start()
    new = GatewayProcess(tmp_path / "new", "cl0", ca)
    try:
        src = tmp_path / "objects.yaml"
        src.write_text(yaml.safe_dump_all(OBJECTS))
        ok(gwctl(old, "create", "import", "early", "--source", "east"))  # takes the 1st port
        ok(gwctl(old, "apply", "-f", str(src)))
        ok(gwctl(old, "create", "import", "pinned", "--source", "east", "--port", str(free_port())))
        ok(gwctl(old, "delete", "import", "early"))  # a fresh allocation would now differ
        ports = {i["name"]: i["status"]["port"] for i in old.client.list("imports")}
        assert all(ports.values()) and len(set(ports.values())) == 3
        assert old.client.get("imports", "db")["spec"]["port"] == 0
        assert min(ports["db"], ports["cache"]) > 41000  # not where a fresh gateway starts

        backup = tmp_path / "backup" / "cl0.yaml"
        backup.parent.mkdir()
        written = gwctl(old, "export", "-f", str(backup))
        assert written.returncode == 0 and written.stdout == ""
        assert "6 objects written" in written.stderr
        text = backup.read_text()
        assert text.startswith("# gwctl export of gateway cl0")
        docs = list(yaml.safe_load_all(text))
        assert [d["kind"] for d in docs] == ["Peer", "Export"] + ["Import"] * 3 + ["Policy"]
        assert all(set(d) == {"kind", "name", "labels", "spec"} for d in docs)  # no status
        assert {d["name"]: d["spec"]["port"] for d in docs if d["kind"] == "Import"} == ports
        nowhere = gwctl(old, "export", "-f", str(tmp_path / "missing-dir" / "x.yaml"))
        assert nowhere.returncode == 2 and "missing-dir/x.yaml: cannot write" in nowhere.stderr
        as_json = json.loads(ok(gwctl(old, "export", "-o", "json")))
        assert as_json == docs and json.loads(ok(gwctl(old, "-o", "json", "export"))) == docs
        # the export applied back to its own gateway changes nothing (allocated == pinned)
        back = json.loads(ok(gwctl(old, "-o", "json", "apply", "-f", str(backup))))
        assert {r["result"] for r in back} == {"unchanged"}, back
        before = {p: stored(old.client, p) for p in ("peers", "exports", "imports", "policies")}
        old.stop()  # the host is rebuilt: its ports are free again

        new.start()  # an empty state dir
        first = json.loads(ok(gwctl(new, "-o", "json", "apply", "-f", str(backup))))
        assert [r["result"] for r in first] == ["created"] * 6
        assert [f"{r['kind']}/{r['name']}" for r in first][:2] == ["peer/east", "export/web"]
        for plural, objects in before.items():
            after = stored(new.client, plural)
            if plural == "imports":  # the allocated ports are now pinned in the spec
                objects = [{**o, "spec": {**o["spec"], "port": ports[o["name"]]}} for o in objects]
            assert after == objects, plural
        restored = {i["name"]: i["status"] for i in new.client.list("imports")}
        assert {n: s["port"] for n, s in restored.items()} == ports
        assert all(s["listening"] for s in restored.values()), restored
        assert all(_listens(port) for port in ports.values())
        again = json.loads(ok(gwctl(new, "-o", "json", "apply", "-f", str(backup))))
        assert [r["result"] for r in again] == ["unchanged"] * 6
        assert json.loads(ok(gwctl(new, "export", "-o", "json"))) == docs
    finally:
        old.stop()
        new.stop()
    for gw in (old, new):
        assert "Traceback" not in gw.log_text(), gw.log_tail()


def test_bad_file_names_document_object_and_field(gateway: GatewayProcess, tmp_path: Path) -> None:
    docs = [
        {"kind": "Peer", "name": "east", "spec": {"gateways": [{"host": "127.0.0.1", "port": 9}]}},
        {"kind": "Import", "name": "db", "spec": {"port": 70000, "sources": [{"peer": "east"}]}},
        {"kind": "Widget", "name": "w"},
        {"kind": "Export", "name": "web", "spec": {"port": 80, "colour": "red"}},
        {"kind": "Peer", "name": "east", "spec": {"gateways": [{"host": "127.0.0.2"}]}},
        {"kind": "Import", "name": "a", "spec": {"port": 41555, "sources": [{"peer": "east"}]}},
        {"kind": "Import", "name": "b", "spec": {"port": 41555, "sources": [{"peer": "east"}]}},
    ]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    bad = gwctl(gateway, "apply", "-f", str(path))
    assert bad.returncode == 2 and "nothing applied" in bad.stderr
    for words in (
        "document 2 (import/db): spec.port:",
        "document 3: kind: unknown kind 'Widget'",
        "document 4 (export/web): spec.colour: unknown field",
        "document 5 (peer/east): name: also in document 1",
        "document 7 (import/b): spec.port: 41555 is also import/a's",
    ):
        assert words in bad.stderr, (words, bad.stderr)
    assert all(gateway.client.list(p) == [] for p in ("peers", "imports", "exports"))
    path.write_text("kind: Peer\nname: [unclosed\n")
    broken = gwctl(gateway, "apply", "-f", str(path))
    assert broken.returncode == 2 and "not YAML/JSON" in broken.stderr
    missing = gwctl(gateway, "apply", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_refusal_part_way_is_rolled_back(tmp_path: Path) -> None:
    """The gateway refuses the second port-0 import (a one-port range): the peer, export and
    first import this run created are deleted and the updated export is put back."""
    ca = TestCA(tmp_path / "pki")
    port = free_port()
    gw = GatewayProcess(tmp_path, "cl0", ca, extra={"imports": {"port_range": [port, port]}})
    gw.start()
    try:
        ok(gwctl(gw, "create", "export", "web", "--port", "8080"))
        docs = [
            {"kind": "Peer", "name": "east", "spec": {"gateways": [{"host": "127.0.0.1"}]}},
            {"kind": "Export", "name": "web", "spec": {"port": 9090}},
            {"kind": "Import", "name": "a", "spec": {"sources": [{"peer": "east"}]}},
            {"kind": "Import", "name": "b", "spec": {"sources": [{"peer": "east"}]}},
        ]
        path = tmp_path / "objects.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        run = gwctl(gw, "apply", "-f", str(path))
        assert run.returncode == 1, run.stderr
        assert "import/b: error 409" in run.stderr and "no free port" in run.stderr
        assert "rolled back: import/a deleted, export/web restored, peer/east deleted" in run.stderr
        assert gw.client.list("peers") == [] and gw.client.list("imports") == []
        assert gw.client.get("exports", "web")["spec"]["port"] == 8080
    finally:
        gw.stop()
