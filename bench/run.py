#!/usr/bin/env python3
"""Benchmark the gateway pair against direct TCP and an stunnel pair with the same mTLS.

    .venv/bin/python bench/run.py            # full: 3 repetitions, 10 s per load, 10,000 idle
    .venv/bin/python bench/run.py --quick    # CI: 1 repetition, 2 s per load, 1,000 idle

Everything runs on 127.0.0.1. Results: bench/results/<timestamp>.json and a Markdown table,
printed, and (full runs) written into docs/benchmarks.md. Exit 1 when a measurement broke
(a tunnel carried no traffic, a process died); never on slow numbers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

if __package__ in (None, ""):
    # Run as a script: use the project's venv (the gateway and cryptography live there).
    if Path(sys.prefix) != VENV_PYTHON.parent.parent and VENV_PYTHON.exists():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

from bench.lib.pki import make_pki  # noqa: E402
from bench.lib.proc import BenchError, Procs  # noqa: E402
from bench.lib.profile import PROFILE_CASES, profile_case, profile_markdown  # noqa: E402
from bench.lib.report import markdown, notes, summarize, update_docs  # noqa: E402
from bench.lib.sinks import start_sinks  # noqa: E402
from bench.lib.suite import CASES, Plan, plan_dict, run_plan  # noqa: E402
from bench.lib.tools import (  # noqa: E402
    PY_SPY_REQUIREMENT,
    ensure_tools,
    gateway_source,
    machine_info,
)
from bench.lib.tunnels import Context  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
RESULTS = REPO / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI mode: 1 repetition, 2 s per load, 1,000 idle connections, no docs",
    )
    p.add_argument("--reps", type=int, help="repetitions (default 3; quick 1)")
    p.add_argument("--seconds", type=float, help="length of each load (default 10; quick 2)")
    p.add_argument("--idle", type=int, help="idle connections (default 10000; quick 1000)")
    p.add_argument(
        "--round-trips", type=int, help="rr-1: timed round trips (default 4000; quick 1000)"
    )
    p.add_argument(
        "--variants",
        default="direct,stunnel,gateway",
        help="comma-separated: direct, stunnel, gateway, gateway-reverse (the exporter is an "
        "outbound-only site reached over reverse links), gateway-relay (two outbound-only "
        "sites through a third gateway relaying ciphertext), gateway-base (the gateway from "
        "--base-ref), gateway-audit-off / gateway-audit-debug (log.audit set so) "
        "(default: the first three)",
    )
    p.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated subset of {', '.join(CASES)}, or mesh (bench/mesh.py: N gateways"
        " in a full mesh, idle cost; only run when named)",
    )
    p.add_argument(
        "--mesh-sizes", default="10,25,50", help="the mesh case: numbers of gateways (10,25,50)"
    )
    p.add_argument(
        "--workers",
        default="1",
        help="gateway data-plane workers; a list (1,2) runs one gateway variant each",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile the gateway pair with py-spy under iperf3 and wrk close",
    )
    p.add_argument("--profile-only", action="store_true", help="only the py-spy profiles")
    p.add_argument("--profile-seconds", type=float, default=10.0)
    p.add_argument(
        "--profile-native",
        action="store_true",
        help="py-spy --native: C frames too (pauses the process for each sample)",
    )
    p.add_argument(
        "--profile-cases",
        default=",".join(PROFILE_CASES),
        help=f"comma-separated subset of {', '.join(PROFILE_CASES)}",
    )
    p.add_argument(
        "--gateway-log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the gateways' log.level (default info, the product default)",
    )
    p.add_argument(
        "--gateway-ref",
        metavar="REV",
        help="run the gateway from this git revision (default: the working tree)",
    )
    p.add_argument(
        "--base-ref",
        metavar="REV",
        help="variant gateway-base runs the gateway from this git revision (before/after in "
        "one run)",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--docs", type=Path, default=DOCS, help="Markdown file to update")
    p.add_argument("--no-docs", action="store_true", help="do not update the docs file")
    p.add_argument("--no-install", action="store_true", help="never run apt-get")
    p.add_argument(
        "--render",
        type=Path,
        metavar="RESULT.json",
        help="measure nothing: print the table of an earlier run (and update the docs "
        "unless --no-docs)",
    )
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and logs")
    return p.parse_args(argv)


def build_plan(args: argparse.Namespace) -> Plan:
    plan = Plan()
    if args.quick:
        plan.reps, plan.seconds, plan.idle_count, plan.idle_settle, plan.pause = 1, 2, 1000, 1, 0.3
        plan.round_trips = 1000
    plan.reps = args.reps or plan.reps
    plan.seconds = args.seconds or plan.seconds
    plan.idle_count = args.idle or plan.idle_count
    plan.round_trips = args.round_trips or plan.round_trips
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}")
    plan.cases = cases
    variants = [v for v in args.variants.split(",") if v]
    workers = [int(w) for w in args.workers.split(",") if w]
    if "gateway" in variants:
        at = variants.index("gateway")
        named = ["gateway" if w == 1 else f"gateway-w{w}" for w in workers]
        variants[at : at + 1] = named
    if "gateway-base" in variants and not args.base_ref:
        raise SystemExit("variant gateway-base needs --base-ref")
    if set(variants) - {"direct", "stunnel"} - {v for v in variants if v.startswith("gateway")}:
        raise SystemExit(f"unknown variant in {args.variants!r}")
    plan.variants = variants
    return plan


def raise_fd_limit(idle: int) -> None:
    """The harness holds ``idle`` client sockets; the gateways and the sink inherit this."""
    want = max(65536, 4 * idle + 4096)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE (e.g. in a container)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        print(f"bench: RLIMIT_NOFILE stays at the hard limit {hard} (wanted {want})", flush=True)


def progress(record: dict[str, Any]) -> None:
    where = f"rep {record['rep']} {record['case']:<15} {record['variant']:<10}"
    if "error" in record:
        print(f"{where} FAILED: {record['error'].splitlines()[0]}", flush=True)
        return
    bits = []
    if "gbps" in record:
        bits.append(f"{record['gbps']:.2f} Gbit/s")
        if "cpu_s_per_gb" in record:
            bits.append(f"{record['cpu_s_per_gb']:.2f} CPU-s/GB")
        if "relay_cpu_s_per_gb" in record:
            bits.append(f"relay {record['relay_cpu_s_per_gb']:.2f} CPU-s/GB")
    if "p50_us" in record:
        bits.append(f"p50 {record['p50_us']:.0f} us, p99 {record['p99_us']:.0f} us")
        if "cpu_us_per_rt" in record:
            bits.append(f"{record['cpu_us_per_rt']:.0f} CPU-us/round trip")
    if "rate" in record:
        bits.append(
            f"{record['rate']:,.0f} req/s, p50 {record['p50_ms']:.2f} ms, "
            f"p99 {record['p99_ms']:.2f} ms"
        )
        if "cpu_ms_per_req" in record:
            bits.append(f"{record['cpu_ms_per_req']:.3f} CPU-ms/req")
        if "relay_cpu_ms_per_req" in record:
            bits.append(f"relay {record['relay_cpu_ms_per_req']:.3f} CPU-ms/req")
        if record["error_count"]:
            bits.append(f"errors {record['error_count']}")
    if "kib_per_conn" in record:
        bits.append(
            f"{record['opened']}/{record['requested']} open, {record['kib_per_conn']:.1f} KiB/conn"
        )
    bits.append(f"load {record['loadavg'][0]:.1f}")
    print(f"{where} " + ", ".join(bits), flush=True)


def _terminate(signum: int, _frame: Any) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def render(path: Path, docs: Path | None) -> int:
    result = json.loads(path.read_text())
    text = markdown(result)
    print(text)
    if docs is not None and not result["quick"]:
        update_docs(docs, text)
        print(f"bench: updated {docs}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render, None if args.no_docs else args.docs)
    cases = [c for c in args.cases.split(",") if c]
    mesh_failed = 0
    if "mesh" in cases:
        from bench.mesh import run as run_mesh

        sizes = [int(n) for n in args.mesh_sizes.split(",") if n]
        mesh_failed = run_mesh(sizes, idle_seconds=5.0 if args.quick else 20.0)
        args.cases = ",".join(c for c in cases if c != "mesh")
        if not args.cases:
            return mesh_failed
    plan = build_plan(args)
    for sig in (signal.SIGTERM, signal.SIGINT):  # also when started with SIGINT ignored (&)
        signal.signal(sig, _terminate)
    raise_fd_limit(plan.idle_count)
    try:
        ensure_tools(install=not args.no_install)
    except (BenchError, OSError, subprocess.CalledProcessError) as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    stamp = time.strftime("%Y%m%d-%H%M%S")
    command = " ".join(["bench/run.py", *map(shlex.quote, sys.argv[1:])])
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    loadavg_start = list(os.getloadavg())
    machine = machine_info()
    print(f"bench: {command}; load average {loadavg_start[0]:.2f}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="clusterlink-bench-"))
    procs = Procs(workdir / "logs")
    records: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    fatal: str | None = None
    args.results_dir.mkdir(parents=True, exist_ok=True)
    source = "?"
    try:
        gateway_env, source = gateway_source(REPO, args.gateway_ref, workdir)
        base_env = None
        if args.base_ref:
            (workdir / "base").mkdir()
            base_env, base_source = gateway_source(REPO, args.base_ref, workdir / "base")
            source += f"; gateway-base: {base_source}"
        ctx = Context(
            procs,
            workdir,
            make_pki(workdir / "pki"),
            start_sinks(procs, workdir),
            gateway_log_level=args.gateway_log_level,
            gateway_env=gateway_env,
            base_env=base_env,
        )
        if not args.profile_only:
            records = run_plan(ctx, plan, progress)
        if args.profile or args.profile_only:
            for case in [c for c in args.profile_cases.split(",") if c]:
                print(f"profile {case} ...", flush=True)
                profiles.append(
                    profile_case(
                        ctx,
                        case,
                        args.profile_seconds,
                        args.results_dir / stamp,
                        native=args.profile_native,
                    )
                )
    except BenchError as exc:
        fatal = str(exc)
        print(f"bench: FAILED: {fatal}", file=sys.stderr)
    finally:
        procs.stop_all()
        failed = fatal is not None or any("error" in r for r in records)
        if failed:
            shutil.copytree(
                workdir / "logs", args.results_dir / f"{stamp}-logs", dirs_exist_ok=True
            )
        if args.keep_workdir:
            print(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    result: dict[str, Any] = {
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": command,
        "quick": args.quick,
        "plan": plan_dict(plan),
        "machine": machine,
        "gateway_source": source,
        "loadavg_start": loadavg_start,
        "loadavg_end": list(os.getloadavg()),
        "records": records,
        "summary": summarize(records),
        "profiles": profiles,
        "fatal": fatal,
    }
    result["notes"] = notes(records)
    result["ok"] = not failed
    out = args.results_dir / f"{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result) if records else ""
    profile_text = ""
    if profiles:
        profile_text = f"Run {started}, gateway source: {source}, load average "
        profile_text += f"{loadavg_start[0]:.2f} at start.\n\n"
        profile_text += profile_markdown(profiles, PY_SPY_REQUIREMENT.strip().split("==")[1])
        text += "\n### Profile\n\n" + profile_text
    (args.results_dir / f"{stamp}.md").write_text(text)
    print()
    print(text)
    print(f"bench: results in {out}")
    if not args.quick and not args.no_docs and (records or profiles):
        if records:
            update_docs(args.docs, markdown(result))
        if profiles:
            update_docs(args.docs, profile_text, block="profile")
        print(f"bench: updated {args.docs}")
    return 1 if failed or mesh_failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        sys.exit(130)
