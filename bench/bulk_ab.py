#!/usr/bin/env python3
"""Interleaved bulk A/B: stunnel and gateway pairs of two sources, all started once and held,
loaded in turn with short iperf3 runs (A, B, stunnel, A, B, stunnel, ...).

On a shared machine the load drifts over minutes; ``bench/run.py`` starts a fresh pair per
measurement and one source per run, so a few-% difference between two commits drowns in that
drift. Here every round measures each tunnel within seconds of the others, and the summary is
the median over the rounds of CPU-s per GB (pair, user + system) and Gbit/s.

    .venv/bin/python bench/bulk_ab.py --ref-a main --ref-b WORKTREE --rounds 8 --seconds 3 -P 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.lib.load import run_iperf  # noqa: E402
from bench.lib.pki import make_pki  # noqa: E402
from bench.lib.proc import CpuMeter, Procs  # noqa: E402
from bench.lib.sinks import start_sinks  # noqa: E402
from bench.lib.tools import gateway_source  # noqa: E402
from bench.lib.tunnels import Context, GatewayPair, StunnelPair  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref-a", default="HEAD", help="git revision, or WORKTREE")
    p.add_argument("--ref-b", default="WORKTREE", help="git revision, or WORKTREE")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("-P", "--streams", type=int, default=1)
    p.add_argument("--no-stunnel", action="store_true")
    p.add_argument("--workers", type=int, default=1, help="workers of both gateway pairs")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="clusterlink-bulk-ab-"))
    procs = Procs(workdir / "logs")
    rows: dict[str, list[tuple[float, float]]] = {}
    try:
        pki = make_pki(workdir / "pki")
        sinks = start_sinks(procs, workdir)
        tunnels = {}
        for label, ref in (("A", args.ref_a), ("B", args.ref_b)):
            sub = workdir / label
            sub.mkdir()
            env, what = gateway_source(REPO, None if ref == "WORKTREE" else ref, sub)
            ctx = Context(procs, sub, pki, sinks, gateway_env=env)
            pair = GatewayPair(ctx, "iperf", workers=args.workers)
            pair.start()
            tunnels[f"gateway {label}: {what}"] = pair
        if not args.no_stunnel:
            ctx = Context(procs, workdir, pki, sinks)
            st = StunnelPair(ctx, "iperf")
            st.start()
            tunnels["stunnel"] = st
        print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
        for rnd in range(args.rounds):
            for name, tunnel in tunnels.items():
                meter = CpuMeter(tunnel.pids)
                meter.start()
                res = run_iperf(tunnel.port, args.seconds, args.streams)
                used = meter.stop()
                cpu_gb = used.total / (res.bytes / 1e9)
                rows.setdefault(name, []).append((res.gbps, cpu_gb))
                print(
                    f"round {rnd + 1} {name:50s} {res.gbps:6.2f} Gbit/s {cpu_gb:5.2f} CPU-s/GB "
                    f"(user {used.user / (res.bytes / 1e9):.2f}) load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        print(f"\nmedians over {args.rounds} rounds, -P {args.streams}, {args.seconds} s each:")
        summary = {}
        for name, vals in rows.items():
            gbps = statistics.median(v[0] for v in vals)
            cpu = statistics.median(v[1] for v in vals)
            summary[name] = {"gbps": gbps, "cpu_s_per_gb": cpu, "rounds": vals}
            print(f"  {name:50s} {gbps:6.2f} Gbit/s {cpu:5.2f} CPU-s/GB")
        print(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "summary": summary}))
        for tunnel in tunnels.values():
            tunnel.stop()
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
