# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""clusterlink.fabric.fabric_ca, run for real through ansible-playbook."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def ca_task(tmp_path, **params):
    args = dict(
        certificate_path=str(tmp_path / "ca.crt"),
        privatekey_path=str(tmp_path / "ca.key"),
        fabric_name="prod",
    )
    args.update(params)
    return {"clusterlink.fabric.fabric_ca": args}


def test_four_steps_and_certificate_profile(runner, tmp_path):
    proc = runner.ok(runner.four_steps(ca_task(tmp_path), "ca"))
    runner.assert_four_steps(proc, "ca")
    # The check-mode step created nothing; the real one made a 0600 key and the certificate.
    first = runner.result(proc, "ca 1")
    assert first["reasons"] == ["missing"] and first["key_created"]
    assert stat.S_IMODE(os.stat(tmp_path / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "ca.crt").st_mode) == 0o644
    pem = (tmp_path / "ca.crt").read_bytes()
    for step in (2, 3, 4):
        assert runner.result(proc, f"ca {step}")["certificate"].encode() == pem
    assert runner.result(proc, "ca 4")["reasons"] == []

    cert = x509.load_pem_x509_certificate(pem)
    key = serialization.load_pem_private_key((tmp_path / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.subject.rfc4514_string() == "CN=prod" == cert.issuer.rfc4514_string()
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    info = runner.result(proc, "ca 4")["info"]
    assert (
        info["subject"] == "CN=prod"
        and info["is_ca"]
        and info["serial_number"] == cert.serial_number
    )


def test_renewal_window_keeps_key_and_backs_up(runner, tmp_path):
    runner.ok([ca_task(tmp_path, valid_days=60)])
    key_before = (tmp_path / "ca.key").read_bytes()
    cert_before = (tmp_path / "ca.crt").read_bytes()
    # 60 days left: outside a 30-day window, inside a 90-day one.
    proc = runner.ok(
        [
            dict(ca_task(tmp_path, renew_before="30d", backup=True), name="outside"),
            dict(
                ca_task(tmp_path, renew_before="90d", backup=True),
                name="inside check",
                check_mode=True,
            ),
            dict(ca_task(tmp_path, renew_before="90d", backup=True), name="inside"),
        ]
    )
    assert runner.result(proc, "outside")["changed"] is False
    predicted = runner.result(proc, "inside check")
    assert predicted["changed"] and predicted["reasons"] == ["expiring"]
    renewed = runner.result(proc, "inside")
    assert renewed["changed"] and renewed["reasons"] == ["expiring"] and not renewed["key_created"]
    assert (tmp_path / "ca.key").read_bytes() == key_before
    assert (tmp_path / "ca.crt").read_bytes() != cert_before
    assert Path(renewed["backup_file"]).read_bytes() == cert_before
    old = x509.load_pem_x509_certificate(cert_before)
    new = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    assert new.not_valid_after_utc > old.not_valid_after_utc
    assert new.public_key().public_numbers() == old.public_key().public_numbers()


def test_name_change_recreates_certificate(runner, tmp_path):
    runner.ok([ca_task(tmp_path)])
    proc = runner.ok([ca_task(tmp_path, fabric_name="staging")], "--diff")
    result = proc.tasks[0][1]["localhost"]
    assert result["changed"] and result["reasons"] == ["names"]
    assert result["diff"]["before"]["certificate"]["subject"] == "CN=prod"
    assert result["diff"]["after"]["certificate"]["subject"] == "CN=staging"


def test_file_attribute_drift_is_a_change(runner, tmp_path):
    runner.ok([ca_task(tmp_path)])
    os.chmod(tmp_path / "ca.key", 0o644)
    os.chmod(tmp_path / "ca.crt", 0o600)
    proc = runner.ok(runner.four_steps(ca_task(tmp_path), "drift"))
    runner.assert_four_steps(proc, "drift")
    assert runner.result(proc, "drift 2")["reasons"] == []  # attributes only, no new cert
    assert stat.S_IMODE(os.stat(tmp_path / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "ca.crt").st_mode) == 0o644


def test_passphrase_protected_key(runner, tmp_path):
    proc = runner.ok([ca_task(tmp_path, privatekey_passphrase="correct horse")] * 2)
    assert [hosts["localhost"]["changed"] for _name, hosts in proc.tasks] == [True, False]
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ca.key").read_bytes()
    proc = runner.run([ca_task(tmp_path, privatekey_passphrase="wrong")])
    assert proc.returncode != 0
    msg = proc.tasks[0][1]["localhost"]["msg"]
    assert "privatekey_path" in msg and "refusing to replace" in msg


def test_unreadable_key_is_never_replaced(runner, tmp_path):
    (tmp_path / "ca.key").write_text("garbage\n")
    proc = runner.run([ca_task(tmp_path)])
    assert proc.returncode != 0
    assert "privatekey_path" in proc.tasks[0][1]["localhost"]["msg"]
    assert (tmp_path / "ca.key").read_text() == "garbage\n"
    assert not (tmp_path / "ca.crt").exists()


def test_regenerate_policies(runner, tmp_path):
    runner.ok([ca_task(tmp_path, valid_days=10)])
    proc = runner.ok(
        [
            dict(ca_task(tmp_path, regenerate="never", renew_before="30d"), name="never"),
            dict(ca_task(tmp_path, regenerate="always"), name="always 1"),
            dict(ca_task(tmp_path, regenerate="always"), name="always 2"),
        ]
    )
    assert runner.result(proc, "never")["changed"] is False
    assert runner.result(proc, "always 1")["reasons"] == ["forced"]
    assert runner.result(proc, "always 2")["changed"] is True
    proc = runner.run([ca_task(tmp_path, regenerate="fail", renew_before="4000d")])
    assert proc.returncode != 0
    assert "regenerate=fail" in proc.tasks[0][1]["localhost"]["msg"]


def test_bad_parameters_name_the_option(runner, tmp_path):
    cases = {
        "renew_before": dict(renew_before="soon"),
        "valid_days": dict(valid_days=0),
        "fabric_name": dict(fabric_name="x" * 65),
        "regenerate": dict(regenerate="sometimes"),
    }
    tasks = [
        dict(ca_task(tmp_path, **params), name=option, ignore_errors=True)
        for option, params in cases.items()
    ]
    tasks.append(
        dict(
            name="certificate_path",
            ignore_errors=True,
            **{
                "clusterlink.fabric.fabric_ca": {
                    "fabric_name": "prod",
                    "privatekey_path": "/tmp/x.key",
                }
            },
        )
    )
    proc = runner.ok(tasks)
    for option in [*cases, "certificate_path"]:
        result = runner.result(proc, option)
        assert result["failed"] and option in result["msg"], (option, result["msg"])
    assert not (tmp_path / "ca.key").exists()
