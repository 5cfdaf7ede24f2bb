# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""clusterlink.fabric.gateway_key, run for real through ansible-playbook."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def key_task(tmp_path, **params):
    args = dict(path=str(tmp_path / "gateway.key"), peer_name="site-a")
    args.update(params)
    return {"clusterlink.fabric.gateway_key": args}


def spki(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_four_steps_owner_mode_and_csr(runner, tmp_path, unprivileged_user):
    user, group = unprivileged_user
    proc = runner.ok(runner.four_steps(key_task(tmp_path, owner=user, group=group), "key"))
    runner.assert_four_steps(proc, "key")
    path = tmp_path / "gateway.key"
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert pwd.getpwuid(info.st_uid).pw_name == user
    assert grp.getgrgid(info.st_gid).gr_name == group

    key = serialization.load_pem_private_key(path.read_bytes(), None)
    for step in (2, 3, 4):
        result = runner.result(proc, f"key {step}")
        csr = x509.load_pem_x509_csr(result["csr"].encode())
        assert csr.is_signature_valid
        assert spki(csr.public_key()) == spki(key.public_key())
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "site-a"
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["site-a"]
        assert result["key_type"] == "ECDSA secp256r1"
        assert "PRIVATE KEY" not in str(result)
    # The check-mode step made a CSR for a throw-away key, and wrote nothing.
    first = runner.result(proc, "key 1")
    assert first["reasons"] == ["missing"]
    assert spki(x509.load_pem_x509_csr(first["csr"].encode()).public_key()) != spki(
        key.public_key()
    )


def test_mode_and_owner_drift_is_a_change(runner, tmp_path):
    runner.ok([key_task(tmp_path)])
    path = tmp_path / "gateway.key"
    content = path.read_bytes()
    os.chmod(path, 0o644)
    proc = runner.ok(runner.four_steps(key_task(tmp_path), "drift"), "--diff")
    runner.assert_four_steps(proc, "drift")
    result = runner.result(proc, "drift 2")
    assert result["reasons"] == []
    assert result["diff"]["before"]["mode"] == "0644" and result["diff"]["after"]["mode"] == "0600"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes() == content  # attributes fixed, key kept


def test_unusable_key_is_replaced_with_backup(runner, tmp_path):
    path = tmp_path / "gateway.key"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(rsa_pem)
    os.chmod(path, 0o600)
    proc = runner.ok([dict(key_task(tmp_path, backup=True), name="rsa")])
    result = runner.result(proc, "rsa")
    assert result["changed"] and result["reasons"] == ["key_type"]
    assert Path(result["backup_file"]).read_bytes() == rsa_pem
    assert stat.S_IMODE(os.stat(result["backup_file"]).st_mode) == 0o600
    assert result["key_type"] == "ECDSA secp256r1"

    path.write_text("not a key\n")
    proc = runner.ok([dict(key_task(tmp_path), name="garbage")])
    assert runner.result(proc, "garbage")["reasons"] == ["unparseable"]
    serialization.load_pem_private_key(path.read_bytes(), None)


def test_regenerate_policies(runner, tmp_path):
    runner.ok([key_task(tmp_path)])
    before = (tmp_path / "gateway.key").read_bytes()
    proc = runner.ok(
        [
            dict(key_task(tmp_path, regenerate="never"), name="never"),
            dict(key_task(tmp_path, regenerate="always"), name="always"),
        ]
    )
    assert runner.result(proc, "never")["changed"] is False
    assert runner.result(proc, "always")["reasons"] == ["forced"]
    assert (tmp_path / "gateway.key").read_bytes() != before

    (tmp_path / "gateway.key").write_text("not a key\n")
    for policy in ("never", "fail"):
        proc = runner.run([key_task(tmp_path, regenerate=policy)])
        assert proc.returncode != 0
        assert f"regenerate={policy}" in proc.tasks[0][1]["localhost"]["msg"]
    assert (tmp_path / "gateway.key").read_text() == "not a key\n"


def test_bad_parameters_name_the_option(runner, tmp_path):
    tasks = [
        dict(key_task(tmp_path, peer_name="Site_A"), name="peer_name", ignore_errors=True),
        dict(key_task(tmp_path, peer_name="a" * 64), name="peer_name long", ignore_errors=True),
        dict(key_task(tmp_path, regenerate="maybe"), name="regenerate", ignore_errors=True),
        dict(key_task(tmp_path / "missing-dir"), name="directory", ignore_errors=True),
        dict(
            name="path",
            ignore_errors=True,
            **{"clusterlink.fabric.gateway_key": {"peer_name": "site-a"}},
        ),
    ]
    proc = runner.ok(tasks)
    for name, needle in [
        ("peer_name", "peer_name"),
        ("peer_name long", "peer_name"),
        ("regenerate", "regenerate"),
        ("directory", "path: directory"),
        ("path", "path"),
    ]:
        result = runner.result(proc, name)
        assert result["failed"] and needle in result["msg"], (name, result["msg"])
    assert not (tmp_path / "gateway.key").exists()
