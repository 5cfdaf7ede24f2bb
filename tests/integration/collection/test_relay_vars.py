# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway role's relay variables, rendered for real into gateway.yaml (connection local,
no host changed) and loaded by the gateway's own config loader: no ``relay:`` section by
default; with ``clusterlink_relay: true`` the section of the interface contract
(``enabled``, ``max_streams_per_source``, ``policies``), the default policy allowing any pair."""

from __future__ import annotations

from pathlib import Path

from clusterlink_gateway.config import load_config

from .test_gateway_metrics_vars import render

ANY_PAIR = {
    "name": "any-pair",
    "action": "allow",
    "from": [{}],
    "to": [{}],
}


def test_no_relay_section_by_default(tmp_path: Path) -> None:
    config, _ = render(tmp_path)
    assert "relay" not in config
    assert load_config(tmp_path / "gateway.yaml").relay.enabled is False


def test_relay_enabled_renders_the_contract_section(tmp_path: Path) -> None:
    config, _ = render(tmp_path, clusterlink_relay=True)
    assert config["relay"] == {
        "enabled": True,
        "max_streams_per_source": 64,
        "policies": [ANY_PAIR],
    }
    relay = load_config(tmp_path / "gateway.yaml").relay
    assert relay.enabled is True and relay.max_streams_per_source == 64
    assert [p.name for p in relay.policies] == ["any-pair"]


def test_relay_policies_and_limit_from_the_inventory(tmp_path: Path) -> None:
    policies = [
        {
            "name": "no-s1-to-s2",
            "action": "deny",
            "from": [{"matchLabels": {"peer.clusterlink.net/name": "s1"}}],
            "to": [{"matchLabels": {"peer.clusterlink.net/name": "s2"}}],
        },
        ANY_PAIR,
    ]
    config, _ = render(
        tmp_path,
        clusterlink_relay=True,
        clusterlink_relay_policies=policies,
        clusterlink_relay_max_streams_per_source="8",
    )
    assert config["relay"] == {"enabled": True, "max_streams_per_source": 8, "policies": policies}
    relay = load_config(tmp_path / "gateway.yaml").relay
    assert relay.max_streams_per_source == 8
    assert [(p.name, p.action) for p in relay.policies] == [
        ("no-s1-to-s2", "deny"),
        ("any-pair", "allow"),
    ]


def test_relay_false_renders_nothing_even_with_policies(tmp_path: Path) -> None:
    config, _ = render(tmp_path, clusterlink_relay=False, clusterlink_relay_policies=[])
    assert "relay" not in config
