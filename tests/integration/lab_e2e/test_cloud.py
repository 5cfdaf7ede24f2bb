# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two sites behind NAT (the lab's cloud topology): peering over the advertised addresses.

Sites s1 (host a) and s2 (host b) have private addresses; only TCP to the peer port on a
site's public address is DNATed to its host, and traffic between the private networks is
dropped. The inventory (written by the lab) maps each host's public address to
``clusterlink_advertise_address``; site.yml must peer over it. A client on a reaches b's web
server through the gateways, and the Peer objects name the public addresses.

Run: ``.venv/bin/python -m pytest -m lab tests/integration/lab_e2e/test_cloud.py`` (root).
"""

from __future__ import annotations

import secrets

import pytest

from tests.lab import Lab

from .support import Fabric, can_run, no_failures

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not can_run(), reason="lab tests need root and the lab's packages"),
    pytest.mark.timeout(900),
]


def test_cloud_sites_peer_over_public_addresses(tmp_path):
    lab = Lab(f"cld-{secrets.token_hex(3)}")
    try:
        lab.create(hosts=["a", "b"], topology="cloud", sites={"a": "s1", "b": "s2"})
        st = lab.status()
        public = {h: st["hosts"][h]["public_address"] for h in ("a", "b")}
        private = {h: st["hosts"][h]["address"] for h in ("a", "b")}
        assert public["a"] != private["a"] and public["b"] != private["b"]
        # Without the gateways, a cannot reach b at all (private networks do not route).
        direct = lab.run("a", f"curl -sS -m 3 http://{private['b']}:8080/", timeout=30)
        assert direct.returncode != 0

        fab = Fabric(lab, tmp_path, f"cld-{secrets.token_hex(3)}")
        fab.group_vars.update(
            clusterlink_peer_labels={"env": "lab"},
            clusterlink_policies=[
                {
                    "name": "allow-lab-sites",
                    "action": "allow",
                    "from": [{"matchLabels": {"peer.clusterlink.net/labels.env": "lab"}}],
                }
            ],
        )
        fab.host_vars["b"] = {"clusterlink_exports": [{"name": "web", "port": 8080}]}
        fab.host_vars["a"] = {
            "clusterlink_imports": [{"name": "web", "port": 8080, "sources": [{"peer": "s2"}]}]
        }
        recap, _ = fab.playbook("site")
        assert set(recap) == {"a", "b"} and no_failures(recap), recap

        token = secrets.token_hex(6)
        fab.start_web("b", token)
        fab.wait("a -> s2 through the NAT", lambda: fab.get("a", 8080) == token, 60)

        for host, other, site in (("a", "b", "s2"), ("b", "a", "s1")):
            peers = fab.peers(host)
            assert set(peers) == {site}, peers
            gateways = peers[site]["spec"]["gateways"]
            assert gateways == [{"host": public[other], "port": 443}], gateways
            fab.wait(f"{host} sees {site} reachable", lambda h=host, s=site: fab.reachable(h)[s])
    finally:
        lab.destroy()
