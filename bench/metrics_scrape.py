"""Cost of one scrape of the metrics listener (every process) against the admin API's /metrics
(the main process only), on a real gateway with ``workers: N`` and M imports.

Run: ``.venv/bin/python bench/metrics_scrape.py [WORKERS] [IMPORTS] [SCRAPES]`` (defaults 2, 50,
200). Prints the median and p95 time per scrape and the exposition's size for both.
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


def timed(fn) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    size = fn()
    return time.perf_counter() - start, size


def main() -> None:
    workers, imports, scrapes = (
        int(a) for a in (sys.argv[1:] + ["2", "50", "200"][len(sys.argv) - 1 :])
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        extra = {"workers": workers, "metrics": {"address": "127.0.0.1", "port": port}}
        gw = GatewayProcess(root, "cl0", TestCA(root / "pki"), extra=extra).start()
        try:
            for i in range(imports):
                gw.client.create(
                    "imports", {"name": f"svc{i}", "spec": {"sources": [{"peer": "nobody"}]}}
                )

            def listener() -> int:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/metrics")
                body = conn.getresponse().read()
                conn.close()
                return len(body)

            def admin() -> int:
                return len(gw.client.raw("GET", "/metrics").body)

            time.sleep(2)  # workers synced
            for name, fn in (("metrics listener", listener), ("admin /metrics", admin)):
                for _ in range(10):
                    fn()
                runs = [timed(fn) for _ in range(scrapes)]
                times = sorted(t for t, _ in runs)
                print(
                    f"{name}: median {statistics.median(times) * 1000:.2f} ms, "
                    f"p95 {times[int(len(times) * 0.95)] * 1000:.2f} ms, {runs[-1][1]} bytes "
                    f"(workers {workers}, imports {imports}, {scrapes} scrapes)"
                )
        finally:
            gw.stop()


if __name__ == "__main__":
    main()
