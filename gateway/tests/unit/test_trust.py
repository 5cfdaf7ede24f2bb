"""The one certificate acceptance rule (peering/trust.py), revocation state
(peering/revocation.py) and the SIGHUP classification of every setting (config.reload_plan)."""

from __future__ import annotations

import datetime as dt
import hashlib
import types
import typing
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel

from clusterlink_gateway.config import (
    Config,
    classify_key,
    merge_live,
    reload_plan,
)
from clusterlink_gateway.peering.revocation import (
    RevocationError,
    build_revocation,
    parse_fingerprint,
    parse_serial,
)
from clusterlink_gateway.peering.tls import TLSSettings, load_state
from clusterlink_gateway.peering.trust import TLSError, accept_material
from support.pki import Issued, TestCA


def _accept(issued: Issued, ca: TestCA, name: str | None = "cl0", **kw: typing.Any):
    return accept_material(issued.cert, issued.key, ca.ca_path, expected_name=name, **kw)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# -- the acceptance rule ------------------------------------------------------------------------


def test_accepts_a_fabric_certificate_for_our_name(ca: TestCA) -> None:
    material = _accept(ca.issue("cl0"), ca)
    assert material.name == "cl0"
    assert len(material.anchors.fabric) == 1


@pytest.mark.parametrize(
    ("make", "reason", "words"),
    [
        (lambda ca, other: ca.issue("cl1"), "wrong-name", "not for this gateway's peer_name"),
        (lambda ca, other: ca.issue("cl0", san=False), "no-san", "only a CN"),
        (lambda ca, other: ca.issue("cl0", expired=True), "expired", "expired at"),
        (lambda ca, other: ca.issue("cl0", not_yet_valid=True), "expired", "not valid before"),
        (lambda ca, other: other.issue("cl0"), "unknown-ca", "not issued by a CA of the bundle"),
    ],
    ids=["other-name", "cn-only", "expired", "not-yet-valid", "wrong-ca"],
)
def test_refusals_name_the_reason(tmp_path: Path, ca: TestCA, make, reason, words) -> None:
    other = TestCA(tmp_path / "other", "other-fabric")
    with pytest.raises(TLSError, match=words) as info:
        _accept(make(ca, other), ca)
    assert info.value.reason == reason


def test_key_mismatch_and_unreadable_files(tmp_path: Path, ca: TestCA) -> None:
    a, b = ca.issue("cl0"), ca.issue("cl0-b", dns=["cl0"])
    with pytest.raises(TLSError, match="does not match") as info:
        accept_material(a.cert, b.key, ca.ca_path, expected_name="cl0")
    assert info.value.reason == "key-mismatch"
    with pytest.raises(TLSError, match="cannot read") as info:
        accept_material(tmp_path / "nope.crt", a.key, ca.ca_path, expected_name="cl0")
    assert info.value.reason == "unreadable"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(TLSError, match="not a PEM certificate"):
        accept_material(garbage, a.key, ca.ca_path, expected_name="cl0")


def test_a_bundle_with_several_cas_accepts_either(tmp_path: Path, ca: TestCA) -> None:
    other = TestCA(tmp_path / "other", "other-fabric")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.ca_path.read_bytes() + other.ca_path.read_bytes())
    for issuer in (ca, other):
        issued = issuer.issue("cl0")
        accept_material(issued.cert, issued.key, bundle, expected_name="cl0")


def test_own_certificate_revoked_is_refused(tmp_path: Path, ca: TestCA) -> None:
    issued = ca.issue("cl0")
    revocation = build_revocation(None, [format(issued.serial, "x")], [], [ca.cert])
    with pytest.raises(TLSError, match="revoked") as info:
        _accept(issued, ca, revocation=revocation)
    assert info.value.reason == "revoked"


def test_admin_material_skips_chain_and_name(tmp_path: Path, ca: TestCA) -> None:
    admin_ca = TestCA(tmp_path / "admin", "admin-ca")
    server = ca.issue("localhost", san=False)  # admin server cert: any issuer, no SAN needed
    accept_material(server.cert, server.key, admin_ca.ca_path, expected_name=None, purpose="admin")
    expired = ca.issue("old", expired=True)
    with pytest.raises(TLSError, match="expired"):
        accept_material(
            expired.cert, expired.key, admin_ca.ca_path, expected_name=None, purpose="admin"
        )


def test_load_state_is_the_same_rule(tmp_path: Path, ca: TestCA) -> None:
    good, wrong = ca.issue("cl0"), ca.issue("cl1")
    assert load_state(TLSSettings(good.cert, good.key, ca.ca_path, "cl0")).name == "cl0"
    with pytest.raises(TLSError) as info:
        load_state(TLSSettings(wrong.cert, wrong.key, ca.ca_path, "cl0"))
    assert info.value.reason == "wrong-name"


# -- revocation -----------------------------------------------------------------------------------


def test_crl_serial_and_fingerprint_revoke(tmp_path: Path, ca: TestCA) -> None:
    a, b, c, d = (ca.issue(n) for n in ("a", "b", "c", "d"))
    crl = ca.crl(tmp_path / "fabric.crl", [a.serial])
    fp = hashlib.sha256(_load(c.cert).public_bytes(serialization.Encoding.DER)).hexdigest()
    state = build_revocation(crl, [f"0x{b.serial:X}"], [fp.upper()], [ca.cert])
    assert "CRL" in (state.reason(_load(a.cert)) or "")
    assert "serials" in (state.reason(_load(b.cert)) or "")
    assert "fingerprints" in (state.reason(_load(c.cert)) or "")
    assert state.reason(_load(d.cert)) is None
    der = _load(a.cert).public_bytes(serialization.Encoding.DER)
    assert state.reason_der(der) is not None


def test_der_crl_and_empty_crl_are_valid(tmp_path: Path, ca: TestCA) -> None:
    a = ca.issue("a")
    state = build_revocation(ca.crl(tmp_path / "x.crl", [a.serial], der=True), [], [], [ca.cert])
    assert state.reason(_load(a.cert)) is not None
    empty = build_revocation(ca.crl(tmp_path / "e.crl", []), [], [], [ca.cert])
    assert empty.empty and empty.crl_digest


def test_crl_from_another_ca_or_garbage_is_refused(tmp_path: Path, ca: TestCA) -> None:
    other = TestCA(tmp_path / "other", "other-fabric")
    crl = other.crl(tmp_path / "other.crl", [1])
    with pytest.raises(RevocationError, match="not signed by a CA of the fabric bundle"):
        build_revocation(crl, [], [], [ca.cert])
    garbage = tmp_path / "garbage.crl"
    garbage.write_bytes(b"not a crl")
    with pytest.raises(RevocationError, match="not a PEM or DER"):
        build_revocation(garbage, [], [], [ca.cert])
    with pytest.raises(RevocationError, match="cannot read"):
        build_revocation(tmp_path / "missing.crl", [], [], [ca.cert])


def test_bad_crl_is_a_tls_refusal(tmp_path: Path, ca: TestCA) -> None:
    other = TestCA(tmp_path / "other", "other-fabric")
    gw = ca.issue("cl0")
    crl = other.crl(tmp_path / "other.crl", [])
    with pytest.raises(TLSError) as info:
        load_state(TLSSettings(gw.cert, gw.key, ca.ca_path, "cl0", crl=crl))
    assert info.value.reason == "bad-crl"


def test_serial_and_fingerprint_syntax() -> None:
    assert parse_serial("0x1F") == parse_serial("1f") == parse_serial("1F") == 31
    assert parse_serial("01:0a") == 0x10A
    for bad in ("", "xyz", "0x"):
        with pytest.raises(RevocationError):
            parse_serial(bad)
    assert parse_fingerprint("AB" * 32) == "ab" * 32
    with pytest.raises(RevocationError, match="64 digits"):
        parse_fingerprint("ab" * 31)


def test_config_validates_revocation_lists() -> None:
    cfg = Config.model_validate(
        {"peer_name": "cl0", "tls": {"revocation": {"serials": ["0xAB"], "fingerprints": []}}}
    )
    assert cfg.tls.revocation.serials == ["ab"] and cfg.tls.revocation.crl is None
    with pytest.raises(ValueError, match="fingerprint"):
        Config.model_validate(
            {"peer_name": "cl0", "tls": {"revocation": {"fingerprints": ["abc"]}}}
        )


# -- SIGHUP: every setting is live or named in needs_restart ------------------------------------


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    """Every setting: leaves, and sections that may be absent (``admin.tcp``)."""
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = info.annotation
        optional = _is_union(annotation)
        candidates = typing.get_args(annotation) if optional else (annotation,)
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if optional or not models:
            out.append(key)
        for candidate in models:
            out.extend(_leaf_keys(candidate, f"{key}."))
    return out


def _is_union(annotation: object) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def test_every_config_field_is_classified() -> None:
    """Fails when a Config field is added without deciding whether SIGHUP applies it live or
    names it in needs_restart (config.RELOAD)."""
    keys = _leaf_keys(Config)
    assert "dataplane.connect_timeout" in keys and "admin.tcp.client_ca" in keys
    unclassified = [key for key in keys if classify_key(key) is None]
    assert not unclassified, f"classify these in config.RELOAD: {unclassified}"


def test_reload_plan_names_full_dotted_keys() -> None:
    old = Config.model_validate({"peer_name": "cl0"})
    new = Config.model_validate(
        {
            "peer_name": "cl0",
            "labels": {"zone": "b"},
            "dataplane": {"connect_timeout": 5, "dial_timeout": 4},
            "listen": {"port": 8443},
            "tls": {"revocation": {"serials": ["ab"]}},
        }
    )
    live, restart = reload_plan(old, new)
    assert restart == ["dataplane.connect_timeout", "listen.port"]
    assert live == ["dataplane.dial_timeout", "labels", "tls.revocation.serials"]
    merged = merge_live(old, new, live)
    assert merged.dataplane.dial_timeout == 4 and merged.dataplane.connect_timeout == 3
    assert merged.listen.port == 443 and merged.labels == {"zone": "b"}
    assert reload_plan(merged, new) == ([], restart)  # still pending until a restart


def test_admin_tcp_appearing_needs_restart(tmp_path: Path) -> None:
    old = Config.model_validate({"peer_name": "cl0"})
    tcp = {"cert": "/a.crt", "key": "/a.key", "client_ca": "/ca.pem"}
    new = Config.model_validate({"peer_name": "cl0", "admin": {"tcp": tcp}})
    assert reload_plan(old, new) == ([], ["admin.tcp"])
    moved = Config.model_validate(
        {"peer_name": "cl0", "admin": {"tcp": {**tcp, "client_ca": "/new.pem", "port": 1}}}
    )
    assert reload_plan(new, moved) == (["admin.tcp.client_ca"], ["admin.tcp.port"])


def test_a_per_peer_anchor_is_one_more_input_to_the_same_rule(tmp_path: Path, ca: TestCA) -> None:
    """A foreign party's CA valid for a named peer only, and the only CA valid for it: the same
    chain check, fed other anchors."""
    from clusterlink_gateway.peering.trust import TrustAnchors, check_chain

    foreign = TestCA(tmp_path / "foreign", "partner-ca")
    anchors = TrustAnchors(fabric=(ca.cert,), per_peer={"partner": (foreign.cert,)})
    now = dt.datetime.now(dt.UTC)
    partner = _load(foreign.issue("partner").cert)
    assert check_chain(partner, [], anchors.for_name("partner"), "partner", now) == foreign.cert
    impostor = _load(foreign.issue("cl1").cert)
    with pytest.raises(TLSError) as info:
        check_chain(impostor, [], anchors.for_name("cl1"), "cl1", now)
    assert info.value.reason == "unknown-ca"
    ours = _load(ca.issue("cl1").cert)
    assert check_chain(ours, [], anchors.for_name("cl1"), "cl1", now) == ca.cert
    fabric_partner = _load(ca.issue("partner").cert)  # the fabric CA cannot speak for partner
    with pytest.raises(TLSError):
        check_chain(fabric_partner, [], anchors.for_name("partner"), "partner", now)
