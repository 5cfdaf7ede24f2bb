# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cloud inventories (inventories/cloud) without a cloud: graph, variables, strictness.

Approach. No cloud API is reachable here, and the cloud plugins cannot run without one:
amazon.aws.aws_ec2 (11.x) needs boto3 and queries the regions' availability zones on every
parse even when its cache holds the instances, and both collections come from Galaxy, which
this project's machines do not reach. So each test builds an equivalent inventory with
Ansible's ``ansible.builtin.constructed`` plugin: the ``compose``, ``keyed_groups``,
``groups`` and ``strict`` of the SHIPPED file (read from inventories/cloud/*.yml, not copied)
over recorded host variables in the shape each cloud plugin gives them
(cloud_hosts/ec2.yml, cloud_hosts/gce.yml), next to a copy of the shipped group_vars. The
cloud plugins evaluate those options with the same ansible-core code (the ``Constructable``
helpers ``_set_composite_vars`` and ``_add_host_to_keyed_groups``, with the same group-name
sanitising), so a broken expression in a shipped file breaks these tests: a variant with a
typo in the compose or in a keyed group must fail the same checks (tested below). What is not
covered: the plugins' API queries, filters and host naming (the recorded hosts are what the
filters return, named as ``hostnames`` names them).

Checked with the real ``ansible-inventory --graph`` and ``--list``, and with the real
peering role: its preflight (``clusterlink_advertise_address_required``, set by the cloud
group_vars) must stop the first play of site.yml, naming the VM without a public IP, even
under ``--limit``; without that VM the peers it would configure name only public addresses.
Nothing connects to the recorded addresses: only controller-side tasks run (assert,
set_fact, debug), with ``ansible_connection=local`` forced on top.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import RENDER_PEERS_PLAY, REPO, Ansible, Run

CLOUD = REPO / "inventories" / "cloud"
RECORDED = Path(__file__).resolve().parent / "cloud_hosts"
BIN = Path(sys.executable).parent

# What the shipped inventories must make of the recorded hosts, worked out by hand from the
# tags/labels and addresses in cloud_hosts/.
EXPECTED: dict[str, dict[str, Any]] = {
    "aws_ec2": {
        "recorded": "ec2.yml",
        "groups": {
            "clusterlink_gateways": {"gw-dublin-1", "gw-dublin-2", "gw-edge-1", "gw-virginia-1"},
            "clusterlink_site_dublin": {"gw-dublin-1", "gw-dublin-2"},
            # tag clusterlink-site=Edge-1: the dash becomes _, the case stays
            "clusterlink_site_Edge_1": {"gw-edge-1"},
            "clusterlink_site_virginia": {"gw-virginia-1"},
        },
        "hosts": {
            "gw-dublin-1": {
                "clusterlink_advertise_address": "203.0.113.10",
                "ansible_host": "172.31.5.11",
                "clusterlink_peer_name": "dublin",
                "clusterlink_peer_labels": {"cloud": "aws", "region": "eu-west-1", "env": "prod"},
            },
            "gw-dublin-2": {
                "clusterlink_advertise_address": "203.0.113.11",
                "ansible_host": "172.31.21.12",
                "clusterlink_peer_name": "dublin",
                "clusterlink_peer_labels": {"cloud": "aws", "region": "eu-west-1", "env": "prod"},
            },
            "gw-edge-1": {
                "clusterlink_advertise_address": "198.51.100.20",
                "ansible_host": "10.40.1.20",
                "clusterlink_peer_name": "edge-1",
                "clusterlink_peer_labels": {"cloud": "aws", "region": "us-east-1", "env": "prod"},
            },
            "gw-virginia-1": {
                "clusterlink_advertise_address": None,  # no public IP
                "ansible_host": "10.40.2.30",
                "clusterlink_peer_name": "virginia",
                "clusterlink_peer_labels": {"cloud": "aws", "region": "us-east-1"},
            },
        },
        "private": "gw-virginia-1",
        "dashed_group": "clusterlink_site_Edge_1",
        "dashed_host": "gw-edge-1",
    },
    "gcp_compute": {
        "recorded": "gce.yml",
        "groups": {
            "clusterlink_gateways": {"gw-belgium-1", "gw-edge-1", "gw-iowa-1"},
            "clusterlink_site_belgium": {"gw-belgium-1"},
            # label clusterlink-site=edge-1 (GCE labels are lower case)
            "clusterlink_site_edge_1": {"gw-edge-1"},
            "clusterlink_site_iowa": {"gw-iowa-1"},
        },
        "hosts": {
            "gw-belgium-1": {
                "clusterlink_advertise_address": "192.0.2.30",
                "ansible_host": "10.132.0.2",
                "clusterlink_peer_name": "belgium",
                "clusterlink_peer_labels": {
                    "cloud": "gcp",
                    "zone": "europe-west1-b",
                    "env": "prod",
                },
            },
            "gw-edge-1": {
                "clusterlink_advertise_address": "192.0.2.31",
                "ansible_host": "10.128.0.7",
                "clusterlink_peer_name": "edge-1",
                "clusterlink_peer_labels": {"cloud": "gcp", "zone": "us-central1-a"},
            },
            "gw-iowa-1": {
                "clusterlink_advertise_address": None,  # no external IP
                "ansible_host": "10.128.0.9",
                "clusterlink_peer_name": "iowa",
                "clusterlink_peer_labels": {"cloud": "gcp", "zone": "us-central1-a", "env": "prod"},
            },
        },
        "private": "gw-iowa-1",
        "dashed_group": "clusterlink_site_edge_1",
        "dashed_host": "gw-edge-1",
    },
}
PLUGINS = {"aws_ec2": "amazon.aws.aws_ec2", "gcp_compute": "google.cloud.gcp_compute"}
CONSTRUCTED_OPTIONS = ("compose", "keyed_groups", "groups", "strict", "leading_separator")

# A per-site group_vars file, named as the docs say for a site tag with a dash/upper case.
SITE_EXPORT = {"name": "orders-db", "host": "127.0.0.1", "port": 5432}


def shipped(name: str) -> dict[str, Any]:
    config = yaml.safe_load((CLOUD / f"{name}.yml").read_text())
    assert config["plugin"] == PLUGINS[name]
    return config


def build_inventory(
    directory: Path,
    name: str,
    config: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    hostvars_filter: Any = None,
) -> Path:
    """An inventory directory: recorded hosts, then constructed with the file's options."""
    config = shipped(name) if config is None else config
    hosts = yaml.safe_load((RECORDED / EXPECTED[name]["recorded"]).read_text())
    hosts = {h: v for h, v in hosts.items() if h not in drop}
    if hostvars_filter is not None:
        hosts = {h: hostvars_filter(v) for h, v in hosts.items()}
    directory.mkdir(parents=True)
    (directory / "00-recorded.json").write_text(json.dumps({"all": {"hosts": hosts}}))
    constructed = {"plugin": "ansible.builtin.constructed"}
    constructed.update({k: config[k] for k in CONSTRUCTED_OPTIONS if k in config})
    (directory / "10-constructed.yml").write_text(yaml.safe_dump(constructed))
    shutil.copytree(CLOUD / "group_vars", directory / "group_vars")
    site_file = directory / "group_vars" / f"{EXPECTED[name]['dashed_group']}.yml"
    site_file.write_text(yaml.safe_dump({"clusterlink_exports": [SITE_EXPORT]}))
    return directory


def inventory_cli(inventory: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_HOME=str(inventory.parent / ".ansible"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(inventory), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def plain(value: Any) -> Any:
    """``ansible-inventory --list`` JSON without its ``{"__ansible_unsafe": ...}`` wrappers."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def parse_graph(text: str) -> dict[str, set[str]]:
    """``ansible-inventory --graph`` output as {group: hosts directly in it}."""
    groups: dict[str, set[str]] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        stripped = line.lstrip(" |-")
        depth = len(line) - len(stripped)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stripped.startswith("@"):
            group = stripped[1:].rstrip(":")
            groups.setdefault(group, set())
            stack.append((depth, group))
        elif stripped and stack:
            groups[stack[-1][1]].add(stripped)
    return groups


def problems(name: str, inventory: Path) -> list[str]:
    """Differences between what the inventory renders and EXPECTED (empty: all good)."""
    expected = EXPECTED[name]
    found: list[str] = []
    graph = parse_graph(inventory_cli(inventory, "--graph"))
    for group, hosts in expected["groups"].items():
        if graph.get(group) != hosts:
            found.append(f"group {group}: {sorted(graph.get(group, ()))} != {sorted(hosts)}")
    every = plain(json.loads(inventory_cli(inventory, "--list"))["_meta"]["hostvars"])
    for host, wanted in expected["hosts"].items():
        hostvars = every.get(host, {})
        for var, value in wanted.items():
            if hostvars.get(var) != value:
                found.append(f"{host} {var}: {hostvars.get(var)!r} != {value!r}")
        if hostvars.get("clusterlink_advertise_address_required") is not True:
            found.append(f"{host}: clusterlink_advertise_address_required is not true")
        in_site_group = host == expected["dashed_host"]
        if (hostvars.get("clusterlink_exports") == [SITE_EXPORT]) != in_site_group:
            found.append(f"{host}: group_vars/{expected['dashed_group']}.yml not applied right")
    return found


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_inventory_graph_and_variables(name: str, tmp_path: Path) -> None:
    """ansible-inventory --graph/--list: groups (one from a dashed tag) and rendered vars."""
    started = time.monotonic()
    assert problems(name, build_inventory(tmp_path / "inventory", name)) == []
    print(f"{name}: graph and variables checked in {time.monotonic() - started:.1f}s")


def test_ec2_inventory_without_ec2_tags(tmp_path: Path) -> None:
    """amazon.aws before 11.2 gives only ``tags`` (no ``ec2_tags``): the same inventory."""

    def older(hostvars: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in hostvars.items() if k != "ec2_tags"}

    inventory = build_inventory(tmp_path / "inventory", "aws_ec2", hostvars_filter=older)
    assert problems("aws_ec2", inventory) == []


def _break(config: dict[str, Any], section: str, old: str, new: str) -> dict[str, Any]:
    broken = copy.deepcopy(config)
    text = yaml.safe_dump(broken[section])
    assert old in text, (section, old)
    broken[section] = yaml.safe_load(text.replace(old, new, 1))
    return broken


BROKEN = [
    ("aws_ec2", "compose", "public_ip_address", "public_ip_adress"),
    ("aws_ec2", "keyed_groups", "clusterlink-site", "clusterlink_site"),
    ("aws_ec2", "compose", "placement.region", "placement.regoin"),
    ("gcp_compute", "compose", "accessConfigs[0].natIP", "accessConfigs[0].natIp"),
    ("gcp_compute", "keyed_groups", "clusterlink-role", "clusterlink-roles"),
]


@pytest.mark.parametrize(("name", "section", "old", "new"), BROKEN)
def test_a_typo_in_the_shipped_rules_is_caught(
    name: str, section: str, old: str, new: str, tmp_path: Path
) -> None:
    """The same checks fail on a variant of the shipped file with one typo."""
    broken = _break(shipped(name), section, old, new)
    assert problems(name, build_inventory(tmp_path / "inventory", name, broken)) != []


def _first_play_of_site() -> list[dict[str, Any]]:
    """site.yml's first play (read-only checks, any_errors_fatal), then a sentinel play."""
    plays = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    first = plays[0]
    assert first["any_errors_fatal"] is True
    assert first["tasks"][0]["ansible.builtin.import_role"] == {
        "name": "clusterlink.fabric.peering",
        "tasks_from": "preflight",
    }
    sentinel = {
        "name": "Sentinel",
        "hosts": "clusterlink_gateways",
        "gather_facts": False,
        "tasks": [{"name": "Reached", "ansible.builtin.debug": {"msg": "past the preflight"}}],
    }
    return [first, sentinel]


# Only controller-side tasks run; a forced local connection and no become keep it so.
LOCAL = ("-e", "ansible_connection=local", "-e", "ansible_become=false")


def _play(ansible: Ansible, plays: list[dict[str, Any]], inventory: Path, *args: str) -> Run:
    run = ansible.play(plays, inventory=inventory, args=(*LOCAL, *args))
    print(f"ansible-playbook {' '.join(args)}: {run.seconds:.1f}s")
    return run


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("limit", [None, "dashed_host"])
def test_vm_without_public_ip_stops_site_before_any_change(
    name: str, limit: str | None, ansible: Ansible, tmp_path: Path
) -> None:
    """site.yml's first play fails on the VM without a public IP, naming it and the fix.

    With --limit to another host too: that host's peers would otherwise carry the VM's
    private address.
    """
    inventory = build_inventory(tmp_path / "inventory", name)
    args = ("--limit", EXPECTED[name][limit]) if limit else ()
    run = _play(ansible, _first_play_of_site(), inventory, *args)
    output = run.output
    assert run.returncode != 0, output
    assert not any(task["name"] == "Reached" for task in run.tasks), output
    check = next(t for t in run.tasks if t["name"].endswith("advertise address of its own"))
    failed = [r for r in check["hosts"].values() if r.get("failed")]
    assert failed, output
    message = failed[0]["msg"]
    assert f"No public address to advertise for {EXPECTED[name]['private']}:" in message
    assert "public IP" in message
    assert "clusterlink_advertise_address" in message
    others = set(EXPECTED[name]["hosts"]) - {EXPECTED[name]["private"]}
    assert not any(f"for {host}" in message for host in others), message


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_public_vms_pass_and_peer_over_public_addresses(
    name: str, ansible: Ansible, tmp_path: Path
) -> None:
    """Without the private VM the preflight passes; the peers name only public IPs.

    ``__clusterlink_peering_peers`` is what the peering role writes to each gateway (its
    vars/main.yml, exposed to the play by import_role).
    """
    expected = EXPECTED[name]
    inventory = build_inventory(tmp_path / "inventory", name, drop=(expected["private"],))
    play = RENDER_PEERS_PLAY
    run = _play(ansible, [play], inventory)
    assert run.returncode == 0, run.output
    rendered = next(t for t in run.tasks if t["name"] == "Rendered peers")["hosts"]
    public = {
        h: v["clusterlink_advertise_address"]
        for h, v in expected["hosts"].items()
        if h != expected["private"]
    }
    assert set(rendered) == set(public)
    for host, result in rendered.items():
        endpoints = {
            g["host"] for peer in result["__clusterlink_peering_peers"] for g in peer["gateways"]
        }
        own = expected["hosts"][host]["clusterlink_peer_name"]
        wanted = {public[h] for h in public if expected["hosts"][h]["clusterlink_peer_name"] != own}
        assert endpoints == wanted, (host, endpoints)
