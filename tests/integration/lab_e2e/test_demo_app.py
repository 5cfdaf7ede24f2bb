# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The steps of ``make demo-app`` (demo/demo-app.sh), on real lab hosts, with Ansible.

One flat lab (hosts a, b, c), the inventory of the example application
(``docs/examples/bookinfo/inventory``: its group_vars and host_vars as they ship, with this
test's own fabric name and PKI directory), one ``site.yml`` run, then the example's own
playbooks: ``playbook.yml`` installs the four services as systemd units, ``policy.yml`` denies
reviews v3 to site a. Every check is a real client on a host (curl against the product page on
a, which calls ``details`` and ``reviews`` by their ``.clusterlink.internal`` names), a
gateway's fabric page JSON, or the demo's screenshot script in headless Chromium.

Run: ``.venv/bin/python -m pytest -m lab tests/integration/lab_e2e/test_demo_app.py`` (root).
Measured 2026-12-07 (2 cores shared, load ~9, image cached): 235 s, of which site.yml 198 s,
the example's playbook 16 s, the checks and the screenshot 13 s; at load 30-40 (other lab
suites beside it) 754 s, site.yml and the playbook 576 s.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter

import pytest
import yaml

from .support import REPO, UNIT, Fabric, can_run, create_lab, no_failures

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not can_run(), reason="lab tests need root and the lab's packages"),
    pytest.mark.timeout(900),
]

APP = REPO / "docs" / "examples" / "bookinfo"
SITES = ["a", "b", "c"]
N = 9  # product page requests per check: three rounds of the three reviews versions
ALL_VERSIONS = {"reviews-v1@b", "reviews-v2@b", "reviews-v3@c"}
UNITS = {
    "a": {"bookinfo-productpage", "bookinfo-ratings"},
    "b": {"bookinfo-details", "bookinfo-reviews-v1", "bookinfo-reviews-v2"},
    "c": {"bookinfo-reviews-v3"},
}
PAGE = re.compile(
    r"^productpage@a \| details: (?P<details>\S+) \| reviews: (?P<reviews>\S+)(?P<rest>.*)$"
)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    lab = create_lab(f"app-{secrets.token_hex(3)}", SITES)
    try:
        f = Fabric(lab, tmp_path_factory.mktemp("app"), f"app-{secrets.token_hex(3)}")
        inventory = APP / "inventory"
        example = yaml.safe_load(
            (inventory / "group_vars" / "clusterlink_gateways.yml").read_text()
        )
        example.pop("clusterlink_fabric_name")  # this test's own fabric (CA) and PKI directory
        f.group_vars.update(example)
        for host in SITES:
            f.host_vars[host] = yaml.safe_load(
                (inventory / "host_vars" / f"{host}.yml").read_text()
            )
        yield f
        print("\nplaybook run times:\n  " + "\n  ".join(f.timings))
    finally:
        lab.destroy()


def pages(app: Fabric) -> list[dict[str, str]]:
    """N product page requests on a (a new connection each): who answered each part."""
    out = app.sh(
        "a",
        f"for i in $(seq {N}); do curl -sS -m 20 http://127.0.0.1:9080/ || echo ERROR; done",
        timeout=N * 25 + 30,
    )
    lines = out.splitlines()
    assert len(lines) == N, out
    got = []
    for line in lines:
        m = PAGE.match(line)
        assert m, f"a product page not answered in full: {line!r}\nall:\n{out}"
        got.append(m.groupdict())
    return got


def versions(got: list[dict[str, str]]) -> set[str]:
    return {p["reviews"] for p in got}


def test_site_and_the_application_from_the_example(app):
    recap, _ = app.playbook("site")
    assert set(recap) == set(SITES) and no_failures(recap), recap
    recap, _ = app.playbook(APP / "playbook.yml")
    assert set(recap) == set(SITES) and no_failures(recap), recap
    for host, units in UNITS.items():
        active = app.sh(
            host, "systemctl list-units --plain --no-legend --state=running 'bookinfo-*'"
        )
        assert {
            line.split()[0].removesuffix(".service") for line in active.splitlines()
        } == units, active


def test_the_services_call_each_other_by_name(app):
    """The product page's imports resolve on a, the reviews' ratings import on b and c, each
    to an address of its own from 127.77.0.0/16 (bind: auto) on the service's port 9080."""

    def resolved(host: str, name: str) -> str:
        # ahosts: getaddrinfo, as the services resolve (hosts asks DNS for AAAA first)
        out = app.sh(host, f"getent ahostsv4 {name}.clusterlink.internal", check=False)
        return out.split()[0] if out else ""

    for host, names in (("a", ["details", "reviews"]), ("b", ["ratings"]), ("c", ["ratings"])):
        for name in names:
            got = app.wait(
                f"{name} in {host}'s resolver", lambda h=host, n=name: resolved(h, n), 30
            )
            assert got.startswith("127.77."), (host, name, got)
    listen = app.gwctl("a", "get imports")
    assert re.search(
        r"\breviews\s+reviews\.clusterlink\.internal\s+127\.77\.\d+\.\d+:9080\s", listen
    ), listen


def test_load_balancing_over_three_versions_on_two_sites(app):
    even = dict.fromkeys(ALL_VERSIONS, N // 3)  # round-robin: each version in turn

    def balanced() -> list[dict[str, str]]:
        got = pages(app)
        return got if Counter(p["reviews"] for p in got) == even else []

    got = app.wait("reviews v1, v2 and v3 in turn", balanced, 120, 2)
    assert {p["details"] for p in got} == {"details@b"}
    for p in got:  # v2 and v3 call ratings (on a) by name, through b's and c's imports
        if p["reviews"] != "reviews-v1@b":
            assert p["rest"].endswith("from ratings@a"), p


def test_failover_when_a_sites_gateway_stops(app):
    app.sh("c", f"systemctl stop {UNIT}")
    try:
        got = pages(app)  # every request answered: by b's versions only
        assert versions(got) == {"reviews-v1@b", "reviews-v2@b"}, got
    finally:
        app.sh("c", f"systemctl start {UNIT}")
    app.wait(
        "reviews v3 back after c's gateway started",
        lambda: versions(pages(app)) == ALL_VERSIONS,
        120,
        2,
    )


def test_a_policy_denies_one_version_to_one_site(app):
    recap, _ = app.playbook(APP / "policy.yml")
    assert recap["c"]["changed"] == 1 and no_failures(recap), recap
    got = pages(app)  # still every request answered: a's import hands them to v1 and v2
    assert versions(got) == {"reviews-v1@b", "reviews-v2@b"}, got
    # c refused a's connections with that policy: its fabric page (metrics listener) shows it
    address = app.lab.hosts["c"].address
    with urllib.request.urlopen(f"http://{address}:9469/fabric.json", timeout=15) as resp:
        doc = json.loads(resp.read())
    refusals = {(r["side"], r["peer"], r["export"], r["policy"]) for r in doc["refusals"]}
    assert ("ingress", "a", "reviews-v3", "deny-reviews-v3-to-a") in refusals, doc["refusals"]


def test_fabric_page_screenshot(app, tmp_path):
    """The demo's screenshot step: a's fabric page drawn in headless Chromium (3 sites)."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver must be installed in CI (make deps)")
        pytest.skip("chromium and chromium-driver are not installed")
    shot = tmp_path / "fabric.png"
    url = f"http://{app.lab.hosts['a'].address}:9469/fabric?interval=500"
    proc = subprocess.run(
        [sys.executable, str(REPO / "demo" / "fabric_screenshot.py"), url, str(shot), "--nodes", "3"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 sites, 2 imports, 1 exports" in proc.stdout, proc.stdout
    assert shot.stat().st_size > 10_000
