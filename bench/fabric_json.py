"""Cost of one ``/fabric.json`` (what the fabric page polls every 2 s) against one ``/metrics``
scrape on the same metrics listener, on a real gateway with ``workers: N``, M imports, M
exports and P peers (unreachable: nothing listens at their endpoints).

Run: ``.venv/bin/python bench/fabric_json.py [WORKERS] [IMPORTS] [PEERS] [REQUESTS]``
(defaults 2, 50, 10, 200). Prints the median and p95 time per request and the body size.
"""

from __future__ import annotations

import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway" / "tests"))

from support.gateway import GatewayProcess, free_port
from support.pki import TestCA


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200, (path, resp.status)
    return len(body)


def main() -> None:
    workers, imports, peers, requests = (
        int(a) for a in (sys.argv[1:] + ["2", "50", "10", "200"][len(sys.argv) - 1 :])
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        extra = {"workers": workers, "metrics": {"address": "127.0.0.1", "port": port}}
        gw = GatewayProcess(root, "cl0", TestCA(root / "pki"), extra=extra).start()
        try:
            for i in range(peers):
                endpoint = {"host": "127.0.0.1", "port": free_port()}
                gw.client.create("peers", {"name": f"peer{i}", "spec": {"gateways": [endpoint]}})
            for i in range(imports):
                source = {"peer": f"peer{i % max(peers, 1)}"}
                gw.client.create("imports", {"name": f"svc{i}", "spec": {"sources": [source]}})
                gw.client.create("exports", {"name": f"exp{i}", "spec": {"port": 9}})
            time.sleep(2)  # workers synced
            for path in ("/fabric.json", "/metrics"):
                for _ in range(10):
                    get(port, path)
                runs = []
                for _ in range(requests):
                    start = time.perf_counter()
                    size = get(port, path)
                    runs.append(time.perf_counter() - start)
                times = sorted(runs)
                print(
                    f"{path}: median {statistics.median(times) * 1000:.2f} ms, "
                    f"p95 {times[int(len(times) * 0.95)] * 1000:.2f} ms, {size} bytes "
                    f"(workers {workers}, imports {imports}, exports {imports}, peers {peers}, "
                    f"{requests} requests)"
                )
        finally:
            gw.stop()


if __name__ == "__main__":
    main()
