"""Trust per peer: the binding rule (peering/anchors.py), ``spec.trust.ca`` validation
(model/trust.py) and the per-peer contexts of ``TLSContexts``; every refusal."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from clusterlink_gateway.model.errors import format_validation_error
from clusterlink_gateway.model.objects import Peer
from clusterlink_gateway.model.trust import MAX_ANCHORS, anchor_facts, check_ca_bundle
from clusterlink_gateway.peering.admission import Admission, Admitted, Refused
from clusterlink_gateway.peering.anchors import Bundle, bind, changed_names, holds
from clusterlink_gateway.peering.tls import TLSContexts
from support.pki import TestCA


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _intermediate(root: TestCA, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=5))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    return cert, key


def _leaf(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=5))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture
def partner(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "partner", "partner-ca")


def _bundles(**named: TestCA | tuple[x509.Certificate, ...]) -> dict[str, Bundle]:
    return {n: Bundle.of(v if isinstance(v, tuple) else (v.cert,)) for n, v in named.items()}


# -- the binding rule ----------------------------------------------------------------------------


def test_a_foreign_certificate_is_admitted_only_for_its_peer_and_not_as_fabric(
    ca: TestCA, partner: TestCA
) -> None:
    bundles = _bundles(partner=partner)
    leaf = _load(partner.issue("partner").cert)
    assert bind(leaf, "partner", (ca.cert,), bundles) == Admitted("partner", fabric=False)


@pytest.mark.parametrize("name", ["cl1", "cl0", "stranger"])
def test_a_foreign_certificate_named_like_another_site_is_a_wrong_anchor(
    ca: TestCA, partner: TestCA, name: str
) -> None:
    """Whatever its SAN says: a local site (cl1), this gateway's own name (cl0), or a name
    that is no Peer (open fabric)."""
    verdict = bind(_load(partner.issue(name).cert), name, (ca.cert,), _bundles(partner=partner))
    assert isinstance(verdict, Refused) and verdict.reason == "wrong-anchor"
    assert verdict.name == name
    assert "anchors of partner" in verdict.detail and "fabric CA" in verdict.detail


def test_the_fabric_ca_cannot_speak_for_a_foreign_party(ca: TestCA, partner: TestCA) -> None:
    verdict = bind(
        _load(ca.issue("partner").cert), "partner", (ca.cert,), _bundles(partner=partner)
    )
    assert isinstance(verdict, Refused) and verdict.reason == "wrong-anchor"
    assert "issued by the fabric CA" in verdict.detail


def test_fabric_certificates_keep_working_for_fabric_names(ca: TestCA, partner: TestCA) -> None:
    leaf = _load(ca.issue("cl1").cert)
    assert bind(leaf, "cl1", (ca.cert,), _bundles(partner=partner)) == Admitted("cl1")


def test_one_party_cannot_speak_for_another(tmp_path: Path, ca: TestCA, partner: TestCA) -> None:
    other = TestCA(tmp_path / "other", "other-ca")
    bundles = _bundles(partner=partner, other=other)
    verdict = bind(_load(other.issue("partner").cert), "partner", (ca.cert,), bundles)
    assert isinstance(verdict, Refused) and "anchors of other" in verdict.detail


def test_the_leaf_must_be_issued_directly_by_an_anchor(ca: TestCA, partner: TestCA) -> None:
    """A foreign intermediate missing from the bundle could otherwise chain a leaf named like
    our site to the foreign root in the shared verify store."""
    inter, key = _intermediate(partner, "partner-issuing")
    for name in ("partner", "cl1"):
        verdict = bind(_leaf(inter, key, name), name, (ca.cert,), _bundles(partner=partner))
        assert isinstance(verdict, Refused) and "(not an anchor)" in verdict.detail
    # the intermediate in the bundle: its leaves are the party's
    bundles = _bundles(partner=(partner.cert, inter))
    assert bind(_leaf(inter, key, "partner"), "partner", (ca.cert,), bundles) == Admitted(
        "partner", fabric=False
    )
    assert isinstance(bind(_leaf(inter, key, "cl1"), "cl1", (ca.cert,), bundles), Refused)


def test_rotation_overlap_accepts_old_and_new_anchor(
    tmp_path: Path, ca: TestCA, partner: TestCA
) -> None:
    new = TestCA(tmp_path / "partner-new", "partner-ca")  # same subject, other key
    both = _bundles(partner=(partner.cert, new.cert))
    for issuer in (partner, new):
        leaf = _load(issuer.issue("partner").cert)
        assert bind(leaf, "partner", (ca.cert,), both) == Admitted("partner", fabric=False)
    old_leaf = _load(partner.issue("partner").cert)
    assert isinstance(bind(old_leaf, "partner", (ca.cert,), _bundles(partner=new)), Refused)


def test_an_expired_anchor_vouches_for_nothing(ca: TestCA, partner: TestCA) -> None:
    leaf = _load(partner.issue("partner").cert)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=60)  # TestCA lives 30 days
    verdict = bind(leaf, "partner", (ca.cert,), _bundles(partner=partner), later)
    assert isinstance(verdict, Refused) and verdict.reason == "wrong-anchor"


def test_holds_rechecks_an_established_link_after_a_change(ca: TestCA, partner: TestCA) -> None:
    der = _load(partner.issue("partner").cert).public_bytes(serialization.Encoding.DER)
    assert holds(der, "partner", (ca.cert,), _bundles(partner=partner))
    assert not holds(der, "partner", (ca.cert,), {})  # trust removed: the fabric CA is needed
    assert not holds(None, "partner", (ca.cert,), _bundles(partner=partner))
    assert not holds(b"garbage", "partner", (ca.cert,), _bundles(partner=partner))


def test_changed_names(tmp_path: Path, partner: TestCA) -> None:
    other = TestCA(tmp_path / "other", "other-ca")
    old = _bundles(partner=partner, keep=other)
    assert changed_names(old, old) == set()
    assert changed_names(old, _bundles(partner=other, keep=other)) == {"partner"}
    assert changed_names(old, _bundles(keep=other)) == {"partner"}
    assert changed_names({}, old) == {"partner", "keep"}


class _SSL:
    """What ``Admission.check`` reads of a handshaken TLS object (a real certificate)."""

    def __init__(self, cert: x509.Certificate) -> None:
        self.cert = cert

    def getpeercert(self, binary_form: bool = False) -> Any:
        if binary_form:
            return self.cert.public_bytes(serialization.Encoding.DER)
        names = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return {
            "subjectAltName": [("DNS", n) for n in names.value.get_values_for_type(x509.DNSName)]
        }


def test_admission_applies_the_binding_before_the_peer_list(ca: TestCA, partner: TestCA) -> None:
    bundles = _bundles(partner=partner)

    def binding(ssl_object: Any, name: str) -> Admitted | Refused:
        return bind(ssl_object.cert, name, (ca.cert,), bundles)

    peers = {"cl1", "partner"}
    closed = Admission(peers.__contains__, binding=binding)
    assert closed.check(_SSL(_load(partner.issue("partner").cert))) == Admitted(
        "partner", fabric=False
    )
    assert closed.check(_SSL(_load(ca.issue("cl1").cert))) == Admitted("cl1")
    for name in ("cl1", "cl9"):  # a Peer, and a name that is none: the anchor decides first
        verdict = closed.check(_SSL(_load(partner.issue(name).cert)))
        assert isinstance(verdict, Refused) and verdict.reason == "wrong-anchor"
    verdict = closed.check(_SSL(_load(ca.issue("cl9").cert)))
    assert isinstance(verdict, Refused) and verdict.reason == "unknown-peer"
    # open fabric: names that are no Peer still need the fabric CA
    opened = Admission(peers.__contains__, open_fabric=True, binding=binding)
    assert opened.check(_SSL(_load(ca.issue("cl9").cert))) == Admitted("cl9")
    verdict = opened.check(_SSL(_load(partner.issue("cl9").cert)))
    assert isinstance(verdict, Refused) and verdict.reason == "wrong-anchor"
    # no foreign anchor: the binding says nothing (None) and the fabric rule is unchanged
    plain = Admission(peers.__contains__, binding=lambda _s, _n: None)
    assert plain.check(_SSL(_load(ca.issue("cl1").cert))) == Admitted("cl1")


# -- TLSContexts: per-peer contexts -------------------------------------------------------------


def test_per_peer_client_contexts_follow_the_bundles(
    tmp_path: Path, ca: TestCA, partner: TestCA
) -> None:
    ours = ca.issue("cl0")
    tls = TLSContexts(ours.cert, ours.key, ca.ca_path, expected_name="cl0")
    fabric_client = tls.client_context()
    assert tls.client_context(peer="partner") is fabric_client
    assert tls.bind(None, "cl1") is None  # no foreign anchor: nothing checked
    assert tls.set_peer_bundles(_bundles(partner=partner)) == {"partner"}
    own = tls.client_context(peer="partner")
    fabric_client = tls.client_context()  # rebuilt with the listener's store
    assert own is not fabric_client and tls.client_context(peer="cl1") is fabric_client
    assert [c["subject"] for c in own.get_ca_certs()] == [((("commonName", "partner-ca"),),)]
    assert tls.client_context(peer="partner", reverse=True) is not own
    store = {c["subject"][0][0][1] for c in tls._current.server.get_ca_certs()}
    assert store == {"test-fabric", "partner-ca"}
    assert tls.set_peer_bundles(_bundles(partner=partner)) == set()  # unchanged: no rebuild
    # a certificate reload (the files replaced) keeps the anchors
    assert ca.issue("cl0").cert == ours.cert
    assert tls.reload() is True
    assert tls.client_context(peer="partner") is not own  # rebuilt with the new certificate
    assert tls.client_context(peer="partner") is not tls.client_context()
    store = {c["subject"][0][0][1] for c in tls._current.server.get_ca_certs()}
    assert store == {"test-fabric", "partner-ca"}
    assert tls.set_peer_bundles({}) == {"partner"}
    assert tls.client_context(peer="partner") is tls.client_context()
    store = {c["subject"][0][0][1] for c in tls._current.server.get_ca_certs()}
    assert store == {"test-fabric"}


# -- spec.trust.ca validation ---------------------------------------------------------------------


def _peer_error(ca_text: str) -> str:
    body = {"name": "partner", "spec": {"gateways": [{"host": "h"}], "trust": {"ca": ca_text}}}
    with pytest.raises(ValidationError) as info:
        Peer.model_validate(body)
    return format_validation_error(info.value)


def test_a_valid_bundle_is_stored_canonical(partner: TestCA) -> None:
    pem = _pem(partner.cert)
    squeezed = pem.replace("\n", "\r\n").rstrip() + "\n\n"  # other line ends, as pasted
    body = {"name": "partner", "spec": {"gateways": [{"host": "h"}], "trust": {"ca": squeezed}}}
    peer = Peer.model_validate(body)
    assert peer.spec.trust is not None and peer.spec.trust.ca == pem
    facts = anchor_facts(peer.spec.trust.ca)
    assert facts[0]["subject"] == "CN=partner-ca" and len(facts[0]["fingerprint_sha256"]) == 64


def test_a_private_key_is_refused_and_not_echoed(partner: TestCA) -> None:
    secret = partner.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    message = _peer_error(_pem(partner.cert) + secret)
    assert message.startswith("spec.trust.ca: ") and "PRIVATE KEY block" in message
    assert secret.splitlines()[1] not in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no PEM certificate"),
        ("hello", "text outside PEM"),
        ("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n", "base64"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "cannot be parsed"),
        ("x" * 70000, "at most 65536"),
    ],
)
def test_malformed_bundles_are_refused_naming_the_field(text: str, fragment: str) -> None:
    message = _peer_error(text)
    assert message.startswith("spec.trust.ca: ") and fragment in message, message


def test_a_gateway_certificate_is_not_an_anchor(ca: TestCA) -> None:
    message = _peer_error(ca.issue("partner").cert.read_text())
    assert "is not a CA" in message and "CN=partner" in message


def test_an_all_expired_bundle_is_refused_one_valid_suffices(partner: TestCA) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=60)
    with pytest.raises(ValueError, match="valid now"):
        check_ca_bundle(_pem(partner.cert), later)
    assert check_ca_bundle(_pem(partner.cert)) == _pem(partner.cert)


def test_too_many_anchors_are_refused(partner: TestCA) -> None:
    message = _peer_error(_pem(*[partner.cert] * (MAX_ANCHORS + 1)))
    assert f"at most {MAX_ANCHORS}" in message


def test_dialing_a_bound_peer_needs_a_leaf_issued_directly_by_its_anchors(
    ca: TestCA, partner: TestCA
) -> None:
    ours = ca.issue("cl0")
    tls = TLSContexts(ours.cert, ours.key, ca.ca_path, expected_name="cl0")
    tls.set_peer_bundles(_bundles(partner=partner))
    assert tls.dial_refusal(_SSL(_load(partner.issue("partner").cert)), "partner") is None
    inter, key = _intermediate(partner, "partner-issuing")
    refusal = tls.dial_refusal(_SSL(_leaf(inter, key, "partner")), "partner")
    assert refusal is not None and "directly" in refusal
    assert tls.dial_refusal(None, "partner") is not None
    assert tls.dial_refusal(None, "cl1") is None  # a fabric peer: the fabric context decided
    assert tls.bound("partner") and not tls.bound("cl1")
