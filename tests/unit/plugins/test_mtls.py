# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Certificates made by the modules work for mutual TLS 1.3 (Python's ssl, over loopback)."""

from __future__ import annotations

import pytest

# name -> the CA that issues its certificate
GATEWAYS = {"site-a": "ca", "site-b": "ca", "site-c": "other", "site-d": "new"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory, new_runner):
    """Three CAs (ca, other: same fabric name, another key; new: a rollover CA) and gateways."""
    work = tmp_path_factory.mktemp("pki")
    runner = new_runner(work)
    tasks = []
    for ca in ("ca", "other", "new"):
        tasks.append(
            {
                "clusterlink.fabric.fabric_ca": {
                    "certificate_path": str(work / f"{ca}.crt"),
                    "privatekey_path": str(work / f"{ca}.key"),
                    "fabric_name": "prod",
                }
            }
        )
    for name, ca in GATEWAYS.items():
        var = name.replace("-", "_")
        tasks += [
            {
                "register": f"key_{var}",
                "clusterlink.fabric.gateway_key": {
                    "path": str(work / f"{name}.key"),
                    "peer_name": name,
                },
            },
            {
                "register": f"cert_{var}",
                "clusterlink.fabric.gateway_certificate": {
                    "csr_content": f"{{{{ key_{var}.csr }}}}",
                    "peer_name": name,
                    "ca_certificate_path": str(work / f"{ca}.crt"),
                    "ca_privatekey_path": str(work / f"{ca}.key"),
                },
            },
            {
                "ansible.builtin.copy": {
                    "content": f"{{{{ cert_{var}.certificate }}}}",
                    "dest": str(work / f"{name}.crt"),
                    "mode": "0644",
                }
            },
        ]
    runner.ok(tasks)
    (work / "rollover-bundle.pem").write_bytes(
        (work / "ca.crt").read_bytes() + (work / "new.crt").read_bytes()
    )
    return work


def san(peer):
    return [value for kind, value in peer.get("subjectAltName", ()) if kind == "DNS"]


def test_mutual_tls13_between_two_gateways(pki, tls_handshake):
    server, client = tls_handshake(pki, "site-a", "site-b")
    assert "error" not in server and "error" not in client, (server, client)
    assert server["version"] == client["version"] == "TLSv1.3"
    assert server["sni"] == "site-a"
    assert san(server["peer"]) == ["site-b"]  # the server knows the caller from its cert
    assert san(client["peer"]) == ["site-a"]
    assert client["data"] == b"ok"


def test_client_certificate_from_another_ca_is_refused(pki, tls_handshake):
    # site-c trusts the fabric CA (so it accepts site-a), but its own cert is from another CA.
    server, client = tls_handshake(pki, "site-a", "site-c")
    assert "certificate verify failed" in server.get("error", ""), server
    assert client.get("data") != b"ok"


def test_server_certificate_from_another_ca_is_refused(pki, tls_handshake):
    server, client = tls_handshake(pki, "site-c", "site-a", server_ca="other.crt")
    assert "certificate verify failed" in client.get("error", ""), client
    assert "peer" not in server


def test_wrong_peer_name_is_refused(pki, tls_handshake):
    client = tls_handshake(pki, "site-a", "site-b", server_name="site-b")[1]
    assert "certificate verify failed" in client.get("error", ""), client


def test_rollover_bundle_trusts_old_and_new_ca(pki, tls_handshake):
    for server, client in (("site-a", "site-d"), ("site-d", "site-a")):
        server_side, client_side = tls_handshake(
            pki, server, client, "rollover-bundle.pem", "rollover-bundle.pem"
        )
        assert "error" not in server_side and client_side.get("data") == b"ok", (
            server,
            client,
            server_side,
            client_side,
        )
    # Without the new CA in the bundle, the new CA's certificate is refused.
    server_side = tls_handshake(pki, "site-a", "site-d", "ca.crt", "rollover-bundle.pem")[0]
    assert "error" in server_side
