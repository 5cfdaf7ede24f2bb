"""Policy engine, attribute builders, and the upstream policy e2e sequences (engine level)."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterlink_gateway.model.selector import PolicySpec
from clusterlink_gateway.policy.attributes import (
    CLIENT_IP,
    EXPORT_NAME,
    PEER_NAME,
    destination_attributes,
    export_label,
    parse_client_ip,
    peer_label,
    source_attributes,
)
from clusterlink_gateway.policy.engine import DEFAULT_DENY, Decision, PolicyEngine

ip = ipaddress.ip_address


def policy(
    action: str,
    src: dict[str, str] | None = None,
    dst: dict[str, str] | None = None,
    *,
    privileged: bool = False,
    cidrs: list[str] | None = None,
) -> PolicySpec:
    """A policy with one ``from`` and one ``to`` element given as matchLabels."""
    from_el: dict[str, object] = {"matchLabels": src or {}}
    if cidrs:
        from_el["clientCIDRs"] = cidrs
    return PolicySpec.model_validate(
        {
            "action": action,
            "privileged": privileged,
            "from": [from_el],
            "to": [{"matchLabels": dst or {}}],
        }
    )


ALLOW_ALL = policy("allow")


# --- attributes -------------------------------------------------------------------------


def test_attribute_keys() -> None:
    assert PEER_NAME == "peer.clusterlink.net/name"
    assert peer_label("env") == "peer.clusterlink.net/labels.env"
    assert EXPORT_NAME == "export.clusterlink.net/name"
    assert export_label("env") == "export.clusterlink.net/labels.env"
    assert CLIENT_IP == "client.clusterlink.net/ip"


def test_source_attributes() -> None:
    assert source_attributes("cl1", {"zone": "a"}, "10.0.0.7") == {
        "peer.clusterlink.net/name": "cl1",
        "peer.clusterlink.net/labels.zone": "a",
        "client.clusterlink.net/ip": "10.0.0.7",
    }
    assert source_attributes("cl1", {}, None) == {"peer.clusterlink.net/name": "cl1"}
    assert source_attributes("x", {}, "::ffff:10.0.0.7")[CLIENT_IP] == "10.0.0.7"
    assert source_attributes("x", {}, "FD00:0::1")[CLIENT_IP] == "fd00::1"
    assert source_attributes("x", {}, ip("fd00::2"))[CLIENT_IP] == "fd00::2"
    with pytest.raises(ValueError):
        source_attributes("x", {}, "not-an-ip")


def test_destination_attributes() -> None:
    assert destination_attributes("cl0", {"zone": "b"}, "http-echo", {"env": "test"}) == {
        "peer.clusterlink.net/name": "cl0",
        "peer.clusterlink.net/labels.zone": "b",
        "export.clusterlink.net/name": "http-echo",
        "export.clusterlink.net/labels.env": "test",
    }


def test_parse_client_ip() -> None:
    assert parse_client_ip(None) is None
    assert parse_client_ip("1.2.3.4") == ip("1.2.3.4")
    assert parse_client_ip(ip("::ffff:1.2.3.4")) == ip("1.2.3.4")
    assert parse_client_ip("fe80::1") == ip("fe80::1")


# --- engine basics ----------------------------------------------------------------------


def test_empty_engine_default_deny() -> None:
    engine = PolicyEngine()
    d = engine.decide({}, {}, None)
    assert d == DEFAULT_DENY
    assert (d.allowed, d.action, d.policy, d.privileged) == (False, "deny", None, False)
    assert str(d) == "deny by <default deny>"
    assert "<default deny>" in str(d)


def test_decision_str() -> None:
    assert str(Decision(True, "allow", "p1", False)) == "allow by policy p1"
    assert str(Decision(False, "deny", "p2", True)) == "deny by privileged policy p2"


def test_decision_is_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_DENY.allowed = True  # type: ignore[misc]


def test_set_replace_remove_clear() -> None:
    engine = PolicyEngine()
    engine.set("p", ALLOW_ALL)
    assert len(engine) == 1 and "p" in engine and engine.get("p") is ALLOW_ALL
    assert engine.decide({}, {}) == Decision(True, "allow", "p", False)

    deny = policy("deny", privileged=True)
    engine.set("p", deny)  # replace, changing tier and action
    assert len(engine) == 1 and engine.get("p") is deny
    assert engine.decide({}, {}) == Decision(False, "deny", "p", True)

    assert engine.remove("p") is True
    assert engine.remove("p") is False
    assert engine.remove("never") is False
    assert "p" not in engine and engine.get("p") is None
    assert engine.decide({}, {}) is DEFAULT_DENY

    engine.set("a", ALLOW_ALL)
    engine.set("b", deny)
    engine.clear()
    assert len(engine) == 0
    assert engine.decide({}, {}) is DEFAULT_DENY
    engine.set("a", ALLOW_ALL)
    assert engine.decide({}, {}).policy == "a"


def test_needs_both_from_and_to() -> None:
    engine = PolicyEngine()
    engine.set("p", policy("allow", {"s": "1"}, {"d": "1"}))
    assert engine.decide({"s": "1"}, {"d": "1"}).allowed
    assert not engine.decide({"s": "1"}, {"d": "2"}).allowed
    assert not engine.decide({"s": "2"}, {"d": "1"}).allowed


def test_any_from_and_any_to_element() -> None:
    spec = PolicySpec.model_validate(
        {
            "action": "allow",
            "from": [{"matchLabels": {"s": "1"}}, {"matchLabels": {"s": "2"}}],
            "to": [
                {"matchLabels": {"d": "1"}},
                {"matchExpressions": [{"key": "d", "operator": "In", "values": ["3", "4"]}]},
            ],
        }
    )
    engine = PolicyEngine()
    engine.set("p", spec)
    for s in ("1", "2"):
        for d in ("1", "3", "4"):
            assert engine.decide({"s": s}, {"d": d}).allowed
    assert not engine.decide({"s": "3"}, {"d": "1"}).allowed
    assert not engine.decide({"s": "1"}, {"d": "2"}).allowed


def test_lexicographic_first_name_reported() -> None:
    names = ["m", "b", "zz", "a1", "a0", "c"]
    for seed in range(5):
        random.Random(seed).shuffle(names)
        engine = PolicyEngine()
        for n in names:
            engine.set(n, ALLOW_ALL)
        engine.set("0-priv", policy("allow", {"x": "y"}, privileged=True))  # does not match
        assert engine.decide({}, {}).policy == "a0"
        engine.remove("a0")
        assert engine.decide({}, {}).policy == "a1"


def test_client_cidrs() -> None:
    engine = PolicyEngine()
    engine.set("lan", policy("allow", {PEER_NAME: "cl1"}, cidrs=["10.0.0.0/8", "fd00::/8"]))
    src = {PEER_NAME: "cl1"}
    assert engine.decide(src, {}, "10.1.2.3").policy == "lan"
    assert engine.decide(src, {}, ip("10.1.2.3")).policy == "lan"
    assert engine.decide(src, {}, "::ffff:10.1.2.3").policy == "lan"
    assert engine.decide(src, {}, "fd00::1").policy == "lan"
    assert engine.decide(src, {}, "192.168.0.1") is DEFAULT_DENY
    assert engine.decide(src, {}, None) is DEFAULT_DENY
    assert engine.decide({PEER_NAME: "cl2"}, {}, "10.1.2.3") is DEFAULT_DENY
    # deny a single client IPv6 address, everything else allowed
    engine.set("z-all", ALLOW_ALL)
    engine.set("block-one", policy("deny", cidrs=["fd00::66"]))
    assert engine.decide(src, {}, "fd00::66").policy == "block-one"
    assert engine.decide(src, {}, "fd00::67").policy == "lan"
    assert engine.decide({}, {}, "fd00::67").policy == "z-all"


def test_client_ip_exact_match_attribute() -> None:
    engine = PolicyEngine()
    engine.set("one", policy("allow", {CLIENT_IP: "10.0.0.7"}))
    assert engine.decide(source_attributes("cl1", {}, "10.0.0.7"), {}).allowed
    assert engine.decide(source_attributes("cl1", {}, "::ffff:10.0.0.7"), {}).allowed
    assert not engine.decide(source_attributes("cl1", {}, "10.0.0.8"), {}).allowed
    assert not engine.decide(source_attributes("cl1", {}, None), {}).allowed


# --- tier ordering ----------------------------------------------------------------------

TIERS = [(True, "deny"), (True, "allow"), (False, "deny"), (False, "allow")]


def test_tier_order_all_matching() -> None:
    engine = PolicyEngine()
    for privileged, action in reversed(TIERS):
        engine.set(f"{'p' if privileged else 'r'}-{action}", policy(action, privileged=privileged))
    expected = ["p-deny", "p-allow", "r-deny", "r-allow"]
    for name in expected:
        d = engine.decide({}, {})
        assert d.policy == name
        assert d.allowed == name.endswith("allow")
        assert d.privileged == name.startswith("p-")
        engine.remove(name)
    assert engine.decide({}, {}) is DEFAULT_DENY


_keys = st.sampled_from(["a", "b"])
_vals = st.sampled_from(["0", "1"])
_label_sel = st.dictionaries(_keys, _vals, max_size=2)
_attrs = st.dictionaries(_keys, _vals, max_size=2)


@st.composite
def _policies(draw: st.DrawFn) -> dict[str, tuple[bool, str, dict[str, str], dict[str, str]]]:
    names = draw(st.lists(st.sampled_from("pqrstuvw"), unique=True, max_size=8))
    return {
        n: (
            draw(st.booleans()),
            draw(st.sampled_from(["allow", "deny"])),
            draw(_label_sel),
            draw(_label_sel),
        )
        for n in names
    }


def _reference(
    pols: dict[str, tuple[bool, str, dict[str, str], dict[str, str]]],
    src: dict[str, str],
    dst: dict[str, str],
) -> tuple[str | None, bool]:
    def sub(sel: dict[str, str], attrs: dict[str, str]) -> bool:
        return all(attrs.get(k) == v for k, v in sel.items())

    for privileged, action in TIERS:
        hits = sorted(
            n
            for n, (pv, ac, s, d) in pols.items()
            if pv == privileged and ac == action and sub(s, src) and sub(d, dst)
        )
        if hits:
            return hits[0], action == "allow"
    return None, False


@given(_policies(), _attrs, _attrs, st.randoms(use_true_random=False))
def test_decide_matches_reference(
    pols: dict[str, tuple[bool, str, dict[str, str], dict[str, str]]],
    src: dict[str, str],
    dst: dict[str, str],
    rnd: random.Random,
) -> None:
    engine = PolicyEngine()
    items = list(pols.items())
    rnd.shuffle(items)
    for name, (privileged, action, s, d) in items:
        engine.set(name, policy("deny", {"a": "never"}))  # replaced below
        engine.set(name, policy(action, s, d, privileged=privileged))
    decision = engine.decide(src, dst)
    expected_name, expected_allowed = _reference(pols, src, dst)
    assert decision.policy == expected_name
    assert decision.allowed is expected_allowed
    assert decision.action == ("allow" if expected_allowed else "deny")
    if expected_name is not None:
        assert decision.privileged is pols[expected_name][0]
    # adding a matching privileged deny always wins
    engine.set("a-pd", policy("deny", privileged=True))
    assert engine.decide(src, dst) == Decision(False, "deny", "a-pd", True)


# --- upstream e2e sequences, modelled on both gateways' engines --------------------------


@dataclass
class Gateway:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    engine: PolicyEngine = field(default_factory=PolicyEngine)


@dataclass
class Fabric:
    """cl0 exports ``http-echo``; cl1 imports it from cl0 (HEAD e2e setup)."""

    cl0: Gateway = field(default_factory=lambda: Gateway("cl0", {"site": "s0"}))
    cl1: Gateway = field(default_factory=lambda: Gateway("cl1", {"site": "s1"}))
    export_name: str = "http-echo"
    import_labels: dict[str, str] = field(default_factory=lambda: {"env": "test"})
    export_labels: dict[str, str] = field(default_factory=lambda: {"env": "test"})
    # labels of cl0's Peer object for cl1 (what the exporter trusts, not what cl1 says)
    cl0_view_of_cl1: dict[str, str] = field(default_factory=lambda: {"site": "s1"})
    client_ip: str = "10.1.0.5"

    def connect(self) -> tuple[bool, Decision, Decision | None]:
        """Egress at cl1, then (if allowed) ingress at cl0."""
        egress = self.cl1.engine.decide(
            source_attributes(self.cl1.name, self.cl1.labels, self.client_ip),
            destination_attributes(
                self.cl0.name, self.cl0.labels, self.export_name, self.import_labels
            ),
            self.client_ip,
        )
        if not egress.allowed:
            return False, egress, None
        ingress = self.cl0.engine.decide(
            source_attributes(self.cl1.name, self.cl0_view_of_cl1, self.client_ip),
            destination_attributes(
                self.cl0.name, self.cl0.labels, self.export_name, self.export_labels
            ),
            self.client_ip,
        )
        return ingress.allowed, egress, ingress


def _expect(fabric: Fabric, works: bool, egress: str | None, ingress: str | None = None) -> None:
    ok, e, i = fabric.connect()
    assert ok is works
    assert e.policy == egress
    assert (i.policy if i is not None else None) == ingress


def test_scenario16_policy_labels() -> None:
    f = Fabric()
    cl0, cl1 = f.cl0.engine, f.cl1.engine
    echo_at_cl0 = {EXPORT_NAME: "http-echo", PEER_NAME: "cl0"}

    # 1. cl1 (egress) allows only echo at cl0 (HEAD: and export label env=test);
    #    cl0 (ingress) allows only from cl1.
    cl1.set(
        "allow-access-to-echo-svc",
        policy("allow", dst={**echo_at_cl0, export_label("env"): "test"}),
    )
    cl0.set("specific-peer", policy("allow", src={PEER_NAME: "cl1"}))
    _expect(f, True, "allow-access-to-echo-svc", "specific-peer")

    # 2. deny to the echo service on cl1 beats the allow
    cl1.set("deny-access-to-echo", policy("deny", dst={EXPORT_NAME: "http-echo"}))
    _expect(f, False, "deny-access-to-echo")
    # 3.
    assert cl1.remove("deny-access-to-echo")
    _expect(f, True, "allow-access-to-echo-svc", "specific-peer")

    # 4. deny to peer cl0 on cl1
    cl1.set("deny-access-to-cl0", policy("deny", dst={PEER_NAME: "cl0"}))
    _expect(f, False, "deny-access-to-cl0")
    # 5.
    assert cl1.remove("deny-access-to-cl0")
    _expect(f, True, "allow-access-to-echo-svc", "specific-peer")

    # 6. deny from cl1 on cl0 (ingress side)
    cl0.set("deny-access-from-cl1", policy("deny", src={PEER_NAME: "cl1"}))
    _expect(f, False, "allow-access-to-echo-svc", "deny-access-from-cl1")
    # 7.
    assert cl0.remove("deny-access-from-cl1")
    _expect(f, True, "allow-access-to-echo-svc", "specific-peer")

    # 8. replace cl1's allow by one naming a wrong service: default deny at egress
    assert cl1.remove("allow-access-to-echo-svc")
    cl1.set("bad-svc", policy("allow", dst={EXPORT_NAME: "bad-svc", PEER_NAME: "cl0"}))
    _expect(f, False, None)

    # 9. (HEAD) allow to export label env=prod: the import is labelled env=test
    cl1.set("allow-env-prod", policy("allow", dst={export_label("env"): "prod"}))
    _expect(f, False, None)

    # 10. (HEAD) allow to export label env=test: works again
    cl1.set("allow-env-test", policy("allow", dst={export_label("env"): "test"}))
    _expect(f, True, "allow-env-test", "specific-peer")


def test_scenario16_ingress_uses_own_view_of_caller_labels() -> None:
    f = Fabric()
    f.cl1.engine.set("allow-all", ALLOW_ALL)
    f.cl0.engine.set("allow-s1", policy("allow", src={peer_label("site"): "s1"}))
    _expect(f, True, "allow-all", "allow-s1")
    f.cl1.labels["site"] = "forged"  # what cl1 claims does not matter at ingress
    _expect(f, True, "allow-all", "allow-s1")
    f.cl0_view_of_cl1["site"] = "s9"  # cl0's own Peer object does
    _expect(f, False, "allow-all", None)


def test_scenario17_privileged_policies() -> None:
    f = Fabric()
    f.cl0.engine.set("allow-all", ALLOW_ALL)
    cl1 = f.cl1.engine
    dst = {EXPORT_NAME: "http-echo", PEER_NAME: "cl0"}
    cl1.set("priv-deny", policy("deny", dst=dst, privileged=True))
    cl1.set("priv-allow", policy("allow", dst=dst, privileged=True))
    cl1.set("reg-deny", policy("deny", dst=dst))
    cl1.set("reg-allow", policy("allow", dst=dst))

    # 1. privileged deny has the highest priority
    ok, egress, _ = f.connect()
    assert not ok and egress == Decision(False, "deny", "priv-deny", True)
    # 2. privileged allow next
    assert cl1.remove("priv-deny")
    ok, egress, ingress = f.connect()
    assert ok and egress == Decision(True, "allow", "priv-allow", True)
    assert ingress == Decision(True, "allow", "allow-all", False)
    # 3. regular deny next
    assert cl1.remove("priv-allow")
    ok, egress, _ = f.connect()
    assert not ok and egress == Decision(False, "deny", "reg-deny", False)
    # 4. regular allow next
    assert cl1.remove("reg-deny")
    _expect(f, True, "reg-allow", "allow-all")
    # 5. default deny
    assert cl1.remove("reg-allow")
    ok, egress, _ = f.connect()
    assert not ok and egress is DEFAULT_DENY


def test_privileged_allow_beats_regular_deny_at_ingress() -> None:
    """HEAD TestPeerLabels steps 1-2: privileged allow overrides a regular deny."""
    f = Fabric()
    f.cl1.engine.set("allow-all", ALLOW_ALL)
    cl0 = f.cl0.engine
    cl0.set("allow-all", ALLOW_ALL)
    cl0.set("deny-s1", policy("deny", src={peer_label("site"): "s1"}))
    _expect(f, False, "allow-all", "deny-s1")
    cl0.set("priv-allow-ip", policy("allow", privileged=True, cidrs=["10.1.0.0/16"]))
    _expect(f, True, "allow-all", "priv-allow-ip")
    f.client_ip = "10.2.0.5"
    _expect(f, False, "allow-all", "deny-s1")
