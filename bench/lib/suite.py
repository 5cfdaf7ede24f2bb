"""The measurement plan: cases x variants x repetitions, interleaved, a fresh tunnel each time."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from .idle import close_all, open_idle
from .load import run_iperf, run_wrk
from .pingpong import ping_pong
from .proc import BenchError, CpuMeter, tree_rss_kib
from .tunnels import Context, Tunnel, make_tunnel

T = TypeVar("T")

CASES: dict[str, str] = {
    "tcp-1": "iperf3, 1 stream",
    "tcp-8": "iperf3, 8 streams (-P 8)",
    "http-keepalive": "wrk -t2 -c50, keep-alive",
    "http-close": "wrk -t2 -c50, Connection: close",
    "idle": "idle relayed connections held open",
    "rr-1": "ping-pong, 1 connection, 64-byte messages through an echo server",
}
SINK = {
    "tcp-1": "iperf",
    "tcp-8": "iperf",
    "http-keepalive": "http",
    "http-close": "http",
    "rr-1": "echo",
}


@dataclass
class Plan:
    reps: int = 3
    seconds: float = 10.0
    variants: list[str] = field(default_factory=lambda: ["direct", "stunnel", "gateway"])
    cases: list[str] = field(default_factory=lambda: list(CASES))
    idle_count: int = 10_000
    idle_settle: float = 2.0
    pause: float = 1.0  # between measurements: let TIME_WAIT and the CPU settle
    round_trips: int = 4000  # rr-1: timed round trips per measurement

    def idle_variants(self) -> list[str]:
        return [v for v in self.variants if v != "direct"]


def _metered(tunnel: Tunnel, load: Callable[[], T]) -> tuple[T, Any, CpuMeter]:
    """Run ``load`` while metering the tunnel's processes; (its result, CPU used, meter).
    A relay in the path (variant gateway-relay) is also metered alone: ``tunnel.relay_cpu``."""
    meter = CpuMeter(tunnel.pids)
    relay_pid = getattr(tunnel, "relay_pid", None)
    relay = CpuMeter([relay_pid]) if relay_pid else None
    meter.start()
    if relay:
        relay.start()
    result = load()
    used = meter.stop()
    tunnel.relay_cpu = relay.stop().total if relay else None
    tunnel.check_alive()
    return result, used, meter


def _measure_iperf(tunnel: Tunnel, plan: Plan, streams: int) -> dict[str, Any]:
    result, used, meter = _metered(tunnel, lambda: run_iperf(tunnel.port, plan.seconds, streams))
    out: dict[str, Any] = {
        "gbps": result.gbps,
        "bytes": result.bytes,
        "seconds": result.seconds,
        "retransmits": result.retransmits,
        "machine_busy": meter.machine_busy,
    }
    if tunnel.pids:
        gb = result.bytes / 1e9
        out |= {
            "cpu_s": used.total,
            "cpu_user_s": used.user,
            "cpu_sys_s": used.system,
            "cpu_s_per_gb": used.total / gb,
            "cpu_user_s_per_gb": used.user / gb,
            "cpu_sys_s_per_gb": used.system / gb,
        }
        if tunnel.relay_cpu is not None:
            out |= {"relay_cpu_s": tunnel.relay_cpu, "relay_cpu_s_per_gb": tunnel.relay_cpu / gb}
    return out


def _measure_wrk(tunnel: Tunnel, plan: Plan, close: bool) -> dict[str, Any]:
    report = tunnel.ctx.workdir / "wrk-report.lua"
    result, used, meter = _metered(
        tunnel, lambda: run_wrk(tunnel.port, plan.seconds, close, report)
    )
    out: dict[str, Any] = {
        "rate": result.rate,
        "requests": result.requests,
        "seconds": result.seconds,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "error_count": result.error_count,
        "machine_busy": meter.machine_busy,
    }
    if tunnel.pids:
        out |= {
            "cpu_s": used.total,
            "cpu_user_s": used.user,
            "cpu_sys_s": used.system,
            "cpu_ms_per_req": used.total * 1000 / result.requests,
        }
        if tunnel.relay_cpu is not None:
            out["relay_cpu_ms_per_req"] = tunnel.relay_cpu * 1000 / result.requests
    return out


def _measure_pingpong(tunnel: Tunnel, plan: Plan) -> dict[str, Any]:
    result, used, meter = _metered(tunnel, lambda: ping_pong(tunnel.port, plan.round_trips))
    out: dict[str, Any] = {
        "round_trips": result.round_trips,
        "seconds": result.seconds,
        "p50_us": result.p50_us,
        "p99_us": result.p99_us,
        "mean_us": result.mean_us,
        "max_us": result.max_us,
        "machine_busy": meter.machine_busy,
    }
    if tunnel.pids:
        # includes the 200 warm-up round trips
        out["cpu_us_per_rt"] = used.total * 1e6 / (result.round_trips + 200)
    return out


def idle_count_for(tunnel: Tunnel, wanted: int) -> int:
    """As many as the fd limit (which the tunnel processes inherit) lets one process hold."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, min(wanted, (soft - 512) // tunnel.fds_per_conn))


def _measure_idle(tunnel: Tunnel, plan: Plan) -> dict[str, Any]:
    count = idle_count_for(tunnel, plan.idle_count)
    time.sleep(0.5)
    before = {pid: tree_rss_kib(pid) for pid in tunnel.pids}
    meter = CpuMeter(tunnel.pids)
    meter.start()
    socks, result = open_idle(tunnel.port, count)
    try:
        used = meter.stop()
        time.sleep(plan.idle_settle)
        tunnel.check_alive()
        after = {pid: tree_rss_kib(pid) for pid in tunnel.pids}
    finally:
        close_all(socks)
    if result.opened == 0:
        raise BenchError(f"no idle connection could be opened: {result.failures}")
    growth = sum(after.values()) - sum(before.values())
    return {
        "wanted": plan.idle_count,
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "requested": result.requested,
        "opened": result.opened,
        "failures": result.failures,
        "seconds_to_open": result.seconds_to_open,
        "rss_before_kib": list(before.values()),
        "rss_after_kib": list(after.values()),
        "kib_per_conn": growth / result.opened,
        "cpu_ms_per_conn_open": used.total * 1000 / result.opened,
    }


MEASURES: dict[str, Callable[[Tunnel, Plan], dict[str, Any]]] = {
    "tcp-1": lambda t, p: _measure_iperf(t, p, 1),
    "tcp-8": lambda t, p: _measure_iperf(t, p, 8),
    "http-keepalive": lambda t, p: _measure_wrk(t, p, close=False),
    "http-close": lambda t, p: _measure_wrk(t, p, close=True),
    "idle": _measure_idle,
    "rr-1": _measure_pingpong,
}


def measure(ctx: Context, plan: Plan, rep: int, case: str, variant: str) -> dict[str, Any]:
    """One measurement with a fresh tunnel; an error is recorded in the result, not raised."""
    record: dict[str, Any] = {
        "rep": rep,
        "case": case,
        "variant": variant,
        "loadavg": list(os.getloadavg()),
        "started": time.strftime("%H:%M:%S"),
    }
    try:
        with make_tunnel(ctx, variant, SINK.get(case, "hold")) as tunnel:
            record["tunnel"] = dict(tunnel.info)
            record |= MEASURES[case](tunnel, plan)
    except BenchError as exc:
        record["error"] = str(exc)
    return record


def run_plan(
    ctx: Context, plan: Plan, report: Callable[[dict[str, Any]], None]
) -> list[dict[str, Any]]:
    """rep 1: every case, each through every variant; then rep 2; ..."""
    records = []
    for rep in range(1, plan.reps + 1):
        for case in plan.cases:
            variants = plan.idle_variants() if case == "idle" else plan.variants
            for variant in variants:
                record = measure(ctx, plan, rep, case, variant)
                records.append(record)
                report(record)
                time.sleep(plan.pause)
    return records


def plan_dict(plan: Plan) -> dict[str, Any]:
    return asdict(plan)
