"""Relayed paths, the pure parts: gateway.yaml's relay section, Peer spec.via, the relay
decision (enabled, policies deny-by-default and deny-beats-allow, per-source bound, loops)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from clusterlink_gateway.config import Config
from clusterlink_gateway.dataplane.relaying import relay_rule
from clusterlink_gateway.model.errors import format_validation_error
from clusterlink_gateway.model.objects import Peer
from clusterlink_gateway.peering.relayrule import (
    DENIED,
    DISABLED,
    LOOP,
    OK,
    OVER_LIMIT,
    via_refusal,
)
from clusterlink_gateway.policy.attributes import PEER_LABEL_PREFIX, PEER_NAME

NAME = "peer.clusterlink.net/name"


def sel(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels} if labels else {}


def config(**relay: Any) -> Config:
    return Config.model_validate({"peer_name": "hub", "relay": relay})


def attrs(name: str, **labels: str) -> dict[str, str]:
    out = {PEER_LABEL_PREFIX + k: v for k, v in labels.items()}
    out[PEER_NAME] = name
    return out


def decide(cfg: Config, source: str = "s1", dest: str = "s2", **kw: Any) -> Any:
    args: dict[str, Any] = {
        "local": "hub",
        "source": source,
        "destination": dest,
        "source_attrs": attrs(source, tier="spoke"),
        "destination_attrs": attrs(dest, tier="spoke"),
        "active": 0,
        "arrived_relayed": False,
    }
    args.update(kw)
    return relay_rule(cfg.relay).decide(**args)


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as err:
        Config.model_validate({"peer_name": "hub", "relay": data})
    return format_validation_error(err.value)


def test_relay_is_off_by_default_and_denies_without_policies() -> None:
    assert Config.model_validate({"peer_name": "hub"}).relay.enabled is False
    assert decide(config()).result == DISABLED
    verdict = decide(config(enabled=True))
    assert verdict.result == DENIED and "no relay policy" in verdict.detail


def test_an_allow_policy_over_peer_names_and_labels() -> None:
    allow = {"name": "spokes", "action": "allow", "from": [sel(**{NAME: "s1"})], "to": [sel()]}
    cfg = config(enabled=True, policies=[allow])
    verdict = decide(cfg)
    assert verdict.result == OK and verdict.policy == "spokes"
    assert decide(cfg, source="s3").result == DENIED  # not named by the source selector
    by_label = {
        "name": "tier",
        "action": "allow",
        "from": [sel(**{PEER_LABEL_PREFIX + "tier": "spoke"})],
        "to": [sel(**{PEER_LABEL_PREFIX + "tier": "spoke"})],
    }
    assert decide(config(enabled=True, policies=[by_label]), source="s3").allowed


def test_a_deny_beats_an_allow_whatever_the_order() -> None:
    allow = {"name": "any", "action": "allow", "from": [sel()], "to": [sel()]}
    deny = {"name": "no", "action": "deny", "from": [sel(**{NAME: "s1"})], "to": [sel()]}
    for policies in ([allow, deny], [deny, allow]):
        verdict = decide(config(enabled=True, policies=policies))
        assert verdict.result == DENIED and verdict.policy == "no", verdict
    assert decide(config(enabled=True, policies=[allow, deny]), source="s3").allowed


def test_streams_per_source_are_bounded() -> None:
    allow = {"name": "any", "action": "allow", "from": [sel()], "to": [sel()]}
    cfg = config(enabled=True, max_streams_per_source=2, policies=[allow])
    assert decide(cfg, active=1).allowed
    assert decide(cfg, active=2).result == OVER_LIMIT


def test_loops_are_refused() -> None:
    allow = {"name": "any", "action": "allow", "from": [sel()], "to": [sel()]}
    cfg = config(enabled=True, policies=[allow])
    assert decide(cfg, arrived_relayed=True).result == LOOP  # never relayed twice
    assert decide(cfg, dest="hub").result == LOOP
    assert decide(cfg, dest="s1").result == LOOP
    assert via_refusal("a", "b", ["a"]) is not None  # A via B via A, seen from A
    assert via_refusal("a", "b", ["c"]) is None


def test_config_errors_name_the_field() -> None:
    bad_to = {"name": "p", "action": "allow", "from": [sel()], "to": [{"bogus": {}}]}
    assert error_of({"policies": [bad_to]}) == "relay.policies[0].to[0].bogus: unknown field"
    assert "relay.max_streams_per_source" in error_of({"max_streams_per_source": 0})
    assert "action" in error_of({"policies": [{"name": "p", "action": "maybe", "from": [sel()]}]})
    dup = {"name": "p", "action": "allow", "from": [sel()], "to": [sel()]}
    assert "duplicate relay policy name" in error_of({"policies": [dup, dup]})
    assert "relay.policies" in error_of({"policies": [{**dup, "from": []}]})


def test_peer_via_names_at_most_eight_distinct_other_peers() -> None:
    ok = Peer.model_validate({"name": "s2", "spec": {"dial": False, "via": ["hub-a", "hub-b"]}})
    assert ok.spec.via == ["hub-a", "hub-b"]
    assert Peer.model_validate({"name": "s2", "spec": {"dial": False}}).spec.via == []
    for via, why in (
        (["s2"], "cannot be its own relay"),
        (["hub-a", "hub-a"], "named twice"),
        ([f"h{i}" for i in range(9)], "at most 8"),
        (["Not_A_Name"], "via"),
    ):
        with pytest.raises(ValidationError) as err:
            Peer.model_validate({"name": "s2", "spec": {"dial": False, "via": via}})
        assert why in str(err.value), err.value
