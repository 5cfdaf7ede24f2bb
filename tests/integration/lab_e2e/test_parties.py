# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two independent parties (issue [6] point 4), on real lab hosts, each through its own playbooks.

One flat lab of three hosts: ``a`` is party A's only site, ``b`` and ``b2`` party B's two. Each party has its
own controller: its own inventory (naming only its own host), its own ``HOME`` and its own PKI
directory, so ``site.yml`` makes two different fabric CAs. A's operator creates a grant with
``gwctl grant create`` on A's host; the text is copied to B's controller, whose own small
playbook redeems it with ``clusterlink.fabric.peering_grant``. Then:

* Both ways: A exports ``web`` (allowed_peers: b; A's policy allows b), B imports it from peer
  ``a`` and gets A's answer; B exports its ``web`` to A, A imports it (A's egress policy allows
  b) and gets B's; A's import of ``private``, which B does not export, is refused.
* Re-running B's redeem playbook and both ``site.yml`` changes nothing and keeps the grant Peers.
* A certificate from B's CA named ``a`` (A's own site) is refused at A's peer port
  (``wrong-anchor`` in A's journal).
* A deny policy in A's inventory refuses B's import.
* A removes one of B's sites (its Peer ``b2``): only b2's links close, b stays linked.
* A deletes its Peer ``b``: B's links close.
* The grant redeemed a second time (``used-up``, through B's playbook), an expired grant and a
  tampered one are refused with their reasons.

Run: ``.venv/bin/python -m pytest -m lab tests/integration/lab_e2e/test_parties.py`` (root).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .support import REPO, UNIT, Fabric, can_run, create_lab, no_failures

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not can_run(), reason="lab tests need root and the lab's packages"),
    pytest.mark.timeout(600),
]

IMPORT_PORT = 9000  # on b: A's web
REVERSE_PORT = 9100  # on a: B's web (B exports it to A)
HIDDEN_PORT = 9101  # on a: B's "private", which B does not export
PREFIX = "clusterlink-grant:v1:"
PEER_B = [{"matchLabels": {"peer.clusterlink.net/name": "b"}}]
WHEEL_CACHE = os.path.expanduser("~/.cache/clusterlink/wheelhouse")
parties_state: dict[str, str] = {}  # grant texts, from one test to the next
PEERING = """\
- name: Party A applies its inventory's peers, exports, imports and policies
  hosts: clusterlink_gateways
  gather_facts: false
  roles: [clusterlink.fabric.peering]
"""
REDEEM = """\
- name: Party B redeems party A's grant
  hosts: clusterlink_gateways
  gather_facts: false
  tasks:
    - name: Redeem the grant
      clusterlink.fabric.peering_grant:
        grant: "{{ lookup('ansible.builtin.file', grant_dir ~ '/' ~ inventory_hostname ~ '.txt') }}"
        endpoints: [{host: "{{ ansible_host }}", port: 443}]
"""


class Party(Fabric):
    """One party's controller: the lab's hosts, but an inventory of its own host only, and its
    own HOME (and, from Fabric, its own PKI directory and Ansible configuration)."""

    def __init__(self, lab, workdir: Path, fabric_name: str, hosts: list[str]) -> None:
        super().__init__(lab, workdir, fabric_name)
        self.members = list(hosts)
        self.host = hosts[0]
        home = workdir / "home"
        home.mkdir()
        # Wheels are public and the same for both parties: one cache (keyed by the source's
        # digest) for both controllers, outside their HOMEs, as on one CI machine.
        self.group_vars["clusterlink_gateway_wheel_cache"] = WHEEL_CACHE
        self.env["HOME"] = str(home)

    def redeem(self, grants: dict[str, str], check: bool = True) -> tuple[dict, str]:
        """Party B's own playbook, each of its sites with its own grant file from A."""
        folder = self.workdir / "grants-from-a"
        folder.mkdir(exist_ok=True)
        for site, text in grants.items():
            (folder / f"{site}.txt").write_text(text + "\n")
        playbook = self.workdir / "redeem.yml"
        playbook.write_text(REDEEM)
        return self.playbook(playbook, "-e", f"grant_dir={folder}", check=check)


def both(*calls):
    """Run the two parties' playbooks at the same time (two controllers, two teams)."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


@pytest.fixture(scope="module")
def parties(tmp_path_factory):
    lab = create_lab(f"grant-{secrets.token_hex(3)}", ["a", "b", "b2"])
    try:
        root = tmp_path_factory.mktemp("parties")
        a = Party(lab, root / "party-a", "party-a", ["a"])
        b = Party(lab, root / "party-b", "party-b", ["b", "b2"])
        source = str(REPO / "gateway")
        a.group_vars.update(
            clusterlink_gateway_source=source,
            clusterlink_exports=[{"name": "web", "port": 8080, "allowed_peers": ["b"]}],
            clusterlink_imports=[
                {
                    "name": "b-web",
                    "port": REVERSE_PORT,
                    "sources": [{"peer": "b", "export": "web"}],
                },
                {
                    "name": "b-private",
                    "port": HIDDEN_PORT,
                    "sources": [{"peer": "b", "export": "private"}],
                },
            ],
            clusterlink_policies=[
                {"name": "allow-b", "action": "allow", "from": PEER_B},
                {"name": "allow-to-b", "action": "allow", "to": PEER_B},  # A's egress to B
            ],
        )
        b.group_vars.update(
            clusterlink_gateway_source=source,
            clusterlink_exports=[{"name": "web", "port": 8080, "allowed_peers": ["a"]}],
            clusterlink_imports=[
                {"name": "a-web", "port": IMPORT_PORT, "sources": [{"peer": "a", "export": "web"}]}
            ],
            clusterlink_policies=[{"name": "allow-all", "action": "allow"}],
        )
        yield a, b
        print("\nplaybook run times:\n  " + "\n  ".join(a.timings + b.timings))
    finally:
        lab.destroy()


def grant(a: Party, *args: str, peer: str = "b") -> str:
    """``gwctl grant create`` on A's host, as A's operator would: the grant text."""
    address = a.lab.status()["hosts"]["a"]["address"]
    out = a.gwctl("a", f"grant create --peer-name {peer} --endpoint {address}:443 {' '.join(args)}")
    (text,) = [line for line in out.splitlines() if line.startswith(PREFIX)]
    return text


def extended(text: str) -> str:
    """The grant with its expiry moved a day later, its signature kept (a tampered copy)."""
    body, _, signature = text[len(PREFIX) :].partition(".")
    doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    doc["expires"] += 86400
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + signature


def journal(fab: Party, since: str = "") -> str:
    return fab.sh(fab.host, f"journalctl -u {UNIT} --no-pager -o cat {since}", check=False)


def test_each_party_deploys_its_own_fabric(parties):
    a, b = parties
    runs = both(lambda: a.playbook("site"), lambda: b.playbook("site"))
    for (recap, _), party in zip(runs, (a, b), strict=True):
        assert set(recap) == set(party.members) and no_failures(recap), recap
    hosts = a.lab.status()["hosts"]
    for party, others in ((a, ("b", "b2")), (b, ("a",))):  # no inventory names the other's
        inventory = (party.inventory / "hosts.yml").read_text()
        for other in others:
            assert hosts[other]["address"] not in inventory and f'"{other}"' not in inventory
    ca_a, ca_b = (p.pki_dir / "ca.crt" for p in (a, b))
    assert ca_a.read_bytes() != ca_b.read_bytes()  # two fabric CAs, on two controllers
    assert "b" not in a.peers("a") and "a" not in b.peers("b")  # no peering before the grant
    a.start_web("a", "a")
    b.start_web("b", "b")


def test_b_redeems_a_grant_with_its_own_playbook(parties):
    a, b = parties
    parties_state["grant"] = grant(a, "--uses", "1")
    parties_state["grant-b2"] = grant(a, "--uses", "1", peer="b2")
    parties_state["short"] = grant(a, "--uses", "1", "--expires", "1s")
    grants = {"b": parties_state["grant"], "b2": parties_state["grant-b2"]}
    recap, out = b.redeem(grants)
    assert recap["b"]["changed"] == 1 and recap["b2"]["changed"] == 1, out[-3000:]
    assert no_failures(recap) and parties_state["grant"] not in out, out[-3000:]
    assert {"b", "b2"} <= set(a.peers("a")) and "a" in b.peers("b2")
    at_a, at_b = a.peers("a")["b"], b.peers("b")["a"]
    assert at_a["labels"]["clusterlink.io/grant"] == at_b["labels"]["clusterlink.io/grant"]
    assert at_a["spec"]["trust"]["ca"].strip() == (b.pki_dir / "ca.crt").read_text().strip()
    assert at_b["spec"]["trust"]["ca"].strip() == (a.pki_dir / "ca.crt").read_text().strip()
    recap, out = b.redeem(grants)  # idempotent: already redeemed
    assert no_failures(recap) and all(r["changed"] == 0 for r in recap.values()), out[-3000:]
    listed = json.loads(a.gwctl("a", "-o json grant list"))
    assert {g["state"] for g in listed if g["uses_left"] == 0} == {"used-up"}, listed


def test_traffic_only_where_both_allow(parties):
    a, b = parties
    got = b.wait("b -> a's web", lambda: b.get("b", IMPORT_PORT) == "a", 60)
    assert got
    assert a.wait("a -> b's web", lambda: a.get("a", REVERSE_PORT) == "b", 60)
    refused = a.get("a", HIDDEN_PORT)  # B does not export "private": no answer
    assert refused.startswith("ERR") or not refused, refused


def test_rerun_changes_nothing_and_keeps_the_grant_peers(parties):
    a, b = parties
    (ra, _), (rb, _) = both(lambda: a.playbook("site"), lambda: b.playbook("site"))
    assert ra["a"]["changed"] == 0 and no_failures(ra), ra
    assert all(r["changed"] == 0 for r in rb.values()) and no_failures(rb), rb
    assert {"b", "b2"} <= set(a.peers("a")) and "a" in b.peers("b") and "a" in b.peers("b2")
    assert b.get("b", IMPORT_PORT) == "a"


def test_b_ca_cannot_speak_for_a_site(parties):
    """A leaf from B's CA (B's controller's key) with A's own site name, at A's peer port."""
    a, b = parties
    ca_cert = x509.load_pem_x509_certificate((b.pki_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((b.pki_dir / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    b.lab.run("b", "umask 077; cat > /root/forged.pem", input=pem.decode(), timeout=30)
    address = a.lab.status()["hosts"]["a"]["address"]
    probe = (
        "import socket, ssl\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
        "ctx.check_hostname = False\n"
        "ctx.verify_mode = ssl.CERT_NONE\n"
        "ctx.load_cert_chain('/root/forged.pem')\n"
        "ctx.set_alpn_protocols(['h2'])\n"
        "try:\n"
        f"    s = ctx.wrap_socket(socket.create_connection(('{address}', 443), 10), server_hostname='a')\n"
        "    s.settimeout(10)\n"
        "    s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n' + bytes(9))\n"
        "    print('READ', s.recv(100))\n"
        "except Exception as e:\n"
        "    print('ERR', type(e).__name__, e)\n"
    )
    since = f"--since=@{int(time.time()) - 2}"
    out = b.lab.run("b", "python3 -", input=probe, timeout=60).stdout
    assert out.startswith(("ERR", "READ b''")), out
    assert a.wait(
        "wrong-anchor in A's journal",
        lambda: "wrong-anchor" in journal(a, since),
        30,
    )


def test_a_deny_policy_refuses_b(parties):
    a, b = parties
    a.group_vars["clusterlink_policies"] = [
        {"name": "allow-b", "action": "allow", "from": PEER_B},
        {"name": "deny-b", "action": "deny", "from": PEER_B},
    ]
    playbook = a.workdir / "peering.yml"
    playbook.write_text(PEERING)
    recap, _ = a.playbook(playbook)
    assert recap["a"]["changed"] > 0 and no_failures(recap), recap
    assert b.wait("b's import refused", lambda: b.get("b", IMPORT_PORT) != "a", 30)


def test_a_removes_one_of_b_sites_and_only_its_links_close(parties):
    a, b = parties
    assert b.wait("b2 reaches a", lambda: b.reachable("b2").get("a") is True, 60)
    assert b.reachable("b").get("a") is True
    a.gwctl("a", "delete peer b2")
    assert b.wait("b2's links to a closed", lambda: b.reachable("b2").get("a") is False, 60)
    assert b.reachable("b").get("a") is True and a.reachable("a").get("b") is True
    assert "b2" not in a.peers("a") and b.reachable("b").get("b2") is True  # B's own mesh


def test_a_removes_b_trust_and_b_links_close(parties):
    a, b = parties
    assert b.reachable("b").get("a") is True
    a.gwctl("a", "delete peer b")
    assert b.wait("b's links to a closed", lambda: b.reachable("b").get("a") is False, 60)
    assert b.get("b", IMPORT_PORT) != "a"


def test_refused_grants(parties):
    """B no longer holds A's Peers (or the redemption would be a no-op already-redeemed)."""
    _, b = parties
    b.gwctl("b", "delete peer a")
    recap, out = b.redeem(
        {"b": parties_state["grant"], "b2": parties_state["grant-b2"]}, check=False
    )
    assert recap["b"]["failed"] == 1 and "used-up" in out, out[-3000:]
    assert recap["b2"]["failed"] == 0, out[-3000:]  # b2 still holds Peer a: already redeemed
    assert parties_state["grant"] not in out
    cases = {"expired": parties_state["short"], "tampered": extended(parties_state["short"])}
    time.sleep(1.5)
    for reason, text in cases.items():
        b.lab.run("b", "cat > /root/grant.txt", input=text + "\n", timeout=30)
        proc = b.lab.run("b", "gwctl grant redeem /root/grant.txt", timeout=60)
        assert proc.returncode != 0 and f"grant refused ({reason})" in proc.stdout + proc.stderr, (
            reason,
            proc,
        )
    assert "a" not in b.peers("b")
