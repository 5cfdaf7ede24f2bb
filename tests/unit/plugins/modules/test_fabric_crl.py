# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""clusterlink.fabric.fabric_crl and certificate_info, run for real through ansible-playbook."""

from __future__ import annotations

import os
import stat

from cryptography import x509


def ca_task(tmp_path, name="ca", fabric="prod"):
    return {
        "name": f"make {name}",
        "clusterlink.fabric.fabric_ca": {
            "certificate_path": str(tmp_path / f"{name}.crt"),
            "privatekey_path": str(tmp_path / f"{name}.key"),
            "fabric_name": fabric,
        },
    }


def crl_task(tmp_path, ca="ca", **params):
    args = dict(
        path=str(tmp_path / "revoked.crl"),
        ca_certificate_path=str(tmp_path / f"{ca}.crt"),
        ca_privatekey_path=str(tmp_path / f"{ca}.key"),
    )
    args.update(params)
    return {"clusterlink.fabric.fabric_crl": args}


def load(tmp_path):
    return x509.load_pem_x509_crl((tmp_path / "revoked.crl").read_bytes())


def test_empty_list_four_steps_signed_by_the_ca(runner, tmp_path):
    proc = runner.ok([ca_task(tmp_path), *runner.four_steps(crl_task(tmp_path), "crl")])
    runner.assert_four_steps(proc, "crl")
    assert runner.result(proc, "crl 1")["reasons"] == ["missing"]
    assert stat.S_IMODE(os.stat(tmp_path / "revoked.crl").st_mode) == 0o644
    crl = load(tmp_path)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    assert len(crl) == 0 and crl.issuer == ca.subject
    assert crl.is_signature_valid(ca.public_key())
    info = runner.result(proc, "crl 4")["info"]
    assert info["crl_number"] == 1 and info["revoked_serials"] == [] and info["issuer"] == "CN=prod"
    assert "PRIVATE KEY" not in runner.last_output


def test_revoke_serials_in_every_notation_and_keep_them(runner, tmp_path):
    runner.ok([ca_task(tmp_path), crl_task(tmp_path)])
    serials = ["0x7b01", "AB:CD", "4660"]  # 0x7B01, 0xABCD, 0x1234
    proc = runner.ok(runner.four_steps(crl_task(tmp_path, revoked_serials=serials), "revoke"))
    runner.assert_four_steps(proc, "revoke")
    first = runner.result(proc, "revoke 1")
    assert first["reasons"] == ["added"] and first["added"] == ["7B:01", "AB:CD", "12:34"]
    crl = load(tmp_path)
    assert sorted(e.serial_number for e in crl) == [0x1234, 0x7B01, 0xABCD]
    assert runner.result(proc, "revoke 4")["info"]["crl_number"] == 2
    # A run without serials keeps them (nothing is ever removed) and changes nothing.
    proc = runner.ok([dict(crl_task(tmp_path), name="again")])
    assert runner.result(proc, "again")["changed"] is False
    assert len(load(tmp_path)) == 3


def test_re_signed_by_a_new_ca_with_entries_kept(runner, tmp_path):
    runner.ok([ca_task(tmp_path), crl_task(tmp_path, revoked_serials=["0x99"])])
    proc = runner.ok(
        [ca_task(tmp_path, "ca2", "prod"), dict(crl_task(tmp_path, "ca2"), name="resign")],
        "--diff",
    )
    result = runner.result(proc, "resign")
    assert result["changed"] and result["reasons"] == ["issuer"], result
    ca2 = x509.load_pem_x509_certificate((tmp_path / "ca2.crt").read_bytes())
    crl = load(tmp_path)
    assert crl.is_signature_valid(ca2.public_key()) and [e.serial_number for e in crl] == [0x99]


def test_expiring_list_is_re_signed(runner, tmp_path):
    runner.ok([ca_task(tmp_path), crl_task(tmp_path, valid_days=1)])
    proc = runner.ok([dict(crl_task(tmp_path, valid_days=1), name="resign")])
    assert runner.result(proc, "resign")["reasons"] == ["expiring"]


def test_bad_serial_and_foreign_key_are_refused(runner, tmp_path):
    runner.ok([ca_task(tmp_path), ca_task(tmp_path, "other", "other")])
    proc = runner.run([crl_task(tmp_path, revoked_serials=["12:zz"])])
    assert proc.returncode != 0 and "revoked_serials: '12:zz'" in runner.last_output
    mixed = crl_task(tmp_path, ca_privatekey_path=str(tmp_path / "other.key"))
    proc = runner.run([mixed])
    assert proc.returncode != 0 and "does not belong" in runner.last_output
    assert not (tmp_path / "revoked.crl").exists()


def test_check_mode_without_a_ca_predicts_a_change(runner, tmp_path):
    proc = runner.ok([dict(crl_task(tmp_path), name="crl", check_mode=True)])
    assert runner.result(proc, "crl")["reasons"] == ["ca_missing"]


def test_certificate_info_lists_a_bundle(runner, tmp_path):
    runner.ok([ca_task(tmp_path), ca_task(tmp_path, "ca2", "next")])
    bundle = (tmp_path / "ca.crt").read_text() + "junk\n" + (tmp_path / "ca2.crt").read_text()
    task = {"name": "info", "clusterlink.fabric.certificate_info": {"content": bundle}}
    proc = runner.ok([task], check=True)
    certs = runner.result(proc, "info")["certificates"]
    assert [c["subject"] for c in certs] == ["CN=prod", "CN=next"]
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    assert certs[0]["serial_number"] == ca.serial_number
    assert int(certs[0]["serial_hex"].replace(":", ""), 16) == ca.serial_number
    assert len(certs[0]["fingerprint_sha256"].split(":")) == 32
    proc = runner.ok([{"name": "none", "clusterlink.fabric.certificate_info": {"content": ""}}])
    assert runner.result(proc, "none")["certificates"] == []
