# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""clusterlink.fabric.gateway_certificate, run for real through ansible-playbook."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def ca_task(tmp_path, ca="ca", **params):
    args = dict(
        certificate_path=str(tmp_path / f"{ca}.crt"),
        privatekey_path=str(tmp_path / f"{ca}.key"),
        fabric_name="prod",
    )
    args.update(params)
    return {"name": f"ca {ca}", "clusterlink.fabric.fabric_ca": args}


def key_task(tmp_path, **params):
    args = dict(path=str(tmp_path / "gw.key"), peer_name="site-a")
    args.update(params)
    return {"name": "key", "register": "key", "clusterlink.fabric.gateway_key": args}


def cert_task(tmp_path, name="cert", ca="ca", current=None, **params):
    """The certificate task; ``current`` defaults to the installed gw.crt, read now."""
    if current is None:
        installed = tmp_path / "gw.crt"
        current = installed.read_text() if installed.exists() else ""
    args = dict(
        csr_content="{{ key.csr }}",
        peer_name="site-a",
        current_certificate=current,
        ca_certificate_path=str(tmp_path / f"{ca}.crt"),
        ca_privatekey_path=str(tmp_path / f"{ca}.key"),
    )
    args.update(params)
    return {"name": name, "register": "cert", "clusterlink.fabric.gateway_certificate": args}


def install_task(tmp_path):
    return {
        "name": "install",
        "ansible.builtin.copy": {
            "content": "{{ cert.certificate }}",
            "dest": str(tmp_path / "gw.crt"),
            "mode": "0644",
        },
    }


def issue(runner, tmp_path, *extra_args, ca_params=None, key_params=None, **params):
    """CA, key, certificate (current = installed file), install. Returns the certificate result."""
    proc = runner.ok(
        [
            ca_task(tmp_path, **(ca_params or {})),
            key_task(tmp_path, **(key_params or {})),
            cert_task(tmp_path, **params),
            install_task(tmp_path),
        ],
        *extra_args,
    )
    return runner.result(proc, "cert")


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_four_steps_and_leaf_profile(runner, tmp_path):
    current = "{{ lookup('ansible.builtin.file', '%s') }}" % (tmp_path / "gw.crt")
    tasks = [ca_task(tmp_path), key_task(tmp_path)]
    steps = runner.four_steps(cert_task(tmp_path, current=""), "cert")
    tasks += [*steps[:2], install_task(tmp_path)]
    tasks += [
        dict(
            step,
            **{
                "clusterlink.fabric.gateway_certificate": dict(
                    step["clusterlink.fabric.gateway_certificate"], current_certificate=current
                )
            },
        )
        for step in steps[2:]
    ]
    proc = runner.ok(tasks)
    runner.assert_four_steps(proc, "cert")
    assert runner.result(proc, "cert 1")["reasons"] == ["missing"]
    assert runner.result(proc, "cert 4")["reasons"] == []
    assert runner.result(proc, "cert 4")["certificate"] == (tmp_path / "gw.crt").read_text()

    cert, ca = load(tmp_path / "gw.crt"), load(tmp_path / "ca.crt")
    key = serialization.load_pem_private_key((tmp_path / "gw.key").read_bytes(), None)
    cert.verify_directly_issued_by(ca)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "site-a"
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["site-a"]
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    usage = ext.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    constraints = ext.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki == ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=364) < lifetime <= datetime.timedelta(days=365)
    assert cert.serial_number.bit_length() > 64


def test_renewal_window(runner, tmp_path):
    first = issue(runner, tmp_path, valid_days=40)
    assert first["changed"]
    assert issue(runner, tmp_path, renew_before="30d")["changed"] is False
    renewed = issue(runner, tmp_path, renew_before="45d")
    assert renewed["changed"] and renewed["reasons"] == ["expiring"]
    assert renewed["info"]["public_key_fingerprint"] == first["info"]["public_key_fingerprint"]
    assert renewed["info"]["serial_number"] != first["info"]["serial_number"]
    assert issue(runner, tmp_path, renew_before="45d")["changed"] is False


def test_name_change(runner, tmp_path):
    issue(runner, tmp_path)
    result = issue(
        runner, tmp_path, "--diff", peer_name="site-b", key_params={"peer_name": "site-b"}
    )
    assert result["changed"] and result["reasons"] == ["names"]
    assert result["diff"]["before"]["subject"] == "CN=site-a"
    assert result["diff"]["after"]["subject_alt_names"] == ["DNS:site-b"]
    assert issue(runner, tmp_path, peer_name="site-b")["changed"] is False


def test_ca_change_and_ca_renewal(runner, tmp_path):
    issue(runner, tmp_path)
    # The CA re-created with the same key (renewal): gateway certificates stay valid.
    renewed = issue(runner, tmp_path, ca_params={"regenerate": "always"})
    assert renewed["changed"] is False
    load(tmp_path / "gw.crt").verify_directly_issued_by(load(tmp_path / "ca.crt"))
    # Another CA (another key, same name): re-issue.
    other = issue(runner, tmp_path, ca="ca2", ca_params={"ca": "ca2"})
    assert other["changed"] and other["reasons"] == ["issuer"]
    load(tmp_path / "gw.crt").verify_directly_issued_by(load(tmp_path / "ca2.crt"))
    assert issue(runner, tmp_path, ca="ca2", ca_params={"ca": "ca2"})["changed"] is False


def test_key_change(runner, tmp_path):
    issue(runner, tmp_path)
    result = issue(runner, tmp_path, key_params={"regenerate": "always"})
    assert result["changed"] and result["reasons"] == ["public_key"]


def test_profile_and_validity_cap(runner, tmp_path):
    issue(runner, tmp_path, ca_params={"valid_days": 100})
    ca = load(tmp_path / "ca.crt")
    cert = load(tmp_path / "gw.crt")
    assert cert.not_valid_after_utc == ca.not_valid_after_utc  # 365 days capped at the CA's 100
    # A certificate from the right CA for the right key, but without clientAuth: re-issue.
    ca_key = serialization.load_pem_private_key((tmp_path / "ca.key").read_bytes(), None)
    server_only = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(ca.subject)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("site-a")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = server_only.public_bytes(serialization.Encoding.PEM).decode()
    result = issue(runner, tmp_path, current=pem, renew_before="1d")
    assert result["changed"] and result["reasons"] == ["profile"]


def test_admin_profiles_and_subject_alt_names(runner, tmp_path):
    """The admin listener's certificate: serverAuth only, the SANs asked for (DNS and IP);
    idempotent; another profile or another SAN list re-issues; a bad SAN names the option."""
    sans = ["DNS:West.Example", "IP:192.0.2.7", "198.51.100.1"]
    first = issue(runner, tmp_path, profile="admin_server", subject_alt_names=sans)
    assert first["changed"]
    cert = load(tmp_path / "gw.crt")
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert first["info"]["subject_alt_names"] == [
        "DNS:west.example",
        "IP:192.0.2.7",
        "IP:198.51.100.1",
    ]
    assert cert.subject.rfc4514_string() == "CN=site-a"
    again = issue(runner, tmp_path, profile="admin_server", subject_alt_names=sans[::-1])
    assert again["changed"] is False  # order and case of the list do not matter
    names = issue(runner, tmp_path, profile="admin_server", subject_alt_names=sans[:2])
    assert names["changed"] and names["reasons"] == ["names"]
    client = issue(runner, tmp_path, profile="admin_client", subject_alt_names=sans[:2])
    assert client["changed"] and client["reasons"] == ["profile"]
    usages = set(
        load(tmp_path / "gw.crt").extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    assert usages == {ExtendedKeyUsageOID.CLIENT_AUTH}
    gateway = issue(runner, tmp_path)  # back to a gateway certificate: names and profile
    assert gateway["changed"] and gateway["reasons"] == ["names", "profile"]
    assert gateway["info"]["subject_alt_names"] == ["DNS:site-a"]
    proc = runner.run(
        [
            ca_task(tmp_path),
            key_task(tmp_path),
            cert_task(tmp_path, subject_alt_names=["DNS:not a name"]),
        ]
    )
    assert proc.returncode != 0
    msg = runner.result(proc, "cert")["msg"]
    assert "subject_alt_names" in msg and "not a name" in msg, msg


def test_regenerate_policies(runner, tmp_path):
    issue(runner, tmp_path, valid_days=10)
    assert issue(runner, tmp_path, regenerate="never")["changed"] is False
    forced = issue(runner, tmp_path, regenerate="always", renew_before="1d", valid_days=10)
    assert forced["changed"] and forced["reasons"] == ["forced"]
    proc = runner.run(
        [
            ca_task(tmp_path),
            key_task(tmp_path),
            cert_task(tmp_path, regenerate="fail", renew_before="20d"),
        ]
    )
    assert proc.returncode != 0
    assert "regenerate=fail" in runner.result(proc, "cert")["msg"]


def test_check_mode_without_ca(runner, tmp_path):
    proc = runner.ok([ca_task(tmp_path), key_task(tmp_path), cert_task(tmp_path)], check=True)
    result = runner.result(proc, "cert")
    assert result["changed"] and result["certificate"] == "" and result["reasons"] == ["ca_missing"]
    assert any("does not exist" in w for w in result.get("warnings", []))
    assert (
        sorted(
            p.name
            for p in tmp_path.iterdir()
            if not p.name.startswith((".", "ansible.cfg", "inventory", "playbook"))
        )
        == []
    )


def test_bad_parameters_name_the_option(runner, tmp_path):
    cases = {
        "csr_content": dict(csr_content="-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"),
        "peer_name": dict(peer_name="site.a"),
        "renew_before": dict(renew_before="30 days"),
        "valid_days": dict(valid_days=-1),
        "ca_privatekey_path": dict(ca_privatekey_path=str(tmp_path / "gw.crt")),
        "ca_certificate_path": dict(ca_certificate_path=str(tmp_path / "nothing.crt")),
    }
    issue(runner, tmp_path)
    tasks = [ca_task(tmp_path), key_task(tmp_path)]
    tasks += [
        dict(cert_task(tmp_path, name=option, **params), ignore_errors=True)
        for option, params in cases.items()
    ]
    proc = runner.ok(tasks)
    for option in cases:
        result = runner.result(proc, option)
        assert result["failed"] and option in result["msg"], (option, result["msg"])


def test_no_key_material_in_verbose_diff_output(runner, tmp_path):
    """All three modules, keys created and then replaced, with -vvv --diff."""
    passphrase = "module-test-passphrase-0815"
    tasks = [
        ca_task(tmp_path, privatekey_passphrase=passphrase),
        key_task(tmp_path),
        cert_task(tmp_path, ca_privatekey_passphrase=passphrase),
        install_task(tmp_path),
        dict(key_task(tmp_path, regenerate="always", backup=True), name="new key"),
        cert_task(
            tmp_path,
            name="reissue",
            ca_privatekey_passphrase=passphrase,
            current="{{ lookup('ansible.builtin.file', '%s') }}" % (tmp_path / "gw.crt"),
        ),
    ]
    proc = runner.run(tasks, "-vvv", "--diff", json_output=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "BEGIN CERTIFICATE" in output and "changed=" in output
    assert "PRIVATE KEY" not in output and passphrase not in output
    keys = [p.read_bytes() for p in tmp_path.iterdir() if ".key" in p.name]
    assert len(keys) == 3  # CA key, gateway key, backup of the first gateway key
    flat = output.replace("\n", "").replace("\\n", "")
    for key in keys:
        lines = [line.decode() for line in key.splitlines() if not line.startswith(b"-----")]
        assert "".join(lines) not in flat
        for line in lines:
            assert line not in output
