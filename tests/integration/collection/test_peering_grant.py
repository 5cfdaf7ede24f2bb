# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""clusterlink.fabric.peering_grant against two real gateways with two different CAs.

Check mode predicts (changed, nothing created, a diff without the grant text), the real run
redeems, a second run changes nothing (idempotent, no dial), a used-up grant fails with its
reason and leaves nothing behind; the grant text is in no output.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.gateway import GatewayProcess
from support.pki import TestCA

from .conftest import Ansible


@pytest.fixture
def parties(tmp_path: Path):
    a = GatewayProcess(tmp_path, "site-a", TestCA(tmp_path / "pki-a", "party-a")).start()
    b = GatewayProcess(tmp_path, "site-b", TestCA(tmp_path / "pki-b", "party-b")).start()
    try:
        yield a, b
    finally:
        for gw in (a, b):
            gw.stop()


def grant(a: GatewayProcess) -> str:
    return a.client.request("POST", "/v1/grants", {"peer_name": "site-b"})["grant"]


def test_peering_grant_module(parties, ansible: Ansible) -> None:
    a, b = parties
    text = grant(a)
    task = {"clusterlink.fabric.peering_grant": {"grant": text, "socket": str(b.socket)}}
    tasks = [
        {"name": "check", **task, "check_mode": True, "diff": True},
        {"name": "redeem", **task, "diff": True},
        {"name": "again", **task},
    ]
    run = ansible.play(tasks, args=("--diff",))
    assert text not in run.output and text[len("clusterlink-grant:v1:") :][:40] not in run.output
    check = run.result("check")
    assert (check["changed"], check["operation"], check["result"]) == (
        True,
        "redeem",
        "would-redeem",
    )
    assert check["diff"]["before"] == {"peers": {"site-a": None}}
    predicted = check["diff"]["after"]["peers"]["site-a"]
    assert predicted["trust_ca_sha256"] and predicted["gateways"][0]["host"] == "127.0.0.1"
    redeemed = run.result("redeem")
    assert (redeemed["changed"], redeemed["result"], redeemed["peers"]) == (
        True,
        "accepted",
        ["site-a"],
    )
    assert redeemed["diff"]["after"]["peers"]["site-a"] == predicted
    again = run.result("again")
    assert (again["changed"], again["result"]) == (False, "already-redeemed")
    assert b.client.get("peers", "site-a")["spec"]["trust"]["ca"]
    assert a.client.get("peers", "site-b")["spec"]["trust"]["ca"]

    # used up: B forgot the peer, the grant is refused at A; nothing left behind on B
    b.client.delete("peers", "site-a")
    run = ansible.play([{"name": "used", **task, "ignore_errors": True}])
    used = run.result("used")
    assert used["failed"] and not used["changed"] and used["result"] == "used-up", used
    assert "used-up" in used["msg"]
    assert b.client.raw("GET", "/v1/peers/site-a").status == 404
    assert text not in run.output

    # not a grant: refused before any request
    run = ansible.play(
        [
            {
                "name": "bad",
                "clusterlink.fabric.peering_grant": {"grant": "nope", "socket": str(b.socket)},
                "ignore_errors": True,
            }
        ]
    )
    bad = run.result("bad")
    assert bad["failed"] and bad["result"] == "bad-request" and "not a grant" in bad["msg"]
