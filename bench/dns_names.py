"""Import names: answer rate and latency of the gateway's DNS listener (UDP and TCP).

A real gateway (``dns`` on, ``imports.address_range`` 127.78.0.0/16) with N imports, each with
``bind: auto``; Q sequential A queries with dnspython (a new TCP connection per TCP query)
for one import, checked against the allocated address. The client's own cost is included.
Run: ``.venv/bin/python bench/dns_names.py [N] [Q]`` (defaults 100, 2,000).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway" / "tests"))
from support.gateway import GatewayProcess, free_port
from support.pki import TestCA


def main(imports: int = 100, queries: int = 2000) -> None:
    root = Path(tempfile.mkdtemp(prefix="dns-bench-"))
    port = free_port()
    extra = {
        "dns": {"port": port},
        "imports": {"address_range": "127.78.0.0/16"},
        "log": {"level": "info"},
    }
    gw = GatewayProcess(root, "cl0", TestCA(root / "pki"), extra=extra).start()
    try:
        for i in range(imports):
            spec = {"bind": "auto", "port": 5432, "sources": [{"peer": "x"}]}
            gw.client.create("imports", {"name": f"svc{i}", "spec": spec})
        name = f"svc{imports // 2}"
        want = gw.client.get("imports", name)["status"]["address"]
        query = dns.message.make_query(f"{name}.clusterlink.internal.", "A")
        for proto, ask in (("udp", dns.query.udp), ("tcp", dns.query.tcp)):
            latencies = []
            started = time.perf_counter()
            for _ in range(queries):
                sent = time.perf_counter()
                resp = ask(query, "127.0.0.1", port=port, timeout=5)
                latencies.append(time.perf_counter() - sent)
                assert resp.rcode() == dns.rcode.NOERROR
                assert resp.answer[0][0].to_text() == want
            total = time.perf_counter() - started
            latencies.sort()
            p50 = latencies[len(latencies) // 2] * 1e3
            p99 = latencies[int(len(latencies) * 0.99)] * 1e3
            print(
                f"{proto}: {queries} sequential A queries, {imports} imports: "
                f"{queries / total:.0f}/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms"
            )
    finally:
        gw.stop()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
