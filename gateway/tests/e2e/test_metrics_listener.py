"""The read-only metrics listener (``metrics:``): ``/metrics`` of every data-plane process on
its own port, nothing else; the shipped Grafana dashboard only queries metrics it exports."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.fabric import Fabric
from support.gateway import free_port
from support.pki import TestCA
from support.probes import log_records
from support.traffic import get

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "docs" / "examples" / "grafana-dashboard.json"
SCRAPE_EXAMPLE = REPO / "docs" / "examples" / "prometheus.yml"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
DEADLINE = 60.0  # generous: a busy machine


def request(
    port: int, path: str = "/metrics", method: str = "GET", context: ssl.SSLContext | None = None
) -> tuple[int, str]:
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=context)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def parse(text: str) -> tuple[dict[tuple[str, frozenset[tuple[str, str]]], float], set[str]]:
    """(samples by name and labels, sample names the exposition declares by # TYPE)."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    names: set[str] = set()
    # a counter's TYPE line names it with _total already
    suffixes = {"histogram": ("_bucket", "_sum", "_count")}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.update(name + s for s in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, line
            labels = frozenset(LABEL.findall(match.group(2) or ""))
            samples[(match.group(1), labels)] = float(match.group(3))
            names.add(match.group(1))
    return samples, names


def series(samples: dict, name: str, **labels: str) -> dict[str, float]:
    """Value per ``worker`` of the samples ``name`` with ``labels`` (and any worker)."""
    want = set(labels.items())
    return {
        dict(key)["worker"]: value
        for (sample, key), value in samples.items()
        if sample == name and want <= set(key)
    }


def children(pid: int) -> list[int]:
    """Live child processes of ``pid``."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def metrics_config(**extra: Any) -> dict[str, Any]:
    return {"metrics": {"address": "127.0.0.1", "port": free_port(), **extra}}


def test_metrics_listener_covers_every_worker_and_serves_nothing_else(fabric: Fabric) -> None:
    fabric.start("cl0", extra=metrics_config())
    cl1 = fabric.start("cl1", extra={"workers": 2, **metrics_config()})
    port = cl1.config["metrics"]["port"]
    import_port = fabric.link_service("cl0", "cl1", "http-echo", fabric.echo_port("cl0"))
    name = "clusterlink_import_connections_total"

    # SO_REUSEPORT spreads connections over the main process and the worker: keep connecting
    # until the scrape shows connections counted by both (each carried: "cl0" answered)
    made = carried = 0  # client connections made; answered through cl0
    deadline = time.monotonic() + DEADLINE
    per_worker: dict[str, float] = {}
    while time.monotonic() < deadline:
        for _ in range(10):
            made += 1
            carried += get(import_port) == "cl0"
        per_worker = series(parse(request(port)[1])[0], name, import_name="http-echo")
        if per_worker.get("0", 0) > 0 and per_worker.get("1", 0) > 0:
            break
    assert per_worker.get("0", 0) > 0 and per_worker.get("1", 0) > 0, per_worker
    assert carried > 0
    # every connection counted exactly once, by the process the kernel gave it to
    samples: dict = {}
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        samples = parse(request(port)[1])[0]
        if sum(series(samples, name, import_name="http-echo").values()) == made:
            break
        time.sleep(0.1)
    assert sum(series(samples, name, import_name="http-echo").values()) == made
    assert series(samples, "clusterlink_worker_up") == {"0": 1.0, "1": 1.0}
    # both processes hold their own links and heartbeats to cl0
    assert series(samples, "clusterlink_peer_reachable", peer="cl0") == {"0": 1.0, "1": 1.0}
    print(f"\nimport connections per process: {per_worker} of {made}")

    # the admin API's /metrics is the main process alone: worker "0" of the listener
    admin = fabric.client("cl1").raw("GET", "/metrics").body
    main_only = [
        float(line.rpartition(" ")[2])
        for line in admin.splitlines()
        if line.startswith(f'{name}{{import_name="http-echo"}}')
    ]
    assert main_only == [series(samples, name, import_name="http-echo")["0"]]

    # nothing but /metrics: no admin route, whatever the method
    for path in ("/", "/healthz", "/readyz", "/v1/status", "/v1/peers", "/v1/peers/cl0",
                 "/v1/openapi.json", "/v1/peers/cl0/offers", "/metrics/", "/metricsx"):  # fmt: skip
        assert request(port, path)[0] == 404, path
    assert request(port, "/v1/peers/cl0", "DELETE")[0] == 404
    assert request(port, "/v1/policies", "POST")[0] == 404
    assert request(port, "/metrics", "POST")[0] == 405
    assert fabric.client("cl1").get("peers", "cl0")["name"] == "cl0"
    assert request(port, "/metrics", "HEAD")[0] == 200

    # a killed worker: the scrape still answers (worker_up 0 while it is gone), and its
    # restarted successor answers on a new channel
    main = cl1.proc.pid  # type: ignore[union-attr]
    (worker,) = children(main)
    os.kill(worker, signal.SIGKILL)
    seen_down = False
    up: dict[str, float] = {}
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        status, text = request(port)
        assert status == 200
        up = series(parse(text)[0], "clusterlink_worker_up")
        seen_down = seen_down or up.get("1") == 0.0
        if seen_down and up == {"0": 1.0, "1": 1.0} and children(main) not in ([], [worker]):
            break
        time.sleep(0.1)
    assert seen_down and up == {"0": 1.0, "1": 1.0}, up
    assert "Traceback" not in cl1.log_text()


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        exprs += [t["expr"] for t in panel["targets"]]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["definition"])
    return exprs


def test_dashboard_queries_only_metrics_a_live_gateway_exports(fabric: Fabric) -> None:
    cl0 = fabric.start("cl0", extra=metrics_config())
    fabric.start("cl1", extra={"workers": 2, **metrics_config()})
    fabric.export_echo("cl0")
    fabric.allow_all("cl0", "cl1")
    fabric.add_peer("cl1", "cl0")
    fabric.client("cl1").create(
        "imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}}
    )
    assert get(fabric.import_port("cl1", "http-echo")) == "cl0"
    # a stranger on cl0's peer port: a handshake failure
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", cl0.config["listen"]["port"]), timeout=5) as s,
    ):
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.recv(100)
    exported: set[str] = set()
    for gw in ("cl0", "cl1"):
        status, text = request(fabric[gw].config["metrics"]["port"])
        assert status == 200
        exported |= parse(text)[1]
    used: set[str] = set()
    for expr in dashboard_queries():
        used |= set(re.findall(r"\bclusterlink_[a-z0-9_]+", expr))
    assert used and used <= exported, sorted(used - exported)
    # what the issue asks the dashboard to show
    for needed in (
        "clusterlink_peer_reachable",
        "clusterlink_peer_heartbeat_rtt_seconds",
        "clusterlink_import_connections_total",
        "clusterlink_import_bytes_total",
        "clusterlink_export_connections_total",
        "clusterlink_export_bytes_total",
        "clusterlink_policy_decisions_total",
        "clusterlink_peer_handshake_failures_total",
        "clusterlink_peer_requests_refused_total",
    ):
        assert needed in used, needed
    # the scrape example scrapes /metrics
    example = yaml.safe_load(SCRAPE_EXAMPLE.read_text())
    assert all(job["metrics_path"] == "/metrics" for job in example["scrape_configs"])


@pytest.mark.parametrize("client_ca", [True, False], ids=["client-certificates", "server-only"])
def test_metrics_listener_over_tls(fabric: Fabric, tmp_path: Path, client_ca: bool) -> None:
    ca = TestCA(tmp_path / "metrics-pki", name="metrics-ca")
    server = ca.issue("metrics-server", dns=["localhost"])
    scraper = ca.issue("prometheus")
    tls: dict[str, str] = {"cert": str(server.cert), "key": str(server.key)}
    if client_ca:
        tls["client_ca"] = str(ca.ca_path)
    gw = fabric.start("cl0", extra=metrics_config(tls=tls))
    port = gw.config["metrics"]["port"]

    def context(with_cert: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca.ca_path))
        ctx.check_hostname = False
        if with_cert:
            ctx.load_cert_chain(scraper.cert, scraper.key)
        return ctx

    status, text = request(port, context=context(True))
    assert status == 200 and 'clusterlink_worker_up{worker="0"} 1.0' in text
    assert request(port, "/v1/status", context=context(True))[0] == 404
    if client_ca:  # no client certificate: refused in the handshake, and counted
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            request(port, context=context(False))
    else:
        assert request(port, context=context(False))[0] == 200
    with pytest.raises((ConnectionError, OSError, http.client.HTTPException)):
        request(port)  # plain HTTP on a TLS port
    if client_ca:
        deadline = time.monotonic() + DEADLINE
        refused: dict[str, float] = {}
        while time.monotonic() < deadline and not refused:
            samples = parse(request(port, context=context(True))[1])[0]
            refused = {
                dict(k)["reason"]: v
                for (n, k), v in samples.items()
                if n == "clusterlink_metrics_refusals_total"
            }
            time.sleep(0.2)
        assert any(reason.startswith("tls-") for reason in refused), refused
        lines = log_records(gw, "metrics request refused")
        assert lines and all(line["listener"] == "metrics" for line in lines), lines
