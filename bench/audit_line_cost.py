"""CPU cost of the per-connection audit line in the gateway's own logging set-up, for each
``log.audit`` setting, with stderr going to a pipe that another process drains (as journald
does). One process, no sockets; interleaved repetitions, medians.

Run: ``.venv/bin/python bench/audit_line_cost.py [LINES] [REPS]`` (defaults 20000, 3).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from clusterlink_gateway import audit
from clusterlink_gateway.logs import setup_logging

# The fields of a typical importer line (see dataplane/attempt.py ConnectionAttempt.record).
FIELDS = {
    "client": "127.0.0.1",
    "import": "postgres",
    "peer": "site-b",
    "tried": [
        {
            "peer": "site-b",
            "export": "postgres",
            "egress": "allow (policy allow-all)",
            "result": "connected",
        }
    ],
    "duration_s": 0.004,
    "bytes_in": 78,
    "bytes_out": 163,
}


def per_line_us(setting: str, lines: int) -> float:
    setup_logging("info", "json", setting)
    start = time.process_time()
    for _ in range(lines):
        if audit.enabled():
            audit.write("connection", dict(FIELDS))
    return (time.process_time() - start) * 1e6 / lines


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert drain.stdin is not None
    saved = os.dup(2)
    os.dup2(drain.stdin.fileno(), 2)
    results: dict[str, list[float]] = {"info": [], "debug": [], "off": []}
    try:
        for _ in range(reps):
            for setting in results:
                results[setting].append(per_line_us(setting, lines))
    finally:
        os.dup2(saved, 2)
        drain.stdin.close()
        drain.wait()
    print(f"{lines} lines x {reps} repetitions, log.level info, JSON, stderr to a pipe")
    for setting, values in results.items():
        print(f"log.audit {setting:5}: {statistics.median(values):6.1f} CPU-us per connection")


if __name__ == "__main__":
    main()
