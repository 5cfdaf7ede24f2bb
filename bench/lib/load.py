"""Load generators: iperf3 (bulk throughput) and wrk (request and connection rate)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .proc import BenchError

# wrk calls done() once at the end; it prints exact numbers (latency in microseconds) instead
# of the rounded human-readable summary. It does not change how requests are made.
WRK_SCRIPT = """\
done = function(summary, latency, requests)
  io.write(string.format(
    "BENCH-JSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"bytes\\": %d, " ..
    "\\"connect\\": %d, \\"read\\": %d, \\"write\\": %d, \\"status\\": %d, \\"timeout\\": %d, " ..
    "\\"p50_us\\": %d, \\"p99_us\\": %d, \\"mean_us\\": %.1f, \\"max_us\\": %d}\\n",
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass
class IperfResult:
    gbps: float
    bytes: int
    seconds: float
    retransmits: int


def run_iperf(port: int, seconds: float, streams: int) -> IperfResult:
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"]
    if streams > 1:
        argv += ["-P", str(streams)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise BenchError(
            f"iperf3 printed no JSON (exit {proc.returncode}): {proc.stderr.strip()[:500]}"
        ) from None
    if data.get("error"):
        raise BenchError(f"iperf3: {data['error']}")
    received = data["end"]["sum_received"]
    result = IperfResult(
        gbps=received["bits_per_second"] / 1e9,
        bytes=int(received["bytes"]),
        seconds=float(received["seconds"]),
        retransmits=int(data["end"].get("sum_sent", {}).get("retransmits", 0)),
    )
    if result.bytes <= 0:
        raise BenchError("iperf3: no bytes received through the tunnel")
    return result


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def run_wrk(port: int, seconds: float, close: bool, script: Path) -> WrkResult:
    if not script.exists():
        script.write_text(WRK_SCRIPT)
    argv = ["wrk", "-t2", "-c50", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{port}/")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH-JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(
            f"wrk failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[:500]}"
        )
    data = json.loads(line.removeprefix("BENCH-JSON "))
    secs = data["duration_us"] / 1e6
    result = WrkResult(
        requests=data["requests"],
        seconds=secs,
        rate=data["requests"] / secs if secs else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors={k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout")},
    )
    if result.requests <= 0:
        raise BenchError("wrk: no request completed through the tunnel")
    return result
