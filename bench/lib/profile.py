"""py-spy profiles of the gateway pair under load, summarised as top frames.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``). The summary
gives, per gateway, the frames that were on top of the stack (self time) and the functions
that were anywhere on it (inclusive time), as shares of the samples.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .load import run_iperf, run_wrk
from .pingpong import ping_pong
from .proc import BenchError, CpuMeter
from .tools import ensure_py_spy
from .tunnels import Context, GatewayPair

PROFILE_CASES = {
    "tcp-1": ("iperf", "iperf3 -c, 1 stream"),
    "http-keepalive": ("http", "wrk -t2 -c50, keep-alive"),
    "http-close": ("http", "wrk -t2 -c50, Connection: close"),
    "rr-1": ("echo", "ping-pong, 1 connection, 64-byte messages"),
}

_H2_FILES = re.compile(
    r"\((connection|stream|events|frame_buffer|frame|hpack|table|huffman\w*|utilities|settings|"
    r"windows|config)\.py\)$"
)
# Components of the gateway's time, by the frames on the stack (a sample can count for several)
COMPONENTS = {
    "TLS (SSLObject read/write)": lambda f: f.startswith("SSLObject."),
    "h2 library": lambda f: _H2_FILES.search(f) is not None,
    "logging": lambda f: (
        f.endswith(("(logs.py)", "(__init__.py)"))
        and f.split(".")[0] in ("Logger", "LogRecord", "Handler", "Formatter", "JsonFormatter")
    ),
    "metrics": lambda f: f.endswith("(metrics.py)") or f.startswith("MutexValue."),
    "policy": lambda f: f.endswith(("(engine.py)", "(attributes.py)")),
}

_LOCATION = re.compile(r" \((?:[^()]*/)?([^/()]+):\d+\)$")


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``; lines merged."""
    return _LOCATION.sub(lambda m: f" ({m.group(1)})", frame)


def summarize_stacks(path: Path, top: int = 25) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        # py-spy puts the thread first ("process 123:..." / "thread (0x..)") then outermost first
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        self_time[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        for name, matches in COMPONENTS.items():
            if any(matches(f) for f in frames):
                components[name] += n

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(f, c / total) for f, c in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "self": shares(self_time),
        "inclusive": shares(inclusive),
        "components": {k: v / total for k, v in components.most_common()} if total else {},
    }


def profile_case(
    ctx: Context, case: str, seconds: float, out_dir: Path, *, native: bool = False
) -> dict[str, Any]:
    py_spy = ensure_py_spy()
    kind, label = PROFILE_CASES[case]
    out_dir.mkdir(parents=True, exist_ok=True)
    with GatewayPair(ctx, kind) as pair:
        spies = []
        outputs = {}
        for role, pid in sorted(pair.roles.items()):
            out = out_dir / f"profile-{case}-{role}.txt"
            outputs[role] = out
            spies.append(
                subprocess.Popen(
                    [
                        str(py_spy),
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        f"{seconds:g}",
                        "--rate",
                        "100",
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                        "--native" if native else "--nonblocking",
                        "--subprocesses",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        meter = CpuMeter(pair.pids)
        meter.start()
        load: dict[str, Any] = {}

        def drive() -> None:
            if kind == "iperf":
                load["gbps"] = run_iperf(pair.port, seconds + 2, 1).gbps
            elif kind == "echo":
                load["p50_us"] = ping_pong_for(pair.port, seconds + 2)
            else:
                close = case == "http-close"
                res = run_wrk(pair.port, seconds + 2, close, ctx.workdir / "wrk-report.lua")
                load["rate"] = res.rate
                load["p99_ms"] = res.p99_ms

        thread = threading.Thread(target=drive)
        thread.start()
        errors = []
        for spy in spies:
            try:
                _, err = spy.communicate(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, err = spy.communicate()
            if spy.returncode != 0:
                errors.append(err.decode(errors="replace").strip()[:300])
        thread.join()
        used = meter.stop()
    if errors:
        raise BenchError(f"py-spy failed: {errors}")
    return {
        "case": case,
        "load": label,
        "result": load,
        "cpu_user_s": used.user,
        "cpu_sys_s": used.system,
        "gateways": {role: summarize_stacks(path) for role, path in outputs.items()},
        "files": {role: str(path) for role, path in outputs.items()},
    }


def ping_pong_for(port: int, seconds: float) -> float:
    """Ping-pong for about ``seconds``; the median of the batches' p50 round trip (us)."""
    deadline = time.monotonic() + seconds
    p50s = []
    while time.monotonic() < deadline:
        p50s.append(ping_pong(port, 1000, warmup=10).p50_us)
    return statistics.median(p50s)


def profile_markdown(profiles: list[dict[str, Any]], version: str, top: int = 8) -> str:
    parts = [
        f"py-spy {version}, 100 Hz, `--nonblocking`; Python frames only (time in C and "
        "in the kernel shows as the Python frame that called it; idle time in the event "
        "loop is not sampled)."
    ]
    for prof in profiles:
        result = ", ".join(f"{k} {v:,.2f}" for k, v in prof["result"].items())
        parts += [
            "",
            f"**{prof['case']}** ({prof['load']}; {result}; pair CPU user "
            f"{prof['cpu_user_s']:.1f} s, sys {prof['cpu_sys_s']:.1f} s)",
        ]
        for role, summary in prof["gateways"].items():
            comps = ", ".join(f"{k} {v:.0%}" for k, v in summary["components"].items())
            parts += ["", f"{role}, {summary['samples']} samples; by component: {comps}.", ""]
            parts += ["Self time:", ""]
            parts += [f"* {share:5.1%} `{frame}`" for frame, share in summary["self"][:top]]
            # inclusive: skip the frames every sample has (the event loop, main)
            inner = [(f, v) for f, v in summary["inclusive"] if v < 0.9][:top]
            parts += ["", "On the stack (inclusive):", ""]
            parts += [f"* {share:5.1%} `{frame}`" for frame, share in inner]
    return "\n".join(parts) + "\n"
