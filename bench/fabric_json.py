"""Cost of one ``/fabric.json`` (what the fabric page polls every 2 s) against one ``/metrics``
scrape on the same metrics listener, on a real gateway with ``workers: N``, M imports, M
exports and P peers (unreachable: nothing listens at their endpoints).

Run: ``.venv/bin/python bench/fabric_json.py [WORKERS] [IMPORTS] [PEERS] [REQUESTS]``
(defaults 2, 50, 10, 200). Prints the median and p95 time per request and the body size.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from lib.listener import get, metrics_gateway, summary

from support.gateway import free_port


def main() -> None:
    workers, imports, peers, requests = (
        int(a) for a in (sys.argv[1:] + ["2", "50", "10", "200"][len(sys.argv) - 1 :])
    )
    with tempfile.TemporaryDirectory() as tmp, metrics_gateway(Path(tmp), workers) as (gw, port):
        for i in range(peers):
            endpoint = {"host": "127.0.0.1", "port": free_port()}
            gw.client.create("peers", {"name": f"peer{i}", "spec": {"gateways": [endpoint]}})
        for i in range(imports):
            source = {"peer": f"peer{i % max(peers, 1)}"}
            gw.client.create("imports", {"name": f"svc{i}", "spec": {"sources": [source]}})
            gw.client.create("exports", {"name": f"exp{i}", "spec": {"port": 9}})
        time.sleep(2)  # workers synced
        for path in ("/fabric.json", "/metrics"):
            line = summary(lambda path=path: get(port, path), requests)
            print(
                f"{path}: {line} (workers {workers}, imports {imports}, exports {imports}, "
                f"peers {peers}, {requests} requests)"
            )


if __name__ == "__main__":
    main()
