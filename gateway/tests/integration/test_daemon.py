"""Daemon lifecycle: config checking, signals, single instance, the admin TCP listener."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from clusterlink_gateway.client import AdminClient
from support.gateway import BIN, GatewayProcess, free_port
from support.pki import TestCA


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "clusterlink-gateway"), "--check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_config_accepts_valid(tmp_path: Path, ca: TestCA) -> None:
    gw = GatewayProcess(tmp_path, "cl0", ca)
    gw.write_config()
    result = check_config(gw.config_path)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.pop("peer_name"), "peer_name: required field is missing"),
        (lambda c: c.update(peer_name="Not_A_Name"), "peer_name"),
        (lambda c: c.update(colour="blue"), "colour: unknown field"),
        (lambda c: c["listen"].update(port=70000), "listen.port"),
        (lambda c: c["imports"].update(port_range=[3000, 2000]), "port_range"),
        (lambda c: c["tls"].update(cert="/nonexistent/gw.crt"), "tls: cannot load"),
        (lambda c: c["admin"].update(socket_group="no-such-group-x"), "admin.socket_group"),
        (lambda c: c["log"].update(level="chatty"), "log.level"),
    ],
)
def test_check_config_names_the_problem(tmp_path: Path, ca: TestCA, change, expected) -> None:
    gw = GatewayProcess(tmp_path, "cl0", ca)
    change(gw.config)
    gw.write_config()
    result = check_config(gw.config_path)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def test_check_config_rejects_non_yaml(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("peer_name: [unclosed\n")
    result = check_config(path)
    assert result.returncode != 0 and "not valid YAML" in result.stderr
    assert check_config(tmp_path / "missing.yaml").returncode != 0


def test_sigterm_is_clean(gateway: GatewayProcess) -> None:
    assert gateway.stop() == 0
    assert not gateway.socket.exists()
    events = [json.loads(line)["msg"] for line in gateway.log_text().splitlines()]
    assert "gateway stopped" in events


def test_sighup_reloads_config_and_survives_a_bad_one(gateway: GatewayProcess) -> None:
    gateway.config["labels"] = {"zone": "eu-1"}
    gateway.write_config()
    gateway.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while gateway.client.status()["labels"] != {"zone": "eu-1"}:
        assert time.monotonic() < deadline, gateway.log_tail()
        time.sleep(0.05)
    gateway.config_path.write_text("peer_name: [broken\n")
    gateway.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert gateway.proc is not None and gateway.proc.poll() is None
    assert gateway.client.status()["labels"] == {"zone": "eu-1"}
    assert "reload failed" in gateway.log_text()


def test_second_instance_on_same_state_is_refused(
    tmp_path: Path, ca: TestCA, gateway: GatewayProcess
) -> None:
    twin = GatewayProcess(tmp_path, "twin", ca)
    twin.config["state_dir"] = gateway.config["state_dir"]
    twin.write_config()
    result = subprocess.run(
        [str(BIN / "clusterlink-gateway"), "--config", str(twin.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "in use by another running gateway" in result.stderr
    twin.config["state_dir"] = str(tmp_path / "twin-state")
    twin.config["admin"]["socket"] = str(gateway.socket)
    twin.write_config()
    result = subprocess.run(
        [str(BIN / "clusterlink-gateway"), "--config", str(twin.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "served by another running process" in result.stderr
    assert gateway.client.status()["ready"] is True


def test_stale_socket_from_kill9_is_replaced(gateway: GatewayProcess) -> None:
    gateway.client.create("peers", {"name": "p", "spec": {"gateways": [{"host": "h"}]}})
    gateway.kill9()
    assert gateway.socket.exists()
    gateway.start()
    assert [p["name"] for p in gateway.client.list("peers")] == ["p"]


def test_admin_tcp_requires_admin_ca_certificate(tmp_path: Path, ca: TestCA) -> None:
    admin_ca = TestCA(tmp_path / "admin-pki", name="admin-ca")
    server = admin_ca.issue("localhost", dns=["localhost"])
    operator = admin_ca.issue("operator")
    port = free_port()
    gw = GatewayProcess(
        tmp_path,
        "cl0",
        ca,
        extra={
            "admin": {
                "tcp": {
                    "address": "127.0.0.1",
                    "port": port,
                    "cert": str(server.cert),
                    "key": str(server.key),
                    "client_ca": str(admin_ca.ca_path),
                }
            }
        },
    )
    gw.start()
    try:
        url = f"https://localhost:{port}"
        ok = AdminClient(
            server=url, cert=str(operator.cert), key=str(operator.key), cacert=str(admin_ca.ca_path)
        )
        assert ok.status()["peer_name"] == "cl0"
        fabric_peer = ca.issue("cl9")  # a fabric certificate must not manage the gateway
        for cert in (fabric_peer, None):
            bad = AdminClient(
                server=url,
                cert=str(cert.cert) if cert else None,
                key=str(cert.key) if cert else None,
                cacert=str(admin_ca.ca_path),
            )
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                bad.status()
        assert ok.list("peers") == []
    finally:
        gw.stop()


def test_gwctl_uses_admin_tcp(tmp_path: Path, ca: TestCA) -> None:
    admin_ca = TestCA(tmp_path / "admin-pki", name="admin-ca")
    server = admin_ca.issue("localhost", dns=["localhost"])
    operator = admin_ca.issue("operator")
    port = free_port()
    tcp = {"port": port, "cert": str(server.cert), "key": str(server.key)}
    gw = GatewayProcess(
        tmp_path, "cl0", ca, extra={"admin": {"tcp": {**tcp, "client_ca": str(admin_ca.ca_path)}}}
    )
    gw.start()
    try:
        result = subprocess.run(
            [
                str(BIN / "gwctl"),
                "--server",
                f"https://localhost:{port}",
                "--cert",
                str(operator.cert),
                "--key",
                str(operator.key),
                "--cacert",
                str(admin_ca.ca_path),
                "-o",
                "yaml",
                "status",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert yaml.safe_load(result.stdout)["peer_name"] == "cl0"
    finally:
        gw.stop()
