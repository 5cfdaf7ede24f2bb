"""Cost of one scrape of the metrics listener (every process) against the admin API's /metrics
(the main process only), on a real gateway with ``workers: N`` and M imports.

Run: ``.venv/bin/python bench/metrics_scrape.py [WORKERS] [IMPORTS] [SCRAPES]`` (defaults 2, 50,
200). Prints the median and p95 time per scrape and the exposition's size for both.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from lib.listener import get, metrics_gateway, summary


def main() -> None:
    workers, imports, scrapes = (
        int(a) for a in (sys.argv[1:] + ["2", "50", "200"][len(sys.argv) - 1 :])
    )
    with tempfile.TemporaryDirectory() as tmp, metrics_gateway(Path(tmp), workers) as (gw, port):
        for i in range(imports):
            gw.client.create(
                "imports", {"name": f"svc{i}", "spec": {"sources": [{"peer": "nobody"}]}}
            )
        time.sleep(2)  # workers synced
        scrapers = {
            "metrics listener": lambda: get(port, "/metrics"),
            "admin /metrics": lambda: len(gw.client.raw("GET", "/metrics").body),
        }
        for name, fn in scrapers.items():
            line = summary(fn, scrapes)
            print(f"{name}: {line} (workers {workers}, imports {imports}, {scrapes} scrapes)")


if __name__ == "__main__":
    main()
