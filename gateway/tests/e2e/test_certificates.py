"""Certificates are reloaded without a restart (TestDynamicPeerCertificates): on file change and
on SIGHUP; established connections survive; a gateway on another fabric is refused."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from clusterlink_gateway.client import AdminClient
from support.fabric import Fabric
from support.gateway import BIN, GatewayProcess, free_port
from support.pki import Issued, TestCA
from support.probes import TcpEcho, log_records, metrics, poll, roundtrip
from support.traffic import eventually, get


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


# -- one acceptance rule: the watcher, SIGHUP and config check refuse the same material -----------


def _failures(gw, reason: str) -> float:  # type: ignore[no-untyped-def]
    return metrics(gw.client).get(f'clusterlink_tls_reload_failures_total{{reason="{reason}"}}', 0)


def _served_serial(gw, ca: TestCA) -> int:  # type: ignore[no-untyped-def]
    """The serial of the certificate the peer port presents to a fabric client now."""
    probe = ca.issue("probe")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca.ca_path)
    ctx.load_cert_chain(probe.cert, probe.key)
    ctx.set_alpn_protocols(["h2"])
    listen = gw.config["listen"]
    raw = socket.create_connection((listen["address"], listen["port"]), timeout=5)
    with ctx.wrap_socket(raw, server_hostname=gw.peer_name) as tls:
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_watcher_refuses_a_fabric_certificate_for_another_name(fabric: Fabric) -> None:
    """A valid fabric certificate for another site name: the watcher refuses it like SIGHUP
    does; the site keeps serving under its own name (a new peer still connects)."""
    cl0 = fabric["cl0"]
    fabric.export_echo("cl0")
    fabric.allow_all("cl0", "cl1", "cl2")
    fabric.add_peer("cl1", "cl0")
    fabric.client("cl1").create(
        "imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}}
    )
    assert get(fabric.import_port("cl1", "http-echo")) == "cl0"
    original = _served_serial(cl0, fabric.ca)

    cl0.install_tls(fabric.ca.issue("cl9"), fabric.ca.ca_path.read_bytes())  # the watcher
    assert poll(lambda: _failures(cl0, "wrong-name") >= 1), cl0.log_tail()
    time.sleep(3)  # more watcher rounds: still one refusal, logged once
    assert _failures(cl0, "wrong-name") == 1
    refused = [
        r
        for r in log_records(cl0, "TLS reload refused; keeping the current material")
        if r["reason"] == "wrong-name"
    ]
    assert len(refused) == 1 and "not for this gateway's peer_name 'cl0'" in refused[0]["error"]
    assert _served_serial(cl0, fabric.ca) == original
    # a peer that dials now (a new handshake) still finds cl0 under its name
    fabric.add_peer("cl2", "cl0")
    fabric.client("cl2").create(
        "imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}}
    )
    assert eventually(lambda: get(fabric.import_port("cl2", "http-echo")), "cl0") == "cl0"
    assert get(fabric.import_port("cl1", "http-echo")) == "cl0"


def _bad_material(kind: str, fabric: Fabric, tmp_path: Path) -> Issued:
    if kind == "expired":
        return fabric.ca.issue("cl0", expired=True)
    if kind == "wrong-ca":
        return TestCA(tmp_path / "other", "other-fabric").issue("cl0")
    if kind == "cn-only":
        return fabric.ca.issue("cl0", san=False)
    a, b = fabric.ca.issue("cl0"), fabric.ca.issue("cl0-other", dns=["cl0"])
    return Issued(a.cert, b.key)  # key-mismatch


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("expired", "expired"),
        ("wrong-ca", "unknown-ca"),
        ("key-mismatch", "key-mismatch"),
        ("cn-only", "no-san"),
    ],
)
def test_sighup_and_watcher_refuse_the_same_bad_inputs(
    fabric: Fabric, tmp_path: Path, kind: str, reason: str
) -> None:
    gw = fabric["cl0"]
    original = _served_serial(gw, fabric.ca)
    gw.install_tls(_bad_material(kind, fabric, tmp_path), fabric.ca.ca_path.read_bytes())
    assert poll(lambda: _failures(gw, reason) >= 1), gw.log_tail()
    watched = [
        r
        for r in log_records(gw, "TLS reload refused; keeping the current material")
        if r["reason"] == reason
    ]
    gw.signal(signal.SIGHUP)
    assert poll(lambda: log_records(gw, "reload failed; keeping the running configuration"))
    sighup = log_records(gw, "reload failed; keeping the running configuration")[-1]["error"]
    assert watched and watched[-1]["error"] in sighup  # the same rule, the same words
    assert _failures(gw, reason) >= 2  # counted on both paths
    assert _served_serial(gw, fabric.ca) == original
    check = subprocess.run(
        [str(BIN / "clusterlink-gateway"), "--check-config", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode != 0 and watched[-1]["error"] in check.stderr


def test_admin_client_ca_reloads_on_sighup(tmp_path: Path, ca: TestCA) -> None:
    """Replace the admin client CA and SIGHUP: the old CA's operators are refused at once, the
    new CA's accepted (a fresh context is swapped in; a live one cannot drop a CA)."""
    old_ca = TestCA(tmp_path / "admin-old", name="admin-old")
    new_ca = TestCA(tmp_path / "admin-new", name="admin-new")
    server = old_ca.issue("localhost", dns=["localhost"])
    client_ca = tmp_path / "admin-client-ca.pem"
    client_ca.write_bytes(old_ca.ca_path.read_bytes())
    port = free_port()
    tcp = {"address": "127.0.0.1", "port": port, "cert": str(server.cert), "key": str(server.key)}
    gw = GatewayProcess(
        tmp_path, "cl0", ca, extra={"admin": {"tcp": {**tcp, "client_ca": str(client_ca)}}}
    )
    gw.start()

    def client(issued: Issued) -> AdminClient:
        return AdminClient(
            server=f"https://localhost:{port}",
            cert=str(issued.cert),
            key=str(issued.key),
            cacert=str(old_ca.ca_path),
        )

    def accepted(issued: Issued) -> bool:
        try:
            return client(issued).status()["peer_name"] == "cl0"
        except (ssl.SSLError, ConnectionError, OSError):
            return False

    try:
        old_op, new_op = old_ca.issue("old-operator"), new_ca.issue("new-operator")
        assert accepted(old_op) and not accepted(new_op)
        client_ca.write_bytes(new_ca.ca_path.read_bytes())
        gw.signal(signal.SIGHUP)
        assert poll(lambda: not accepted(old_op)), gw.log_tail()
        assert accepted(new_op)
        reloaded = log_records(gw, "configuration reloaded")[-1]
        assert reloaded["needs_restart"] == []
        # a broken client CA file is refused by SIGHUP and the current one kept
        client_ca.write_text("not a CA")
        gw.signal(signal.SIGHUP)
        assert poll(lambda: log_records(gw, "reload failed; keeping the running configuration"))
        assert (
            "admin.tcp"
            in log_records(gw, "reload failed; keeping the running configuration")[-1]["error"]
        )
        assert accepted(new_op) and not accepted(old_op)
        assert metrics(gw.client)['clusterlink_tls_reload_failures_total{reason="malformed"}'] == 1
    finally:
        gw.stop()


def test_dataplane_change_on_sighup_is_named_in_needs_restart(fabric: Fabric) -> None:
    gw = fabric["cl0"]
    gw.config["dataplane"] = {
        **gw.config.get("dataplane", {}),
        "connect_timeout": 5.0,
        "dial_timeout": 4.0,
    }
    gw.config["listen"] = {**gw.config["listen"], "handshake_timeout": 7.0}
    gw.write_config()
    gw.signal(signal.SIGHUP)
    assert poll(lambda: log_records(gw, "configuration reloaded"))
    line = log_records(gw, "configuration reloaded")[-1]
    assert line["needs_restart"] == ["dataplane.connect_timeout", "listen.handshake_timeout"]
    assert line["applied"] == ["dataplane.dial_timeout"]
    assert line["level"] == "warning"


def test_a_new_peer_name_is_not_half_applied_on_sighup(fabric: Fabric) -> None:
    """peer_name needs a restart: SIGHUP with a new name and a certificate for it is refused as
    a whole (the running name stays, and so does its certificate)."""
    gw = fabric["cl0"]
    original = _served_serial(gw, fabric.ca)
    gw.install_tls(fabric.ca.issue("cl7"), fabric.ca.ca_path.read_bytes())
    gw.config["peer_name"] = "cl7"
    gw.write_config()
    gw.signal(signal.SIGHUP)
    assert poll(lambda: log_records(gw, "reload failed; keeping the running configuration"))
    error = log_records(gw, "reload failed; keeping the running configuration")[-1]["error"]
    assert "not for this gateway's peer_name 'cl0'" in error
    assert _served_serial(gw, fabric.ca) == original
    assert gw.client.status()["peer_name"] == "cl0"
