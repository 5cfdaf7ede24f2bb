"""The live fabric page in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``,
driven by Selenium), against three real gateways on loopback.

cl0 serves the page on its metrics listener. cl1 is a forward peer exporting ``http-echo``
(imported by cl0); cl2 is outbound-only towards cl0 (``dial: false``: it opens reverse links)
and exports ``blocked``, which cl0 imports but its egress policy ``no-blocked`` denies; cl1
imports cl0's ``private``, which cl0's ingress policy ``no-private`` denies. The page must draw
the three sites and both edges (forward and reverse), count the import's and the export's
connections after traffic, list both refusals with the policy that decided each, and turn
cl1's edge unreachable when cl1 stops -- without a reload.

Without chromium, chromedriver or selenium the browser test is skipped, except in CI (``CI``
set), where it fails. ``CLUSTERLINK_FABRIC_SCREENSHOT=path.png`` saves a screenshot
(``docs/images/fabric-page.png`` is made this way).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.fabric import Fabric
from support.gateway import free_port
from support.traffic import get

DEADLINE = 45.0  # generous: a busy machine
POLL_MS = 300  # the page's poll interval in this test (?interval=)


def deny_export(name: str, export: str) -> dict[str, Any]:
    """A policy denying every connection to ``export`` (on either side)."""
    to = [{"matchLabels": {"export.clusterlink.net/name": export}}]
    return {"name": name, "spec": {"action": "deny", "from": [{}], "to": to}}


def metrics_config(**extra: Any) -> dict[str, Any]:
    return {"metrics": {"address": "127.0.0.1", "port": free_port(), **extra}}


def request(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the fabric page test must run in CI: {why} (make deps installs it)")
    pytest.skip(why)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium driven through Debian's chromedriver; nothing is downloaded."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (requirements/dev.txt)")
    binary = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        _unavailable("Debian packages chromium and chromium-driver are not installed")
    options = Options()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1200,1080",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver, log_output=str(tmp_path / "chromedriver.log"))
    drv = webdriver.Chrome(options=options, service=service)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def wait_until(
    what: str, check: Callable[[], Any], timeout: float = DEADLINE, state: Callable[[], Any] = str
) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` and ``state()``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # a stale element while the page redraws
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; page state: {state()}")
        time.sleep(0.1)


PAGE_STATE = """
const pick = (sel, attrs) => Array.from(document.querySelectorAll(sel)).map(
  (e) => Object.fromEntries(attrs.map((a) => [a, e.getAttribute(a)])));
return {
  status: document.getElementById("status").textContent,
  updates: document.body.dataset.updates || "0",
  marker: window.__fabricTestMarker || null,
  nodes: pick("#graph g.node", ["data-node", "data-role", "data-reachable"]),
  edges: pick("#graph line.edge",
    ["data-peer", "data-reachable", "data-via", "data-links", "data-rtt-ms"]),
  labels: Array.from(document.querySelectorAll("#graph g.edge-label")).map(
    (g) => [g.getAttribute("data-peer"), g.textContent]),
  imports: pick("#imports tbody tr[data-import]",
    ["data-import", "data-active", "data-connections", "data-failures"]),
  exports: pick("#exports tbody tr[data-export]",
    ["data-export", "data-active", "data-connections"]),
  refusals: pick("#refusals tbody tr[data-side]",
    ["data-side", "data-peer", "data-reason", "data-policy"]),
  resources: performance.getEntriesByType("resource").map((r) => r.name),
};
"""


def test_fabric_page_draws_the_fabric_and_follows_it(fabric: Fabric, browser: Any) -> None:
    started = time.monotonic()
    cl0 = fabric.start("cl0", extra=metrics_config())
    port = cl0.config["metrics"]["port"]
    c0 = fabric.client("cl0")
    # cl1: a forward peer exporting http-echo, imported by cl0
    fabric.export_echo("cl1")
    fabric.allow_all("cl0", "cl1")
    fabric.add_peer("cl0", "cl1")
    c0.create("imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl1"}]}})
    # ... and cl1 imports cl0's own http-echo export as "cl0-echo"
    fabric.export_echo("cl0")
    source = {"peer": "cl0", "export": "http-echo"}
    fabric.client("cl1").create("imports", {"name": "cl0-echo", "spec": {"sources": [source]}})
    # ... and cl0's export "private", which cl1 imports but cl0's ingress policy denies
    fabric.export_echo("cl0", "private")
    c0.create("policies", deny_export("no-private", "private"))
    fabric.client("cl1").create(
        "imports", {"name": "private", "spec": {"sources": [{"peer": "cl0"}]}}
    )
    # cl2: outbound-only towards cl0 (reverse links); its export "blocked" is denied at cl0
    fabric.start("cl2")
    c0.create("peers", {"name": "cl2", "spec": {"dial": False}})
    fabric.add_peer("cl2", "cl0", mutual=False)
    fabric.export_echo("cl2", "blocked")
    fabric.allow_all("cl2")
    c0.create("policies", deny_export("no-blocked", "blocked"))
    c0.create("imports", {"name": "blocked", "spec": {"sources": [{"peer": "cl2"}]}})
    echo_port = fabric.import_port("cl0", "http-echo")
    blocked_port = fabric.import_port("cl0", "blocked")
    cl0_echo_port = fabric.import_port("cl1", "cl0-echo")
    private_port = fabric.import_port("cl1", "private")

    # the JSON the page polls: read-only, no backend address of an export
    status, headers, body = request(port, "/fabric.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["gateway"]["name"] == "cl0"
    assert {p["name"] for p in doc["peers"]} == {"cl1", "cl2"}
    assert str(fabric.echo_port("cl1")) not in json.dumps(doc["exports"])

    browser.get(f"http://127.0.0.1:{port}/fabric?interval={POLL_MS}")

    def state() -> dict[str, Any]:
        return browser.execute_script(PAGE_STATE)

    def edge(peer: str) -> dict[str, str]:
        return next((e for e in state()["edges"] if e["data-peer"] == peer), {})

    # three sites, cl0 in the middle; a reachable forward edge to cl1, a reverse one to cl2
    wait_until(
        "three nodes",
        lambda: (
            sorted((n["data-node"], n["data-role"]) for n in state()["nodes"])
            == [("cl0", "self"), ("cl1", "peer"), ("cl2", "peer")]
        ),
        state=state,
    )
    wait_until(
        "cl1 reachable over a forward link",
        lambda: (
            edge("cl1").get("data-reachable") == "true"
            and edge("cl1").get("data-via") == "direct"
            and int(edge("cl1").get("data-links") or 0) >= 1
            and edge("cl1").get("data-rtt-ms")
        ),
        state=state,
    )
    wait_until(
        "cl2 reachable over reverse links",
        lambda: (
            edge("cl2").get("data-reachable") == "true"
            and edge("cl2").get("data-via") == "reverse"
            and int(edge("cl2").get("data-links") or 0) >= 1
        ),
        state=state,
    )
    assert len(state()["edges"]) == 2
    browser.execute_script("window.__fabricTestMarker = 'no reload';")

    # traffic: three connections carried, one refused by cl0's egress policy
    assert [get(echo_port) for _ in range(3)] == ["cl1"] * 3
    assert get(blocked_port) == "reset"
    assert [get(cl0_echo_port) for _ in range(2)] == ["cl0"] * 2
    assert get(private_port) == "reset"

    def row(name: str) -> dict[str, str]:
        return next((r for r in state()["imports"] if r["data-import"] == name), {})

    wait_until(
        "http-echo's three connections",
        lambda: (
            row("http-echo").get("data-connections") == "3"
            and row("http-echo").get("data-active") == "0"
        ),
        state=state,
    )
    text = browser.find_element("css selector", 'tr[data-import="http-echo"] td.connections').text
    assert text == "3"
    wait_until(
        "the export's two connections from cl1",
        lambda: (
            {"data-export": "http-echo", "data-active": "0", "data-connections": "2"}
            in state()["exports"]
        ),
        state=state,
    )
    wait_until(
        "the refusal with its policy",
        lambda: (
            {
                "data-side": "egress",
                "data-peer": "cl2",
                "data-reason": "denied",
                "data-policy": "no-blocked",
            }
            in state()["refusals"]
        ),
        state=state,
    )
    wait_until(
        "the ingress refusal with its policy",
        lambda: (
            {
                "data-side": "ingress",
                "data-peer": "cl1",
                "data-reason": "denied",
                "data-policy": "no-private",
            }
            in state()["refusals"]
        ),
        state=state,
    )
    if shot := os.environ.get("CLUSTERLINK_FABRIC_SCREENSHOT"):
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(shot)

    # cl1 stops: its edge turns unreachable on the same page (no reload), cl2's stays up
    updates = int(state()["updates"])
    fabric["cl1"].stop()
    wait_until(
        "cl1's edge unreachable", lambda: edge("cl1").get("data-reachable") == "false", state=state
    )
    now = state()
    assert dict(now["labels"])["cl1"].startswith("unreachable")
    assert edge("cl2")["data-reachable"] == "true"
    assert now["marker"] == "no reload" and int(now["updates"]) > updates
    # everything the page loaded came from the gateway itself (no CDN; works offline)
    origin = f"http://127.0.0.1:{port}/"
    assert now["resources"] and all(r.startswith(origin) for r in now["resources"])
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors
    print(f"\nfabric page test: {time.monotonic() - started:.1f} s")


def test_fabric_page_assets_and_switch(fabric: Fabric) -> None:
    """The page's files come from the installed package with a strict CSP; with
    ``metrics.fabric_page: false`` only ``/metrics`` is served."""
    on = fabric.start("cl0", extra=metrics_config())
    port = on.config["metrics"]["port"]
    for path, kind in (
        ("/fabric", "text/html"),
        ("/fabric/app.js", "text/javascript"),
        ("/fabric/style.css", "text/css"),
        ("/fabric.json", "application/json"),
    ):
        status, headers, _ = request(port, path)
        assert status == 200 and headers["content-type"].startswith(kind), path
        assert "default-src 'none'" in headers["content-security-policy"]
    assert request(port, "/")[0] == 404
    assert request(port, "/fabric/")[0] == 404
    off = fabric.start("cl1", extra=metrics_config(fabric_page=False))
    port = off.config["metrics"]["port"]
    assert request(port, "/metrics")[0] == 200
    for path in ("/fabric", "/fabric.json", "/fabric/app.js"):
        assert request(port, path)[0] == 404, path


def test_fabric_json_counts_every_worker(fabric: Fabric) -> None:
    """With ``workers: 2`` the import's connections and the refusals on the page are those of
    both processes (over the telemetry channel); peers are the main process's, as it says."""
    cl0 = fabric.start("cl0", extra={"workers": 2, **metrics_config()})
    port = cl0.config["metrics"]["port"]
    import_port = fabric.link_service("cl1", "cl0", "http-echo", fabric.echo_port("cl1"))
    worker = re.compile(r'clusterlink_import_connections_total\{[^}]*worker="1"[^}]*\} ([0-9.]+)')
    made, deadline = 0, time.monotonic() + DEADLINE
    while True:  # SO_REUSEPORT spreads clients: go on until the worker carried some
        for _ in range(10):
            made += 1
            assert get(import_port) == "cl1"
        found = worker.search(request(port, "/metrics")[2].decode())
        if found and float(found.group(1)) > 0:
            break
        assert time.monotonic() < deadline, "no connection reached the worker"

    def page() -> dict[str, Any]:
        return json.loads(request(port, "/fabric.json")[2])

    doc = wait_until(
        f"{made} connections on the page",
        lambda: (
            (d := page())["imports"][0]["connections"] == made
            and d["imports"][0]["active"] == 0
            and d
        ),
        state=page,
    )
    assert doc["processes"]["answered"] == ["0", "1"] and doc["processes"]["scope"]

    # Denied from now on: each process records the refusals of the clients it took.
    fabric.client("cl0").create("policies", deny_export("no-echo", "http-echo"))

    def refused_by() -> set[str]:
        for _ in range(10):
            get(import_port)
        doc = page()
        return {r["worker"] for r in doc["refusals"] if r["import_name"] == "http-echo"}

    wait_until("refusals from both processes", lambda: refused_by() == {"0", "1"}, state=page)
    doc = page()
    assert doc["refusals_total"] >= len(doc["refusals"]) >= 2
    times = [r["time"] for r in doc["refusals"]]
    assert times == sorted(times, reverse=True)  # one list, newest first
