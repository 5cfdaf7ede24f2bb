# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Upstream's end-to-end scenarios (clusterlink.md section 9), on real lab hosts, with Ansible.

One flat lab (hosts a, b, c, d); the fabric starts with the sites a, b and c (d joins later).
The module deploys once with site.yml and walks through the scenarios in file order; every
change goes through the inventory (written by the test) and a playbook, and every check is a
real client on a host (curl or a Python socket client) or gwctl. Each site runs a web server
on 127.0.0.1:8080 answering its own name, exported as ``web``. Site a peers with a, b and c
(a self-peer, as upstream's load-balancing tests) and imports:

* ``conn`` (port 9000) from b;
* ``lb-rr`` / ``lb-static`` / ``lb-random`` (9001-9003) from a, b, c in that order;
* ``fo`` (9004) from b and c (failover);
* ``web`` from b with ``bind: auto`` on the service's own port 8080 (an address of its own
  from 127.77.0.0/16), reached by name: ``http://web.clusterlink.internal:8080/``.

Site c imports b's ``web`` twice with allocated ports (``early``, then ``bk``), so that ``bk``
does not hold the first port of the range: the backup test removes ``early``, rebuilds c and
restores it from a backup, where a fresh allocation would move ``bk`` to the first port.

site.yml from bare hosts and rotate_certificates.yml run with ``-vvv --diff``: neither output
may hold a private-key marker or any line of the real keys (the gateways', the CA's).

Run: ``.venv/bin/python -m pytest -m lab tests/integration/lab_e2e/test_scenarios.py`` (root).
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .support import (
    REPO,
    UNIT,
    ClientLoop,
    Fabric,
    assert_no_private_key,
    can_run,
    create_lab,
    no_failures,
)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not can_run(), reason="lab tests need root and the lab's packages"),
    pytest.mark.timeout(900),
]

SITES = ["a", "b", "c"]
LAB_HOSTS = ["a", "b", "c", "d"]
ALLOW_LAB = {
    "name": "allow-lab-sites",
    "action": "allow",
    "from": [{"matchLabels": {"peer.clusterlink.net/labels.env": "lab"}}],
}
WEB_EXPORT = {"name": "web", "host": "127.0.0.1", "port": 8080}


def lb_import(name: str, port: int, scheme: str) -> dict:
    return {
        "name": name,
        "port": port,
        "lb_scheme": scheme,
        "sources": [{"peer": s, "export": "web"} for s in SITES],
    }


D_IMPORTS = [
    {"name": "d-web", "port": 9006, "sources": [{"peer": "d", "export": "web"}]},
    {"name": "fo-d", "port": 9007, "sources": [{"peer": "d", "export": "web"}, {"peer": "b", "export": "web"}],
     "lb_scheme": "static"},
]  # fmt: skip
A_IMPORTS = [
    {"name": "conn", "port": 9000, "sources": [{"peer": "b", "export": "web"}]},
    lb_import("lb-rr", 9001, "round-robin"),
    lb_import("lb-static", 9002, "static"),
    lb_import("lb-random", 9003, "random"),
    {"name": "fo", "port": 9004, "sources": [{"peer": "b", "export": "web"}, {"peer": "c", "export": "web"}],
     "lb_scheme": "static"},
    {"name": "web", "bind": "auto", "port": 8080, "sources": [{"peer": "b", "export": "web"}]},
]  # fmt: skip


C_IMPORTS = [
    {"name": "early", "sources": [{"peer": "b", "export": "web"}]},  # port 0: allocated
    {"name": "bk", "sources": [{"peer": "b", "export": "web"}]},  # port 0: the next one
]


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    lab = create_lab(f"e2e-{secrets.token_hex(3)}", LAB_HOSTS)
    try:
        workdir = tmp_path_factory.mktemp("e2e")
        f = Fabric(lab, workdir, f"e2e-{secrets.token_hex(3)}")
        # A private copy of the gateway source, so upgrade.yml can roll out a new release.
        source = workdir / "gateway"
        shutil.copytree(
            REPO / "gateway",
            source,
            ignore=shutil.ignore_patterns("build", "dist", "tests", "*.egg-info", "__pycache__"),
        )
        f.group_vars.update(
            clusterlink_gateway_source=str(source),
            clusterlink_peer_labels={"env": "lab"},
            clusterlink_policies=[ALLOW_LAB],
            clusterlink_exports=[WEB_EXPORT],
            # The admin API over TCP on each host's lab address: certificates from the pki role.
            clusterlink_admin_tcp={"address": "{{ ansible_host }}"},
        )
        f.members = list(SITES)
        f.host_vars["a"] = {"clusterlink_peers": SITES, "clusterlink_imports": A_IMPORTS}
        f.host_vars["c"] = {"clusterlink_imports": C_IMPORTS}
        yield f
        print("\nplaybook run times:\n  " + "\n  ".join(f.timings))
    finally:
        lab.destroy()


def test_site_from_bare_hosts(fab):
    recap, out = fab.playbook("site", "-vvv", "--diff")
    assert set(recap) == set(SITES) and no_failures(recap), recap
    assert_no_private_key(fab, SITES, out)
    for h in SITES:
        fab.start_web(h, h)


def test_connectivity(fab):
    got = fab.wait("a -> b through import conn", lambda: fab.get("a", 9000) == "b", 60)
    assert got


def test_imports_listen_on_loopback_by_default(fab):
    """No bind in the inventory: every import listens on 127.0.0.1, not on every address."""
    listening = fab.sh("a", "ss -Htln")
    for port in (9000, 9001, 9004):
        assert re.search(rf"\s127\.0\.0\.1:{port}\s", listening), (port, listening)
        assert not re.search(rf"\s(0\.0\.0\.0|\*|\[::\]):{port}\s", listening), listening
    config = yaml.safe_load(fab.sh("a", "cat /etc/clusterlink/gateway.yaml"))
    assert config["imports"]["bind"] == "127.0.0.1", config
    imports = json.loads(fab.gwctl("c", "-o json get imports"))
    items = imports if isinstance(imports, list) else imports.get("items", [])
    assert {i["status"]["listen"].rsplit(":", 1)[0] for i in items} == {"127.0.0.1"}, items


def test_import_names_resolve_through_the_hosts_resolver(fab):
    """site.yml wired the zone into a's resolver: the lab's Debian hosts run no
    systemd-resolved, so the /etc/hosts block kept by clusterlink-names.path; a client on a
    resolves web.clusterlink.internal (getent) and reaches b's web server by name on the
    service's own port. The gateway answers the same name over DNS (A and SRV)."""
    resolved = fab.sh("a", "systemctl is-active systemd-resolved.service", check=False).strip()
    assert resolved != "active", resolved
    line = fab.wait(
        "web.clusterlink.internal in a's resolver",
        lambda: fab.sh("a", "getent hosts web.clusterlink.internal", check=False).strip(),
        30,
    )
    address, name = line.split()[:2]
    assert address.startswith("127.77.") and name == "web.clusterlink.internal", line
    got = fab.sh("a", "curl -sS -m 10 http://web.clusterlink.internal:8080/index.html").strip()
    assert got == "b", got
    assert re.search(
        rf"\bweb\s+web\.clusterlink\.internal\s+{re.escape(address)}:8080\s",
        fab.gwctl("a", "status"),
    )
    probe = (
        "import dns.message, dns.query\n"
        "for name, t in (('web.clusterlink.internal', 'A'), ('_web._tcp.clusterlink.internal', 'SRV'),"
        " ('example.com', 'A')):\n"
        "    r = dns.query.udp(dns.message.make_query(name, t), '127.0.0.1', port=8053, timeout=5)\n"
        "    print(dns.rcode.to_text(r.rcode()), *[rd.to_text() for rr in r.answer for rd in rr])\n"
    )
    out = fab.lab.run("a", "/opt/clusterlink/current/venv/bin/python -", input=probe, timeout=60)
    assert out.stdout.splitlines() == [
        f"NOERROR {address}",
        "NOERROR 0 1 8080 web.clusterlink.internal.",
        "REFUSED",
    ], out.stdout + out.stderr


def test_peer_status(fab):
    reach = fab.wait(
        "a's peers reachable",
        lambda: (r := fab.reachable("a")) == dict.fromkeys(SITES, True) and r,
        60,
    )
    assert reach == {"a": True, "b": True, "c": True}
    assert set(fab.reachable("b")) == {"a", "c"}  # the full mesh, no self-peer
    assert "ready yes" in fab.sh("b", "gwctl status")  # linked onto the PATH by the role
    recap, out = fab.playbook("status", "-e", "clusterlink_status_strict=true")
    assert no_failures(recap) and all(c["changed"] == 0 for c in recap.values()), recap
    for peer in SITES:  # the fabric table: HOST SITE READY PEER REACHABLE ...
        assert re.search(rf'"a\s+a\s+yes\s+{peer}\s+yes\s', out), out[-3000:]


def test_site_restarts_a_gateway_whose_configuration_changed(fab):
    """A setting of b changes in the inventory (its log level): site.yml --limit b rewrites
    gateway.yaml and restarts b's gateway (a new main process, the setting in effect), and b
    carries traffic again. (An import_role with a `when` in site.yml once made every handler of
    the gateway role carry it, so a changed configuration was written and never applied.)"""

    def pid() -> str:
        return fab.sh("b", f"systemctl show -p MainPID --value {UNIT}").strip()

    before = pid()
    fab.host_vars.setdefault("b", {})["clusterlink_log_level"] = "debug"
    recap, _ = fab.playbook("site", "--limit", "b")
    assert no_failures(recap) and recap["b"]["changed"] > 0, recap
    assert (
        yaml.safe_load(fab.sh("b", "cat /etc/clusterlink/gateway.yaml"))["log"]["level"] == "debug"
    )
    assert pid() != before, "gateway.yaml changed but the gateway was not restarted"
    assert fab.wait("a -> b through conn", lambda: fab.get("a", 9000) == "b", 60)


# ----- site.yml ends waiting until every peer pair is reachable (issue [3], Ansible) ---------
def test_site_fails_naming_a_pair_that_is_not_reachable(fab):
    """a also peers with "ghost", whose endpoint has nothing listening (b's address, port
    444): site.yml --limit a applies it, waits clusterlink_wait_reachable seconds and fails
    naming that pair and no other; without ghost the next run passes (and prunes it)."""
    ghost = {"name": "ghost", "gateways": [{"host": fab.lab.hosts["b"].address, "port": 444}]}
    fab.host_vars["a"]["clusterlink_peers"] = [*SITES, ghost]
    t0 = time.monotonic()
    recap, out = fab.playbook(
        "site", "--limit", "a", "-e", "clusterlink_wait_reachable=10", check=False
    )
    took_refused = time.monotonic() - t0
    assert recap["a"]["failed"] == 1, recap
    named = "Not reachable after 10 s (clusterlink_wait_reachable): a (a) -> ghost: "
    assert named in out, out[-4000:]
    assert not any(f"(a) -> {s}:" in out for s in SITES), out[-4000:]
    assert "ghost" in fab.peers("a")  # applied: the run fails after the configuration
    fab.host_vars["a"]["clusterlink_peers"] = SITES
    t0 = time.monotonic()
    recap, _ = fab.playbook("site", "--limit", "a")
    took_ok = time.monotonic() - t0
    assert no_failures(recap), recap
    assert "ghost" not in fab.peers("a")
    print(f"\nsite.yml --limit a: {took_refused:.0f}s failing on ghost (wait 10 s), "
          f"{took_ok:.0f}s passing")  # fmt: skip


# ----- admin API over TCP ---------------------------------------------------------------------
def _gwctl_tcp(fab, host: str, *tls: Path) -> subprocess.CompletedProcess:
    """``gwctl status`` from the controller to ``host``'s admin listener; ``tls``: cert, key."""
    argv = [str(Path(sys.executable).parent / "gwctl"), "--timeout", "20"]
    argv += ["--server", f"https://{fab.lab.hosts[host].address}:9443"]
    argv += ["--cacert", str(fab.pki_dir / "admin-ca.crt")]
    if tls:
        argv += ["--cert", str(tls[0]), "--key", str(tls[1])]
    return subprocess.run(
        [*argv, "status"], capture_output=True, text=True, timeout=60, check=False
    )


def test_admin_api_over_tcp_is_one_variable(fab, tmp_path):
    """clusterlink_admin_tcp={address} alone: from the controller, gwctl status and the
    modules work over TCP with the operator certificate; a gateway's fabric certificate and no
    certificate are refused."""
    operator = (fab.pki_dir / "operator.crt", fab.pki_dir / "operator.key")
    fabric = (tmp_path / "b.crt", tmp_path / "b.key")  # site b's own fabric certificate
    fabric[0].write_text(fab.sh("b", "cat /etc/clusterlink/tls/gateway.crt"))
    fabric[1].write_text(fab.sh("b", "cat /etc/clusterlink/tls/gateway.key"))
    for h in SITES:
        ok = _gwctl_tcp(fab, h, *operator)
        assert ok.returncode == 0 and "ready yes" in ok.stdout, (h, ok.stdout, ok.stderr)
        for what, tls in (("fabric certificate", fabric), ("no certificate", ())):
            refused = _gwctl_tcp(fab, h, *tls)
            assert refused.returncode != 0, (h, what, refused.stdout)
    refusals = fab.sh("a", f"journalctl -u {UNIT} --no-pager -o cat --grep 'admin request refused'")
    assert "tls-unknown-ca" in refusals and "tls-no-certificate" in refusals, refusals[-2000:]
    module = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "localhost", "-m",
         "clusterlink.fabric.gateway_info", "-a",
         json.dumps({"url": f"https://{fab.lab.hosts['a'].address}:9443", "kinds": [],
                     "client_cert": str(operator[0]), "client_key": str(operator[1]),
                     "ca_path": str(fab.pki_dir / "admin-ca.crt")})],
        capture_output=True, text=True, timeout=120, env=fab.env, check=False,
    )  # fmt: skip
    assert module.returncode == 0 and '"ready": true' in module.stdout, module.stdout[-2000:]


# ----- load balancing (upstream 9.2 #11-13) -------------------------------------------------
def test_load_balancing_all_three(fab):
    rr = fab.gets("a", 9001, 30)
    # A fresh import's round-robin counter: the i-th answer is peer (i+1) mod 3.
    assert rr == [SITES[(i + 1) % 3] for i in range(30)], rr
    assert fab.gets("a", 9002, 30) == ["a"] * 30
    assert set(fab.gets("a", 9003, 100)) == set(SITES)


def _strictly_alternating(seq: list[str], pair: set[str]) -> bool:
    return set(seq) == pair and all(x != y for x, y in itertools.pairwise(seq))


def test_load_balancing_without_a_export(fab):
    fab.host_vars["a"]["clusterlink_exports"] = []  # prune removes a's export "web"
    recap, _ = fab.playbook("site", "--limit", "a")
    assert recap["a"]["changed"] > 0, recap
    assert "web" not in fab.gwctl("a", "get exports")
    rr = fab.gets("a", 9001, 30)
    assert _strictly_alternating(rr, {"b", "c"}), rr  # upstream: peer(1 + i mod 2)
    assert fab.gets("a", 9002, 30) == ["b"] * 30
    assert set(fab.gets("a", 9003, 30)) == {"b", "c"}


def test_load_balancing_without_a_and_b_exports(fab):
    fab.host_vars["b"] = {"clusterlink_exports": []}
    recap, _ = fab.playbook("site", "--limit", "b")
    assert recap["b"]["changed"] > 0, recap
    for port in (9001, 9002, 9003):
        assert fab.gets("a", port, 30) == ["c"] * 30, port
    # Back to the full set (the exports return with the inventory).
    del fab.host_vars["b"]
    del fab.host_vars["a"]["clusterlink_exports"]
    fab.playbook("site", "--limit", "a,b")
    assert fab.gets("a", 9002, 5) == ["a"] * 5


# ----- policies: the privileged tier beats the regular one (upstream 9.2 #17) --------------
PEER_A = [{"matchLabels": {"peer.clusterlink.net/name": "a"}}]


def test_privileged_deny_beats_regular_allow(fab):
    fab.host_vars["b"] = {
        "clusterlink_policies": [
            ALLOW_LAB,
            {"name": "priv-deny-a", "action": "deny", "privileged": True, "from": PEER_A},
        ]
    }
    fab.playbook("site", "--limit", "b")
    fab.denied("a", 9000)


def test_privileged_allow_beats_regular_deny(fab):
    fab.host_vars["b"] = {
        "clusterlink_policies": [
            {"name": "deny-a", "action": "deny", "from": PEER_A},
            {"name": "priv-allow-a", "action": "allow", "privileged": True, "from": PEER_A},
        ]
    }
    fab.playbook("site", "--limit", "b")
    assert fab.get("a", 9000) == "b"


def test_regular_deny_beats_regular_allow(fab):
    fab.host_vars["b"] = {
        "clusterlink_policies": [ALLOW_LAB, {"name": "deny-a", "action": "deny", "from": PEER_A}]
    }
    try:
        fab.playbook("site", "--limit", "b")
        fab.denied("a", 9000)
    finally:  # b back to the inventory's policies, whatever happened (later tests need them)
        del fab.host_vars["b"]
        fab.playbook("site", "--limit", "b")
    assert "deny-a" not in fab.gwctl("b", "get policies")
    assert fab.get("a", 9000) == "b"


# ----- failover: a whole gateway host powered off ----------------------------------------------
def test_failover_when_a_gateway_host_is_powered_off(fab):
    assert fab.gets("a", 9004, 5) == ["b"] * 5  # static: b first while it is up
    t0 = time.monotonic()
    fab.lab.poweroff("b")
    results: list[tuple[float, str]] = []
    while time.monotonic() - t0 < 60:
        r = fab.reachable("a")
        if r.get("b") is False:
            break
        results += [(time.monotonic() - t0, x) for x in fab.gets("a", 9004, 1)]
    else:
        raise AssertionError("b never marked unreachable within 60 s")
    marked = time.monotonic() - t0
    # Once b is marked unreachable, new connections go to c: zero failures.
    after = fab.gets("a", 9004, 30)
    assert after == ["c"] * 30, after
    failed_before = [x for _, x in results if x != "c"]
    print(f"\nfailover: b marked unreachable after {marked:.1f}s; "
          f"{len(failed_before)} of {len(results)} requests before that did not get c: "
          f"{failed_before[:5]}")  # fmt: skip
    assert marked < 30, marked
    assert fab.get("a", 9000).startswith("ERR"), "conn has only b as source"

    failed = fab.lab.start("b")
    assert not failed, failed
    fab.start_web("b", "b")  # the web server was a transient unit
    assert fab.sh("b", "systemctl is-active clusterlink-gateway").strip() == "active"
    fab.wait("b reachable again from a", lambda: fab.reachable("a").get("b"), 90)
    fab.wait("traffic to b again", lambda: fab.get("a", 9004) == "b", 60)


# ----- partition: one site's network link down -----------------------------------------------
# Marked unreachable after heartbeat.failures_down (5) failed probes, each taking up to
# heartbeat.interval (1 s) + heartbeat.timeout (3 s).
HEARTBEAT_WINDOW = 5 * (1 + 3)


def test_partitioned_site_is_failed_over_and_comes_back(fab):
    loop = ClientLoop(fab, "a", 9004, "loop-fo").start()
    fab.wait("the loop served by b", lambda: [r for _, r in loop.results()][-3:] == ["b"] * 3)
    down = time.time()
    fab.lab.link_down("b")
    try:
        fab.wait("b marked unreachable", lambda: fab.reachable("a").get("b") is False, 60, 0.5)
        marked = time.time()
        time.sleep(5)
    finally:
        fab.lab.link_up("b")
    up = time.time()
    fab.wait("b reachable again from a", lambda: fab.reachable("a").get("b"), 90)
    back = time.time()
    fab.wait("traffic to b again", lambda: any(t > back and r == "b" for t, r in loop.results()))
    results = loop.stop()
    partitioned = [r for t, r in results if marked <= t < up]
    after = [r for t, r in results if t >= marked]
    before = [r for t, r in results if down <= t < marked]
    print(f"\npartition: b marked unreachable after {marked - down:.1f}s, reachable again "
          f"{back - up:.1f}s after link-up; before marked {len(before)} requests "
          f"({sum(r != 'c' for r in before)} not served by c); after marked "
          f"{len(after)} requests, {sum(r.startswith('ERR') for r in after)} failed")  # fmt: skip
    assert marked - down < HEARTBEAT_WINDOW + 10, marked - down
    assert partitioned and set(partitioned) == {"c"}, partitioned
    assert not [r for r in after if r not in ("b", "c")], after
    assert [r for t, r in results if t > back][-1] == "b"


# ----- certificate rotation under a long transfer ---------------------------------------------
def test_rotation_keeps_a_long_transfer(fab):
    # rotate_certificates.yml reloads the gateways one after the other (about 60 s for three
    # hosts on a quiet machine, over 190 s on a busy one). The transfer must outlast it however
    # long it takes: 256 MiB at 512 KiB/s lasts ~8 minutes; once the rotation is over and the
    # stream is seen still moving, the download is stopped and what arrived must be exactly the
    # start of the file.
    fab.sh("b", "head -c 256M /dev/urandom > /srv/web/big.bin")
    fab.sh("a", "rm -f /root/big.bin /root/dl.*; systemctl reset-failed dl 2>/dev/null; true")
    fab.sh(
        "a",
        "systemd-run -q --unit=dl sh -c 'date +%s.%N > /root/dl.start; "
        "curl -sS --limit-rate 512K -o /root/big.bin http://127.0.0.1:9000/big.bin; "
        "echo $? > /root/dl.rc'",
    )

    def received() -> int:
        return int(fab.sh("a", "stat -c %s /root/big.bin 2>/dev/null || echo 0"))

    fab.wait("the transfer to start", lambda: received() > 0, 30)
    certs = "/etc/clusterlink/tls/gateway.crt /etc/clusterlink/tls/admin.crt"
    before = {h: fab.sh(h, f"sha256sum {certs}") for h in SITES}
    operator = (fab.pki_dir / "operator.crt").read_bytes()
    recap, out = fab.playbook("rotate_certificates", "-vvv", "--diff")
    assert no_failures(recap), recap
    assert_no_private_key(fab, SITES, out)  # the new keys
    # The admin listener's certificates and the operator's are renewed too (the operator's
    # once per run), and the listener serves the new operator certificate.
    assert (fab.pki_dir / "operator.crt").read_bytes() != operator
    reloads = {}
    for h in SITES:
        after = fab.sh(h, f"sha256sum {certs}").splitlines()
        assert all(a != b for a, b in zip(after, before[h].splitlines(), strict=True)), h
        tcp = _gwctl_tcp(fab, h, fab.pki_dir / "operator.crt", fab.pki_dir / "operator.key")
        assert tcp.returncode == 0, (h, tcp.stderr)
        line = fab.sh(
            h,
            f"journalctl -u {UNIT} -o short-unix --no-pager --grep 'configuration reloaded' "
            "| tail -1",
        )
        reloads[h] = float(line.split()[0])
    # Still running, and still moving after both of its gateways (a and b) reloaded.
    assert fab.sh("a", "cat /root/dl.rc 2>/dev/null || echo running").strip() == "running"
    size = received()
    fab.wait("the transfer to move on", lambda: received() > size + 256 * 1024, 60)
    fab.sh("a", "systemctl stop dl")
    start = float(fab.sh("a", "cat /root/dl.start"))
    assert start < reloads["a"] and start < reloads["b"], (start, reloads)
    got = received()
    mine = fab.sh("a", "sha256sum /root/big.bin").split()[0]
    theirs = fab.sh("b", f"head -c {got} /srv/web/big.bin | sha256sum").split()[0]
    assert mine == theirs, f"the {got} bytes received are not the start of the file"
    fab.sh("b", "rm -f /srv/web/big.bin")
    fab.sh("a", "rm -f /root/big.bin")
    print(f"\nrotation: reloads at +{reloads['a'] - start:.0f}s (a) and "
          f"+{reloads['b'] - start:.0f}s (b) of a transfer that kept going: "
          f"{got / 2**20:.0f} MiB intact")  # fmt: skip
    assert fab.get("a", 9000) == "b"  # new connections with the new certificates


# ----- rolling upgrade with a client loop ------------------------------------------------------
def test_upgrade_rolls_through_hosts(fab):
    src = fab.workdir / "gateway" / "src" / "clusterlink_gateway" / "__init__.py"
    src.write_text(src.read_text() + f"\n# upgrade marker {secrets.token_hex(4)}\n")
    releases = {h: fab.sh(h, "readlink /opt/clusterlink/current").strip() for h in SITES}
    loop = ClientLoop(fab, "a", 9000).start()  # a -> b through the import conn
    time.sleep(3)
    t0 = time.monotonic()
    recap, _ = fab.playbook("upgrade")
    took = time.monotonic() - t0
    # Plain restarts too, exporter then importer: systemd keeps the sockets across them.
    for h in ("b", "a"):
        fab.sh(h, f"systemctl restart {UNIT}")
    time.sleep(2)
    results = loop.stop()
    failed = [(t, r) for t, r in results if r != "b"]
    print(f"\nupgrade.yml: {took:.0f}s, then restarts of b and a; client loop through a->b: "
          f"{len(results) - len(failed)} ok, {len(failed)} failed {failed[:5]}")  # fmt: skip
    assert no_failures(recap), recap
    for h in SITES:
        assert fab.sh(h, "readlink /opt/clusterlink/current").strip() != releases[h], h
        inherited = fab.sh(
            h, f"journalctl -u {UNIT} --no-pager --grep 'socket inherited' -o cat", check=False
        )
        assert re.search(r"socket inherited.*\bpeer\b", inherited), (h, inherited[-2000:])
    assert len(results) > 50
    assert not failed, failed  # no failed request: the listening sockets outlive the processes


# ----- inventory changes -------------------------------------------------------------------
def test_import_removed_from_inventory_is_gone(fab):
    fab.host_vars["a"]["clusterlink_imports"] = [i for i in A_IMPORTS if i["name"] != "conn"]
    recap, _ = fab.playbook("site")
    assert recap["a"]["changed"] > 0, recap
    assert not re.search(r"^conn\b", fab.gwctl("a", "get imports"), re.MULTILINE)
    got = fab.get("a", 9000)
    assert got.startswith("ERR 7"), got  # connection refused: nothing listens any more


def test_new_site_extends_the_mesh(fab):
    fab.members = LAB_HOSTS
    # a peers with d and imports from it too (for the decommission test): only from d, and d
    # before b.
    fab.host_vars["a"]["clusterlink_peers"] = [*SITES, "d"]
    fab.host_vars["a"]["clusterlink_imports"] = [
        *fab.host_vars["a"]["clusterlink_imports"],
        *D_IMPORTS,
    ]
    recap, _ = fab.playbook("site")
    assert no_failures(recap) and recap["d"]["changed"] > 0, recap
    for h in ("b", "c"):
        assert "d" in fab.peers(h), h
    fab.wait(
        "d reaches a, b, c",
        lambda: fab.reachable("d") == dict.fromkeys(SITES, True),
        60,
    )
    fab.start_web("d", "d")
    assert fab.wait("a -> d through d-web", lambda: fab.get("a", 9006) == "d", 60)
    assert fab.get("a", 9007) == "d"


# ----- no silent new fabric, decommission (issue "Trust that holds") -------------------------
TLS_FILES = "/etc/clusterlink/tls/*"
PROBE = """
import socket, ssl, sys
host, name, cert, key, ca = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["h2"])
try:
    s = ctx.wrap_socket(socket.create_connection((host, 443), timeout=5), server_hostname=name)
    s.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + bytes.fromhex("000000040000000000"))
    data = s.recv(65536)
    print("open" if data else "closed")
except (ssl.SSLError, ConnectionError) as e:
    print("closed", type(e).__name__)
except socket.timeout:
    print("open")
"""


def _tls_state(fab, hosts):
    """Checksums of every TLS file and the configuration, and the release, of each host."""
    return {
        h: fab.sh(h, f"sha256sum {TLS_FILES} /etc/clusterlink/gateway.yaml; "
                     "readlink /opt/clusterlink/current")
        for h in hosts
    }  # fmt: skip


def test_second_controller_cannot_re_key_the_fabric(fab, tmp_path_factory):
    """A controller with an empty home (no CA directory) runs site.yml with and without
    --limit: both fail before changing anything, naming the fabric's CA; traffic flows."""
    ca = x509.load_pem_x509_certificate((fab.pki_dir / "ca.crt").read_bytes())
    fingerprint = ca.fingerprint(hashes.SHA256()).hex(":").upper()
    # A short work directory: ssh's ControlPath socket lives under it (108-byte limit).
    laptop = tmp_path_factory.mktemp("laptop")
    other = Fabric(fab.lab, laptop, "unused")
    other.group_vars = {k: v for k, v in fab.group_vars.items() if k != "clusterlink_pki_dir"}
    other.host_vars, other.members = fab.host_vars, fab.members
    home = laptop / "home"
    home.mkdir()
    other.env["HOME"] = str(home)
    other.env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = tempfile.mkdtemp(prefix="cp-", dir="/tmp")
    before = _tls_state(fab, fab.members)
    loop = ClientLoop(fab, "a", 9004).start()  # a -> b through the import fo
    time.sleep(2)
    for args in ((), ("--limit", "b")):
        recap, out = other.playbook("site", *args, check=False)
        assert any(c["failed"] for c in recap.values()), (args, recap)
        assert all(c["changed"] == 0 for c in recap.values()), (args, recap)
        assert "Refusing to start a new fabric" in out, out[-4000:]
        assert fingerprint in out and f"CN={fab.group_vars['clusterlink_fabric_name']}" in out
        assert "clusterlink_pki_ca_cert_content" in out  # how to bring the right CA
    time.sleep(2)
    results = loop.stop()
    failed = [(t, r) for t, r in results if r != "b"]
    print(f"\nsecond controller: {other.timings}; client loop a->b: "
          f"{len(results) - len(failed)} ok, {len(failed)} failed")  # fmt: skip
    assert _tls_state(fab, fab.members) == before
    assert not list(home.rglob("ca.key")), "the second controller made a CA key"
    assert len(results) > 20 and not failed, failed


def test_decommission_revokes_and_removes_a_site(fab):
    """decommission.yml -e site=d: d's key is refused everywhere, its Peer and sources are
    gone, d's gateway is removed; idempotent, check mode clean; site.yml brings d back."""
    fab.sh("d", "cp /etc/clusterlink/tls/gateway.key /root/old.key; "
                "cp /etc/clusterlink/tls/gateway.crt /root/old.crt; "
                "cp /etc/clusterlink/tls/ca-bundle.pem /root/old-ca.pem")  # fmt: skip
    fab.lab.run("d", "cat > /root/probe.py", input=PROBE, timeout=30)
    probe = "python3 /root/probe.py {} {} /root/old.crt /root/old.key /root/old-ca.pem"
    old_serial = fab.sh("d", "openssl x509 -noout -serial -in /root/old.crt").split("=")[1].strip()
    assert fab.sh("d", probe.format("198.18.0.10", "a")).startswith("open")  # admitted today
    recap, _ = fab.playbook("decommission", "-e", "site=d")
    assert no_failures(recap), recap
    assert fab.lab.run("d", "systemctl is-active clusterlink-gateway").stdout.strip() != "active"
    assert fab.sh("d", "ls /opt/clusterlink /etc/clusterlink 2>/dev/null", check=False) == ""
    for h in SITES:
        assert "d" not in fab.peers(h), h
        crl = fab.sh(h, "openssl crl -noout -text -in /etc/clusterlink/tls/revoked.crl")
        assert old_serial in crl.replace(":", "").upper(), (h, crl)
    data = json.loads(fab.gwctl("a", "-o json get imports"))
    imports = {i["name"]: i for i in (data if isinstance(data, list) else data.get("items", []))}
    assert "d-web" not in imports, imports  # its only source was d
    assert [src["peer"] for src in imports["fo-d"]["spec"]["sources"]] == ["b"], imports
    assert fab.get("a", 9007) == "b"  # fo-d lost its source at d; b still answers
    # d's old key and certificate are refused on the peer ports of the other sites.
    for h, address in (("a", "198.18.0.10"), ("b", "198.18.0.11")):
        assert fab.sh("d", probe.format(address, h)).startswith("closed"), h
        log = fab.sh(h, f"journalctl -u {UNIT} --no-pager -o cat --grep 'reason=revoked'")
        assert old_serial.lower().lstrip("0") in log.lower(), (h, log[-2000:])
    again, _ = fab.playbook("decommission", "-e", "site=d")
    assert no_failures(again) and all(c["changed"] == 0 for c in again.values()), again
    check, _ = fab.playbook("decommission", "-e", "site=d", "--check")
    assert no_failures(check) and all(c["changed"] == 0 for c in check.values()), check
    # Re-adding d (it is still in the inventory): a new certificate, not revoked, accepted.
    recap, _ = fab.playbook("site")
    assert no_failures(recap), recap
    serial = fab.sh("d", "openssl x509 -noout -serial -in /etc/clusterlink/tls/gateway.crt")
    assert serial.split("=")[1].strip() != old_serial
    fab.start_web("d", "d")
    assert fab.wait("a -> d through d-web again", lambda: fab.get("a", 9006) == "d", 60)
    fab.wait("d reaches a, b, c", lambda: fab.reachable("d") == dict.fromkeys(SITES, True), 60)


# ----- backup, a rebuilt host restored, the peer-port preflight (issue "Your own hosts") -----
def _imports(fab, host):
    data = json.loads(fab.gwctl(host, "-o json get imports"))
    return {i["name"]: i for i in (data if isinstance(data, list) else data.get("items", []))}


def _objects(fab, host):
    """A gateway's objects (gwctl export, without its dated comment)."""
    return json.loads(fab.gwctl(host, "export -o json"))


def test_backup_then_a_rebuilt_host_is_restored_with_its_ports(fab):
    """backup.yml saves every gateway's objects (0600, no secret); c is uninstalled (its state
    lost) and, while another program holds its peer port, site.yml fails in preflight naming
    it, with nothing changed anywhere; then site.yml -e clusterlink_restore_from restores c:
    bk listens on its old port (not the first of the range, where a fresh allocation would
    put it), traffic flows, and the gateways that held objects are left as they were."""
    # early leaves (by hand and from the inventory): bk keeps the second port of the range.
    fab.host_vars["c"] = {"clusterlink_imports": [i for i in C_IMPORTS if i["name"] != "early"]}
    fab.gwctl("c", "delete import early")
    port = _imports(fab, "c")["bk"]["status"]["port"]
    first = yaml.safe_load(fab.sh("c", "cat /etc/clusterlink/gateway.yaml"))["imports"][
        "port_range"
    ][0]
    assert port != first and "early" not in _imports(fab, "c"), (port, first)
    assert fab.wait("c -> b through bk", lambda: fab.get("c", port) == "b", 60)

    backups = fab.workdir / "backups"
    t0 = time.monotonic()
    recap, _ = fab.playbook("backup", "-e", f"clusterlink_backup_dir={backups}")
    took_backup = time.monotonic() - t0
    assert no_failures(recap) and set(recap) == set(fab.members), recap
    assert oct(backups.stat().st_mode & 0o777) == "0o700"
    for h in fab.members:
        path = backups / f"{h}.yaml"
        assert oct(path.stat().st_mode & 0o777) == "0o600", h
        text = path.read_text()
        assert text.startswith(f"# gwctl export of gateway {h} "), text[:200]
        assert "PRIVATE KEY" not in text and "BEGIN" not in text, h
    saved = {d["name"]: d for d in yaml.safe_load_all((backups / "c.yaml").read_text()) if d}
    assert saved["bk"]["spec"]["port"] == port, saved
    before = _objects(fab, "b")

    # c is rebuilt: everything ClusterLink had there is gone (uninstall.yml --limit c).
    recap, _ = fab.playbook("uninstall", "--limit", "c")
    assert no_failures(recap) and set(recap) == {"c"}, recap
    # Another program on the peer port of the fresh host: refused in preflight, nowhere changed.
    fab.sh("c", "systemctl stop squat 2>/dev/null; systemctl reset-failed squat 2>/dev/null; "
                "systemd-run -q --unit=squat python3 -m http.server 443 --bind 0.0.0.0")  # fmt: skip
    fab.wait("the squatter listens", lambda: ":443 " in fab.sh("c", "ss -Htln"), 30)
    pid = fab.sh("c", "systemctl show -p MainPID --value squat").strip()
    restore = ("-e", f"clusterlink_restore_from={backups}")
    t0 = time.monotonic()
    recap, out = fab.playbook("site", *restore, check=False)
    took_refusal = time.monotonic() - t0
    assert recap["c"]["failed"] and all(c["changed"] == 0 for c in recap.values()), recap
    assert "c: TCP port 443 (clusterlink_port" in out and f"pid={pid}" in out, out[-4000:]
    assert "python3" in out and "Nothing was changed on any host" in out, out[-4000:]
    assert fab.sh("c", "ls -d /opt/clusterlink /etc/clusterlink 2>/dev/null", check=False) == ""
    assert fab.lab.run("c", "getent passwd clusterlink").returncode != 0
    fab.sh("c", "systemctl stop squat")

    # The restore: c's objects come back before the peering step; b (with objects) keeps its.
    t0 = time.monotonic()
    recap, out = fab.playbook("site", *restore, "--limit", "b,c")
    took_restore = time.monotonic() - t0
    assert no_failures(recap) and set(recap) == {"b", "c"}, recap
    assert "Restored from" in out and "import/bk" in out, out[-4000:]
    assert out.count("Not restored: the gateway holds") == 1, out[-4000:]  # b
    bk = _imports(fab, "c")["bk"]
    assert bk["status"]["port"] == port and bk["status"]["listening"], bk
    assert bk["spec"]["port"] == 0, bk  # back to the inventory's port 0, the port kept
    assert set(_imports(fab, "c")) == {"bk"}
    assert fab.wait("c -> b through bk after the restore", lambda: fab.get("c", port) == "b", 60)
    assert _objects(fab, "b") == before
    print(f"\nbackup.yml {took_backup:.0f}s; site.yml refused by the peer-port preflight in "
          f"{took_refusal:.0f}s; site.yml --limit b,c restoring c {took_restore:.0f}s; "
          f"bk kept port {port} "
          f"(range starts at {first})")  # fmt: skip


def test_uninstall_leaves_no_trace(fab):
    for h in SITES:
        fab.sh(h, "systemctl stop web-8080", check=False)
    # Without --limit: refused before any change, naming the way to say it is meant.
    recap, out = fab.playbook("uninstall", check=False)
    assert any(c["failed"] for c in recap.values()), recap
    assert all(c["changed"] == 0 for c in recap.values()), recap
    assert "clusterlink_uninstall_all=true" in out and "--limit" in out, out[-3000:]
    for host in fab.members:
        assert fab.sh(host, f"systemctl is-active {UNIT}").strip() == "active", host
    recap, _ = fab.playbook("uninstall", "-e", "clusterlink_uninstall_all=true")
    assert no_failures(recap), recap
    for host in LAB_HOSTS:
        assert fab.lab.run(host, "getent passwd clusterlink").returncode != 0
        assert fab.lab.run(host, "getent group clusterlink").returncode != 0
        left = fab.sh(
            host,
            "ls -d /opt/clusterlink /etc/clusterlink /var/lib/clusterlink /run/clusterlink "
            "/etc/systemd/system/clusterlink* /usr/local/bin/gwctl 2>/dev/null",
            check=False,
        )
        assert left.strip() == "", (host, left)
        hosts = fab.sh(host, "cat /etc/hosts 2>/dev/null", check=False)
        assert "clusterlink" not in hosts, (host, hosts)  # the import names' block is gone
        listening = fab.sh(host, "ss -Htln")
        assert not re.search(r":(443|900\d|8053)\s", listening), (host, listening)
