"""Expiry in sight: ``/v1/status``, ``gwctl status`` and ``/metrics`` show when the gateway's
certificate, each fabric CA and the admin listener's certificate expire, and follow rotation
(new files + SIGHUP)."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from prometheus_client.parser import text_string_to_metric_families

from support.gateway import BIN, GatewayProcess, free_port
from support.pki import TestCA

DAY = 86400
MARGIN = 60  # seconds: the values are computed per request, the test runs on a busy machine


def _facts(path: Path) -> tuple[str, str, dt.datetime]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return (
        cert.subject.rfc4514_string(),
        cert.fingerprint(hashes.SHA256()).hex(),
        cert.not_valid_after_utc,
    )


def _left(not_after: dt.datetime) -> float:
    return (not_after - dt.datetime.now(dt.UTC)).total_seconds()


def _gauges(gw: GatewayProcess) -> dict[tuple[str, str, str], float]:
    resp = gw.client.raw("GET", "/metrics")
    assert resp.status == 200
    out = {}
    for family in text_string_to_metric_families(resp.body):
        if family.name == "clusterlink_certificate_expiry_seconds":
            for s in family.samples:
                out[(s.labels["kind"], s.labels["subject"], s.labels["fingerprint"])] = s.value
    return out


def _status_json(gw: GatewayProcess) -> dict[str, Any]:
    run = subprocess.run(
        [str(BIN / "gwctl"), "--socket", str(gw.socket), "-o", "json", "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _check(entry: dict[str, Any], kind: str, path: Path) -> None:
    subject, fingerprint, not_after = _facts(path)
    assert entry["kind"] == kind and entry["subject"] == subject
    assert entry["fingerprint_sha256"] == fingerprint
    assert entry["not_after"] == not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert abs(entry["expires_in_seconds"] - _left(not_after)) < MARGIN
    assert entry["expired"] is False


def test_status_and_metrics_show_expiry_and_follow_rotation(tmp_path: Path) -> None:
    fabric = TestCA(tmp_path / "pki")
    admin_ca = TestCA(tmp_path / "admin-pki", name="admin-ca")
    server = admin_ca.issue("localhost", dns=["localhost"], days=40)
    tcp = {"port": free_port(), "cert": str(server.cert), "key": str(server.key)}
    gw = GatewayProcess(
        tmp_path,
        "cl0",
        fabric,
        extra={"admin": {"tcp": {**tcp, "client_ca": str(admin_ca.ca_path)}}},
    )
    gw.install_tls(fabric.issue("cl0", days=20), fabric.ca_path.read_bytes())
    gw.start()
    try:
        crt = gw.tls_dir / "gateway.crt"
        status = gw.client.status()
        by_kind = {c["kind"]: c for c in status["certificates"]}
        assert [c["kind"] for c in status["certificates"]] == ["gateway", "ca", "admin"]
        _check(by_kind["gateway"], "gateway", crt)
        assert 19 * DAY < by_kind["gateway"]["expires_in_seconds"] <= 20 * DAY
        _check(by_kind["ca"], "ca", fabric.ca_path)
        _check(by_kind["admin"], "admin", server.cert)
        cli = _status_json(gw)["certificates"]  # gwctl -o json status: the same entries
        for entry, kind, path in zip(
            cli, ("gateway", "ca", "admin"), (crt, fabric.ca_path, server.cert), strict=True
        ):
            _check(entry, kind, path)
        table = subprocess.run(
            [str(BIN / "gwctl"), "--socket", str(gw.socket), "status"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        assert "CERTIFICATES" in table and "CN=cl0" in table and "19d 23h" in table

        gauges = _gauges(gw)
        subject, fingerprint, not_after = _facts(crt)
        assert abs(gauges[("gateway", subject, fingerprint)] - _left(not_after)) < MARGIN
        ca_subject, ca_fp, ca_after = _facts(fabric.ca_path)
        assert abs(gauges[("ca", ca_subject, ca_fp)] - _left(ca_after)) < MARGIN
        adm_subject, adm_fp, adm_after = _facts(server.cert)
        assert abs(gauges[("admin", adm_subject, adm_fp)] - _left(adm_after)) < MARGIN
        assert len(gauges) == 3

        # Rotation: a new CA joins the bundle (rollover), the gateway gets a 25-day certificate
        # from it, the admin listener a 10-day one; SIGHUP.
        new_ca = TestCA(tmp_path / "pki2", name="fabric-2027")
        bundle = fabric.ca_path.read_bytes() + new_ca.ca_path.read_bytes()
        gw.install_tls(new_ca.issue("cl0", days=25), bundle)
        renewed = admin_ca.issue("localhost", dns=["localhost"], days=10)
        server.cert.write_bytes(renewed.cert.read_bytes())
        server.key.write_bytes(renewed.key.read_bytes())
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        new_fp = _facts(crt)[1]
        while time.monotonic() < deadline:
            certs = gw.client.status()["certificates"]
            wanted = (new_fp, ["gateway", "ca", "ca", "admin"], _facts(server.cert)[1])
            got = (certs[0]["fingerprint_sha256"], [c["kind"] for c in certs])
            if (*got, certs[-1]["fingerprint_sha256"]) == wanted:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"status did not follow the rotation: {certs}\n{gw.log_tail()}")
        _check(certs[0], "gateway", crt)
        assert 24 * DAY < certs[0]["expires_in_seconds"] <= 25 * DAY
        _check(certs[1], "ca", fabric.ca_path)
        _check(certs[2], "ca", new_ca.ca_path)
        _check(certs[3], "admin", server.cert)
        assert certs[3]["expires_in_seconds"] <= 10 * DAY
        gauges = _gauges(gw)
        assert len(gauges) == 4 and ("gateway", subject, fingerprint) not in gauges
        assert abs(gauges[("gateway", "CN=cl0", new_fp)] - _left(_facts(crt)[2])) < MARGIN
        new_ca_facts = _facts(new_ca.ca_path)
        assert abs(gauges[("ca", *new_ca_facts[:2])] - _left(new_ca_facts[2])) < MARGIN
    finally:
        gw.stop()
    assert "Traceback" not in gw.log_text(), gw.log_tail()
