# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The clusterlink.fabric.pki role, run for real on two local "gateways" (site-a, site-b).

Each gateway is a host with connection local and its own TLS directory, so the whole flow runs
here: CA on the "controller", key and CSR on the gateway, signing delegated to localhost,
installation with copy. The issued files then carry a mutual-TLS handshake.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import socket
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from support.gateway import BIN, GatewayProcess, free_port
from support.pki import TestCA

# Every test runs the role several times (about 12 s per run on two cores).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SITES = ("site-a", "site-b")
ROLE_PLAY = [
    {"hosts": "clusterlink_gateways", "gather_facts": False, "roles": ["clusterlink.fabric.pki"]}
]


class Fabric:
    def __init__(self, runner, tmp_path, **group_vars):
        self.runner = runner
        self.pki = tmp_path / "controller-pki"
        self.hosts = {site: {"clusterlink_tls_dir": str(tmp_path / site / "tls")} for site in SITES}
        self.group_vars = dict(
            {
                "clusterlink_fabric_name": "prod",
                "clusterlink_pki_dir": str(self.pki),
                "clusterlink_user": "root",
                "clusterlink_group": "root",
                "clusterlink_pki_manage_user": False,
                "clusterlink_pki_packages": [],
            },
            **group_vars,
        )
        self.output = ""

    def tls(self, site, name=""):
        return Path(self.hosts[site]["clusterlink_tls_dir"], name)

    def run(self, rollover="none", check=False, ok=True, env=None):
        """Run the role with -vvv --diff (all output is kept for the key-leak checks)."""
        proc = self.runner.run(
            ROLE_PLAY,
            "-vvv",
            "--diff",
            "-e",
            f"clusterlink_pki_ca_rollover={rollover}",
            hosts=self.hosts,
            group_vars=self.group_vars,
            check=check,
            json_output=False,
            env=env,
        )
        self.output += proc.stdout + proc.stderr
        if ok:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    @staticmethod
    def changed(proc):
        """Sum of changed= over the PLAY RECAP lines."""
        return sum(
            int(n) for n in re.findall(r"^\S+\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)
        )

    def assert_no_key_material_in_output(self, secrets=()):
        keys = [self.tls(site, "gateway.key").read_bytes() for site in SITES]
        keys += [
            p.read_bytes()
            for p in self.pki.iterdir()
            if p.name.startswith("ca") and ".key" in p.name
        ]
        output = self.output
        assert "BEGIN CERTIFICATE" in output  # the output is real: diffs of public data are there
        assert "PRIVATE KEY" not in output
        for secret in secrets:
            assert secret not in output
        flat = output.replace("\n", "").replace("\\n", "")
        for key in keys:
            lines = [line.decode() for line in key.splitlines() if not line.startswith(b"-----")]
            assert "".join(lines) not in flat
            for line in lines:
                assert line not in output

    def snapshot(self):
        files = {}
        for site in SITES:
            for name in ("gateway.key", "gateway.crt", "ca-bundle.pem"):
                path = self.tls(site, name)
                files[f"{site}/{name}"] = path.read_bytes() if path.exists() else None
        for name in ("ca.key", "ca.crt", "ca-next.key", "ca-next.crt"):
            path = self.pki / name
            files[name] = path.read_bytes() if path.exists() else None
        return files

    def bundle(self, site):
        return x509.load_pem_x509_certificates(self.tls(site, "ca-bundle.pem").read_bytes())

    def cert(self, site):
        return x509.load_pem_x509_certificate(self.tls(site, "gateway.crt").read_bytes())

    def handshake(self, tls_handshake, server="site-a", client="site-b"):
        """mTLS with the installed files: the server trusts its bundle, the client its own."""
        for site in SITES:  # <dir>/<site>.crt|key names for the handshake helper
            for ext, name in (("crt", "gateway.crt"), ("key", "gateway.key")):
                link = self.pki.parent / f"{site}.{ext}"
                if not link.exists():
                    link.symlink_to(self.tls(site, name))
        return tls_handshake(
            self.pki.parent,
            server,
            client,
            server_ca=self.tls(server, "ca-bundle.pem"),
            client_ca=self.tls(client, "ca-bundle.pem"),
        )


@pytest.fixture
def fabric(runner, tmp_path):
    return Fabric(runner, tmp_path)


def assert_handshake_ok(fabric, tls_handshake):
    for server, client in (("site-a", "site-b"), ("site-b", "site-a")):
        server_side, client_side = fabric.handshake(tls_handshake, server, client)
        assert "error" not in server_side and client_side.get("data") == b"ok", (
            server_side,
            client_side,
        )
        assert server_side["version"] == "TLSv1.3"


def test_check_real_idempotent_and_mtls(fabric, tmp_path, tls_handshake, unprivileged_user):
    user, group = unprivileged_user
    fabric.group_vars.update(clusterlink_user=user, clusterlink_group=group)
    check = fabric.run(check=True)
    assert fabric.changed(check) > 0
    assert not fabric.pki.exists() and not (tmp_path / "site-a").exists()  # nothing written

    first = fabric.run()
    assert fabric.changed(first) > 0
    assert fabric.changed(fabric.run()) == 0
    assert fabric.changed(fabric.run(check=True)) == 0

    assert stat.S_IMODE(os.stat(fabric.pki).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(fabric.pki / "ca.key").st_mode) == 0o600
    for site in SITES:
        key = os.stat(fabric.tls(site, "gateway.key"))
        assert stat.S_IMODE(key.st_mode) == 0o600
        assert pwd.getpwuid(key.st_uid).pw_name == user
        assert grp.getgrgid(key.st_gid).gr_name == group
        for name in ("gateway.crt", "ca-bundle.pem"):
            assert stat.S_IMODE(os.stat(fabric.tls(site, name)).st_mode) == 0o644
        assert stat.S_IMODE(os.stat(fabric.tls(site)).st_mode) == 0o750
        cert = fabric.cert(site)
        assert cert.subject.rfc4514_string() == f"CN={site}"
        assert [c.subject.rfc4514_string() for c in fabric.bundle(site)] == ["CN=prod"]
    assert_handshake_ok(fabric, tls_handshake)
    fabric.assert_no_key_material_in_output()


def test_default_ca_dir_peer_name_variable_and_rename(fabric, tmp_path):
    # The default CA directory, ~/.clusterlink/pki/<fabric>, on the controller.
    del fabric.group_vars["clusterlink_pki_dir"]
    home = {"HOME": str(tmp_path / "home")}
    fabric.run(env=home)
    pki = tmp_path / "home" / ".clusterlink" / "pki" / "prod"
    assert (pki / "ca.key").exists() and (pki / "ca.crt").exists()
    for directory in (pki, pki.parent, pki.parent.parent):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    fabric.hosts["site-a"]["clusterlink_peer_name"] = "paris"
    renamed = fabric.run(env=home)
    assert fabric.changed(renamed) > 0
    cert = fabric.cert("site-a")
    assert cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName) == ["paris"]
    fabric.hosts["site-a"]["clusterlink_peer_name"] = "Not_A_Label"
    proc = fabric.run(ok=False, env=home)
    assert proc.returncode != 0
    assert "peer_name" in proc.stdout


def test_ca_rollover_without_downtime(fabric, tls_handshake):
    """The three phases, with a passphrase-protected CA key, all runs with -vvv --diff."""
    passphrase = "pki-test-passphrase-4711"
    fabric.group_vars["clusterlink_pki_ca_passphrase"] = passphrase
    fabric.run()
    old = fabric.snapshot()
    old_ca = x509.load_pem_x509_certificate(old["ca.crt"])

    # 1. start: new CA created, every gateway trusts both; gateway certificates unchanged.
    fabric.run(rollover="start")
    started = fabric.snapshot()
    assert started["ca-next.crt"] and started["ca.crt"] == old["ca.crt"]
    new_ca = x509.load_pem_x509_certificate(started["ca-next.crt"])
    for site in SITES:
        assert fabric.bundle(site) == [old_ca, new_ca]
        assert started[f"{site}/gateway.crt"] == old[f"{site}/gateway.crt"]
    assert fabric.changed(fabric.run(rollover="start")) == 0
    assert_handshake_ok(fabric, tls_handshake)

    # A normal run in the middle of a rollover is refused with a clear message.
    proc = fabric.run(ok=False)
    assert proc.returncode != 0 and "rollover is in progress" in proc.stdout

    # 2. reissue: gateway certificates from the new CA; both CAs still trusted.
    fabric.run(rollover="reissue")
    for site in SITES:
        fabric.cert(site).verify_directly_issued_by(new_ca)
        assert fabric.bundle(site) == [old_ca, new_ca]
    assert fabric.changed(fabric.run(rollover="reissue")) == 0
    assert_handshake_ok(fabric, tls_handshake)

    # 3. finish: the new CA becomes the CA; bundles hold only it; certificates unchanged.
    before_finish = fabric.snapshot()
    predicted = fabric.run(rollover="finish", check=True)
    assert fabric.changed(predicted) > 0
    assert fabric.snapshot() == before_finish
    fabric.run(rollover="finish")
    finished = fabric.snapshot()
    assert finished["ca.crt"] == started["ca-next.crt"]
    assert finished["ca.key"] == started["ca-next.key"]
    assert finished["ca-next.crt"] is None and finished["ca-next.key"] is None
    for site in SITES:
        assert fabric.bundle(site) == [new_ca]
        assert finished[f"{site}/gateway.crt"] == before_finish[f"{site}/gateway.crt"]
    backups = [p for p in fabric.pki.iterdir() if p.name.startswith("ca.key.")]
    assert backups and backups[0].read_bytes() == old["ca.key"]
    assert stat.S_IMODE(os.stat(backups[0]).st_mode) == 0o600
    assert fabric.changed(fabric.run()) == 0
    assert_handshake_ok(fabric, tls_handshake)
    assert b"ENCRYPTED PRIVATE KEY" in finished["ca.key"]
    fabric.assert_no_key_material_in_output(secrets=[passphrase])


def _ekus(cert):
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _gwctl_status(port, ca, cert=None, key=None):
    argv = [str(BIN / "gwctl"), "--server", f"https://127.0.0.1:{port}", "--cacert", str(ca)]
    argv += ["--cert", str(cert), "--key", str(key)] if cert else []
    return subprocess.run(
        [*argv, "status"], capture_output=True, text=True, timeout=60, check=False
    )


def _peer_port_refuses(port, cert, key, bundle):
    """A TLS client with ``cert`` (ALPN h2, as a gateway) on the peer port: True when the
    gateway refuses it (an alert or a close before it says anything), False when it answers
    (its HTTP/2 SETTINGS) or keeps the connection open."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(bundle)
    ctx.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
            ctx.wrap_socket(sock, server_hostname="site-a") as tls,
        ):
            return tls.recv(1) == b""  # TLS 1.3: a refused client certificate shows on read
    except (ssl.SSLError, ConnectionResetError):
        return True
    except TimeoutError:
        return False


def test_admin_tcp_is_one_variable(fabric, tmp_path):
    """clusterlink_admin_tcp alone: a separate admin CA, the listener's certificates on each
    gateway, the operator's on the controller (0600); a real gateway with those files serves
    gwctl over TCP with the operator certificate only, and its peer port refuses it."""
    port = free_port()
    fabric.group_vars["clusterlink_admin_tcp"] = {"address": "127.0.0.1", "port": port}
    check = fabric.run(check=True)
    assert fabric.changed(check) > 0 and not fabric.pki.exists()
    fabric.run()
    assert fabric.changed(fabric.run()) == 0

    pki = fabric.pki
    for name in ("admin-ca.key", "operator.key", "operator.crt"):
        assert stat.S_IMODE(os.stat(pki / name).st_mode) == 0o600, name
    admin_ca = x509.load_pem_x509_certificate((pki / "admin-ca.crt").read_bytes())
    fabric_ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    assert admin_ca.subject.rfc4514_string() == "CN=prod-admin"
    assert admin_ca.public_key().public_numbers() != fabric_ca.public_key().public_numbers()
    operator = x509.load_pem_x509_certificate((pki / "operator.crt").read_bytes())
    assert operator.issuer == admin_ca.subject
    assert _ekus(operator) == {x509.ExtendedKeyUsageOID.CLIENT_AUTH}
    for site in SITES:
        assert stat.S_IMODE(os.stat(fabric.tls(site, "admin.key")).st_mode) == 0o600
        assert fabric.tls(site, "admin-ca.pem").read_bytes() == (pki / "admin-ca.crt").read_bytes()
        server = x509.load_pem_x509_certificate(fabric.tls(site, "admin.crt").read_bytes())
        assert server.issuer == admin_ca.subject
        assert _ekus(server) == {x509.ExtendedKeyUsageOID.SERVER_AUTH}
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert site in san.get_values_for_type(x509.DNSName)  # and ansible_host (localhost)
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    secrets = [
        line
        for key in (pki / "operator.key", pki / "admin-ca.key", fabric.tls("site-a", "admin.key"))
        for line in key.read_text().splitlines()
        if not line.startswith("-----")
    ]
    fabric.assert_no_key_material_in_output(secrets)

    # site-a's daemon with the files the role made (admin.tcp as the gateway role writes it).
    tls = fabric.tls("site-a")
    gateway = GatewayProcess(
        tmp_path / "daemon",
        "site-a",
        TestCA(tmp_path / "unused-ca"),
        extra={
            "tls": {
                "cert": str(tls / "gateway.crt"),
                "key": str(tls / "gateway.key"),
                "ca": str(tls / "ca-bundle.pem"),
            },
            "admin": {
                "tcp": {
                    "address": "127.0.0.1",
                    "port": port,
                    "cert": str(tls / "admin.crt"),
                    "key": str(tls / "admin.key"),
                    "client_ca": str(tls / "admin-ca.pem"),
                }
            },
        },
    )
    gateway.start()
    try:
        ok = _gwctl_status(port, pki / "admin-ca.crt", pki / "operator.crt", pki / "operator.key")
        assert ok.returncode == 0 and "site-a" in ok.stdout, ok.stdout + ok.stderr
        other = fabric.tls("site-b")  # a fabric (gateway) certificate gets no admin access
        fabric_cert = _gwctl_status(
            port, pki / "admin-ca.crt", other / "gateway.crt", other / "gateway.key"
        )
        assert fabric_cert.returncode != 0, fabric_cert.stdout
        bare = _gwctl_status(port, pki / "admin-ca.crt")
        assert bare.returncode != 0, bare.stdout
        peer_port = gateway.config["listen"]["port"]
        # The operator certificate is not accepted on the peer port; a known gateway's is.
        gateway.client.create("peers", {"name": "site-b", "spec": {"gateways": [{"host": "h"}]}})
        assert _peer_port_refuses(
            peer_port, pki / "operator.crt", pki / "operator.key", tls / "ca-bundle.pem"
        )
        assert not _peer_port_refuses(
            peer_port, other / "gateway.crt", other / "gateway.key", tls / "ca-bundle.pem"
        )
    finally:
        gateway.stop()
