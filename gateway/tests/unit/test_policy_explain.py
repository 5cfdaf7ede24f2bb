"""Explanations of policy decisions (``policy.explain``), this gateway's checks for
``gwctl explain`` (``dataplane.explain``) and the peer request behind it."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterlink_gateway.dataplane.attempt import ConnectionAttempt
from clusterlink_gateway.dataplane.explain import (
    Explainer,
    remote_answer,
    verdict,
)
from clusterlink_gateway.dataplane.request import RequestError, parse_explain
from clusterlink_gateway.metrics import Metrics
from clusterlink_gateway.model.objects import KINDS, Policy
from clusterlink_gateway.model.selector import PolicySpec
from clusterlink_gateway.policy.attributes import CLIENT_IP, EXPORT_NAME, PEER_NAME
from clusterlink_gateway.policy.engine import PolicyEngine
from clusterlink_gateway.policy.explain import (
    MAX_REMOTE_SELECTOR,
    MAX_REMOTE_TEXT,
    explain,
    remote_decision,
)
from clusterlink_gateway.registry import NotFound, Registry
from clusterlink_gateway.store.sqlite import Store


def spec(action: str, frm: list | None = None, to: list | None = None, **kw: Any) -> PolicySpec:
    return PolicySpec.model_validate(
        {"action": action, "from": frm or [{}], "to": to or [{}], **kw}
    )


# --- policy.explain -----------------------------------------------------------------------


def test_the_deciding_policy_its_tier_and_the_first_matching_elements() -> None:
    engine = PolicyEngine()
    engine.set("allow-all", spec("allow"))
    engine.set(
        "no-west",
        spec(
            "deny",
            [{"matchLabels": {PEER_NAME: "east"}}, {"matchLabels": {PEER_NAME: "west"}}, {}],
            [
                {"matchExpressions": [{"key": EXPORT_NAME, "operator": "In", "values": ["x"]}]},
                {"matchExpressions": [{"key": EXPORT_NAME, "operator": "Exists"}]},
            ],
            privileged=True,
        ),
    )
    why = explain(engine, {PEER_NAME: "west"}, {EXPORT_NAME: "db"})
    assert why.decision == engine.decide({PEER_NAME: "west"}, {EXPORT_NAME: "db"})
    doc = why.document()
    assert (doc["allowed"], doc["action"], doc["tier"], doc["policy"]) == (
        False,
        "deny",
        "privileged",
        "no-west",
    )
    # from[1] is the first element that matches (from[2] would too); to[1], not to[0]
    assert doc["selector"] == {
        "from[1]": {"matchLabels": {PEER_NAME: "west"}},
        "to[1]": {"matchExpressions": [{"key": EXPORT_NAME, "operator": "Exists"}]},
    }
    assert doc["summary"] == "deny by privileged policy no-west"
    assert doc["outranked"] == [{"policy": "allow-all", "action": "allow", "tier": "regular"}]
    assert why.log_fields() == {
        "decision": "deny by privileged policy no-west",
        "policy": "no-west",
        "tier": "privileged",
        "selector": doc["selector"],
    }


def test_the_default_deny_has_no_policy_and_no_selector() -> None:
    engine = PolicyEngine()
    engine.set("only-east", spec("allow", [{"matchLabels": {PEER_NAME: "east"}}]))
    why = explain(engine, {PEER_NAME: "west"}, {})
    assert not why.allowed and why.tier == "default"
    assert why.document()["policy"] is None and why.document()["selector"] is None
    assert why.document()["outranked"] == []
    assert why.log_fields() == {
        "decision": "deny by <default deny>",
        "policy": "<default deny>",
        "tier": "default",
        "selector": None,
    }


def test_client_cidrs_need_the_client_address() -> None:
    engine = PolicyEngine()
    engine.set("allow-all", spec("allow"))
    engine.set("no-far", spec("deny", [{"clientCIDRs": ["10.0.0.0/8"]}]))
    unknown = explain(engine, {}, {})
    assert unknown.decision.policy == "allow-all" and not unknown.client_ip_known
    assert unknown.cidrs_skipped  # a policy has clientCIDRs: an address might change it
    far = explain(engine, {}, {}, "10.1.2.3")
    assert far.decision.policy == "no-far" and far.client_ip_known and not far.cidrs_skipped
    assert far.document()["selector"]["from[0]"] == {"clientCIDRs": ["10.0.0.0/8"]}
    mapped = explain(engine, {}, {}, ipaddress.ip_address("::ffff:10.0.0.1"))
    assert mapped.decision.policy == "no-far"
    engine.remove("no-far")
    assert not explain(engine, {}, {}).cidrs_skipped


KEYS = st.sampled_from([PEER_NAME, EXPORT_NAME, "k"])
VALUES = st.sampled_from(["a", "b"])
SELECTORS = st.one_of(
    st.builds(lambda k, v: {"matchLabels": {k: v}}, KEYS, VALUES),
    st.builds(
        lambda k, op: {"matchExpressions": [{"key": k, "operator": op}]},
        KEYS,
        st.sampled_from(["Exists", "DoesNotExist"]),
    ),
    st.just({}),
)
SOURCES = st.one_of(SELECTORS, st.just({"clientCIDRs": ["10.0.0.0/8"]}))
POLICIES = st.lists(
    st.tuples(
        st.sampled_from(["p", "q", "r", "s"]),
        st.sampled_from(["allow", "deny"]),
        st.booleans(),
        st.lists(SOURCES, min_size=1, max_size=3),
        st.lists(SELECTORS, min_size=1, max_size=3),
    ),
    max_size=6,
)
ATTRS = st.dictionaries(KEYS, VALUES, max_size=3)


@settings(max_examples=300, deadline=None)
@given(POLICIES, ATTRS, ATTRS, st.sampled_from([None, "10.1.1.1", "192.0.2.1"]))
def test_explain_agrees_with_decide(
    policies: list, src: dict[str, str], dst: dict[str, str], ip: str | None
) -> None:
    engine = PolicyEngine()
    for name, action, privileged, frm, to in policies:
        engine.set(name, spec(action, frm, to, privileged=privileged))
    why = explain(engine, src, dst, ip)
    assert why.decision == engine.decide(src, dst, ip)
    if why.decision.policy is None:
        assert why.source is None and why.outranked == ()
        return
    chosen = engine.get(why.decision.policy)
    assert chosen is not None and why.source is not None and why.destination is not None
    client = ipaddress.ip_address(ip) if ip else None
    # the reported elements are the first that match, as written in the policy
    matching_from = [i for i, s in enumerate(chosen.from_) if s.matches(src, client)]
    matching_to = [i for i, s in enumerate(chosen.to) if s.matches(dst)]
    assert why.source.index == matching_from[0] and why.destination.index == matching_to[0]
    assert why.source.selector == chosen.from_[why.source.index].model_dump(
        by_alias=True, exclude_defaults=True
    )
    # every other matching policy is listed as outranked, none twice, the decider never
    others = {o.policy for o in why.outranked}
    assert len(others) == len(why.outranked) and why.decision.policy not in others


def test_a_peers_decision_is_checked_and_bounded() -> None:
    assert remote_decision("deny") is None
    assert remote_decision({"policy": "x", "tier": "supreme"}) is None  # unknown tier
    long = remote_decision(
        {
            "policy": "p" * 5000,
            "tier": "regular",
            "allowed": "yes",  # wrong type: dropped
            "selector": {"from[0]": {"matchLabels": {"k": "v" * MAX_REMOTE_SELECTOR}}},
            "outranked": [{"policy": "o" * 5000, "action": 1, "tier": "regular"}] * 100,
            "evil": "dropped",
        }
    )
    assert long is not None
    assert len(long["policy"]) == MAX_REMOTE_TEXT and "allowed" not in long
    assert "selector" not in long and "evil" not in long  # an oversized selector is dropped
    assert len(long["outranked"]) == 16 and len(long["outranked"][0]["policy"]) == MAX_REMOTE_TEXT
    default = remote_decision({"tier": "default", "allowed": False, "selector": None})
    assert default == {"tier": "default", "allowed": False, "policy": None}


# --- the refusal log fields of a relayed connection ----------------------------------------


def test_a_denied_attempt_names_policy_tier_and_selectors() -> None:
    engine = PolicyEngine()
    engine.set("allow-all", spec("allow"))
    engine.set("no-db", spec("deny", to=[{"matchLabels": {EXPORT_NAME: "db"}}]))
    attempt = ConnectionAttempt("egress", engine, Metrics())
    assert attempt.decide({}, {EXPORT_NAME: "web"}, None).allowed
    assert attempt.explanation is None  # the allowed path does no extra work
    assert not attempt.decide({}, {EXPORT_NAME: "db"}, None).allowed
    assert attempt.refusal_fields() == {
        "decision": "deny by policy no-db",
        "policy": "no-db",
        "tier": "regular",
        "selector": {"from[0]": {}, "to[0]": {"matchLabels": {EXPORT_NAME: "db"}}},
    }


# --- the peer request -----------------------------------------------------------------------


def test_the_peer_request_names_an_export_never_an_identity() -> None:
    asked = parse_explain(
        {"x-clusterlink-export": "db", "x-clusterlink-client-ip": "::ffff:1.2.3.4"}
    )
    assert (asked.export, asked.client_ip) == ("db", "1.2.3.4")
    with pytest.raises(RequestError) as spoofed:
        parse_explain({"x-clusterlink-export": "db", "x-clusterlink-peer-name": "other"})
    assert spoofed.value.status == 403 and spoofed.value.reason == "spoofed-identity"
    for bad in (
        {},
        {"x-clusterlink-export": "Not_A_Name"},
        {"x-clusterlink-export": "db", "x-clusterlink-client-ip": "x"},
    ):
        with pytest.raises(RequestError) as refused:
            parse_explain(bad)
        assert refused.value.status == 400


# --- this gateway's checks (dataplane.explain) ----------------------------------------------


@pytest_asyncio.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    reg = Registry(Store(tmp_path / "state.db"), import_bind="127.0.0.1", port_range=(47100, 47199))
    await reg.store.open()
    yield reg
    await reg.store.close()


class Site:
    """A registry and policy engine kept in step, like the data plane's, and an Explainer."""

    def __init__(self, registry: Registry, ask: Any = None, fabric: bool | None = True) -> None:
        self.registry = registry
        self.engine = PolicyEngine()
        self.asked: list[tuple[str, dict[str, str]]] = []
        self.explainer = Explainer(
            registry,
            self.engine,
            {"peer_name": "west", "labels": {"zone": "a"}},
            peer_labels=lambda name: {"learned": name},
            admits=lambda name: name in registry.objects["peers"],
            fabric_of=lambda name: fabric,
            ask=ask,
        )

    async def add(self, plural: str, body: dict[str, Any]) -> None:
        entry = await self.registry.create(KINDS[plural], body)
        if plural == "policies":
            assert isinstance(entry.obj, Policy)
            self.engine.set(entry.name, entry.obj.spec)


def policy(name: str, action: str, frm: list | None = None, to: list | None = None, **kw: Any):
    return {"name": name, "spec": {"action": action, "from": frm or [{}], "to": to or [{}], **kw}}


PEER = {
    "name": "east",
    "labels": {"tier": "gold"},
    "spec": {"gateways": [{"host": "h", "port": 1}]},
}


@pytest.mark.asyncio
async def test_egress_checks_one_per_import_taking_the_export(registry: Registry) -> None:
    site = Site(registry)
    await site.add("peers", PEER)
    await site.add("policies", policy("allow-all", "allow"))
    await site.add(
        "policies",
        policy(
            "no-prod", "deny", to=[{"matchLabels": {"export.clusterlink.net/labels.env": "prod"}}]
        ),
    )
    none = site.explainer.egress("east", "db", None)
    assert [c["import"] for c in none] == [None]
    assert "no import takes db from east" in none[0]["note"]
    assert none[0]["allowed"] is True
    await site.add(
        "imports",
        {"name": "db", "labels": {"env": "prod"}, "spec": {"sources": [{"peer": "east"}]}},
    )
    await site.add(
        "imports", {"name": "db-test", "spec": {"sources": [{"peer": "east", "export": "db"}]}}
    )
    await site.add("imports", {"name": "other", "spec": {"sources": [{"peer": "east"}]}})
    checks = site.explainer.egress("east", "db", "10.0.0.1")
    assert [(c["import"], c["allowed"], c["decision"]["policy"]) for c in checks] == [
        ("db", False, "no-prod"),
        ("db-test", True, "allow-all"),
    ]
    dst = checks[0]["attributes"]["destination"]
    assert dst[PEER_NAME] == "east" and dst["peer.clusterlink.net/labels.learned"] == "east"
    assert checks[0]["attributes"]["source"][CLIENT_IP] == "10.0.0.1"
    assert verdict([*checks, {"side": "ingress", "allowed": True}]) is True  # one import may
    (stranger,) = site.explainer.egress("nobody", "db", None)
    assert (stranger["allowed"], stranger["decided_by"]) == (False, "not-a-peer")


@pytest.mark.asyncio
async def test_ingress_checks_as_a_connect_would_get_them(registry: Registry) -> None:
    site = Site(registry)
    await site.add("peers", PEER)
    await site.add(
        "policies",
        policy(
            "gold-only", "allow", [{"matchLabels": {"peer.clusterlink.net/labels.tier": "gold"}}]
        ),
    )
    await site.add("policies", policy("no-far", "deny", [{"clientCIDRs": ["10.0.0.0/8"]}]))
    unknown = site.explainer.ingress("east", "db", None, True)
    assert (unknown["allowed"], unknown["decided_by"]) == (False, "unknown-export")
    await site.add("exports", {"name": "db", "spec": {"port": 5432}})
    ok = site.explainer.ingress("east", "db", None, True)
    assert (ok["allowed"], ok["decision"]["policy"]) == (True, "gold-only")
    # labels from our own Peer object, never from the caller
    assert ok["attributes"]["source"]["peer.clusterlink.net/labels.tier"] == "gold"
    far = site.explainer.ingress("east", "db", "10.9.9.9", True)
    assert (far["allowed"], far["decision"]["policy"], far["client_ip"]) == (
        False,
        "no-far",
        "10.9.9.9",
    )
    # a peer outside the fabric CA: its asserted address is not used (client_attributes unset)
    foreign = site.explainer.ingress("east", "db", "10.9.9.9", False)
    assert (
        foreign["allowed"] is True and foreign["client_ip"] is None and "ignored" in foreign["note"]
    )
    stranger = site.explainer.ingress("nobody", "db", None, True)
    assert stranger["decided_by"] == "not-a-peer"
    await registry.replace(
        KINDS["exports"], "db", {"name": "db", "spec": {"port": 5432, "allowed_peers": ["north"]}}
    )
    refused = site.explainer.ingress("east", "db", None, True)
    assert (refused["allowed"], refused["decided_by"], refused["decision"]) == (
        False,
        "allowed_peers",
        None,
    )


def test_a_direction_is_allowed_only_when_both_ends_allow() -> None:
    def c(side: str, allowed: bool | None) -> dict[str, Any]:
        return {"side": side, "allowed": allowed}

    assert verdict([c("egress", True), c("ingress", True)]) is True
    assert verdict([c("egress", False), c("egress", True), c("ingress", True)]) is True
    assert verdict([c("egress", False), c("ingress", None)]) is False
    assert verdict([c("egress", True), c("ingress", False)]) is False
    assert verdict([c("egress", True), c("ingress", None)]) is None


def test_a_peers_answer_is_checked() -> None:
    raw = {
        "gateway": "someone-else",
        "ingress": {"allowed": True, "decided_by": "policy", "result": "r" * 9000, "import": 7},
        "egress": [{"allowed": "maybe", "decided_by": "magic", "attributes": {"source": {"k": 1}}}],
    }
    answer = remote_answer("east", raw)
    ingress, (egress,) = answer["ingress"], answer["egress"]
    assert ingress["gateway"] == "east" and egress["gateway"] == "east"  # who we asked
    assert len(ingress["result"]) <= MAX_REMOTE_TEXT + 3 and ingress["import"] is None
    assert egress["allowed"] is None and egress["decided_by"] is None
    assert egress["attributes"]["source"] == {}
    for bad in ([], {"ingress": {}, "egress": []}, {"ingress": "x", "egress": [{}]}):
        with pytest.raises(ValueError):
            remote_answer("east", bad)


@pytest.mark.asyncio
async def test_explain_asks_the_peer_and_copes_when_it_does_not_answer(registry: Registry) -> None:
    answers: list[Any] = []

    async def ask(peer: str, headers: dict[str, str]) -> tuple[int, bytes]:
        site.asked.append((peer, headers))
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    site = Site(registry, ask=ask, fabric=None)
    await site.add("peers", PEER)
    await site.add("policies", policy("allow-all", "allow"))
    await site.add("exports", {"name": "db", "spec": {"port": 5432}})

    peer_says = {
        "gateway": "east",
        "ingress": {
            "answered": True,
            "allowed": False,
            "decided_by": "unknown-export",
            "result": "no export 'db' at east",
        },
        "egress": [
            {
                "answered": True,
                "allowed": True,
                "decided_by": "policy",
                "import": "db",
                "result": "allow",
            }
        ],
    }
    answers.append((200, json.dumps(peer_says).encode()))
    data = await site.explainer.explain("east", "db", "192.0.2.1")
    assert site.asked == [
        ("east", {"x-clusterlink-export": "db", "x-clusterlink-client-ip": "192.0.2.1"})
    ]
    # east has no export db and we import nothing: only the export direction applies
    (exp,) = data["directions"]
    assert (exp["direction"], exp["importer"], exp["exporter"], exp["allowed"]) == (
        "export",
        "east",
        "west",
        True,
    )
    ours = exp["checks"][0]
    assert ours["gateway"] == "west" and ours["side"] == "ingress"
    assert "assumed" in ours["note"]  # no link from east now: fabric CA assumed

    answers.append(OSError("connection refused"))
    (exp,) = (await site.explainer.explain("east", "db", None))["directions"]
    assert exp["allowed"] is None
    assert exp["checks"][1]["result"] == "not answered: peer unreachable: connection refused"

    answers.append((404, b"{}"))
    with pytest.raises(NotFound) as nothing:
        await site.explainer.explain("east", "web", None)
    assert nothing.value.field == "export" and "older version" in nothing.value.message

    answers.append((200, b"not json"))
    await site.add("imports", {"name": "web", "spec": {"sources": [{"peer": "east"}]}})
    (imp,) = (await site.explainer.explain("east", "web", None))["directions"]
    assert imp["direction"] == "import" and imp["checks"][0]["import"] == "web"
    assert imp["checks"][1]["result"].startswith("not answered: the peer's answer is malformed")
