"""Medians, ratios and targets, and the Markdown that shows them."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Metric:
    case: str
    key: str
    label: str
    better: str  # "higher" or "lower"
    target: str = ""  # human text; checked by check_target


METRICS = [
    Metric("tcp-1", "gbps", "Throughput, 1 stream (Gbit/s)", "higher", ">= 1.0x stunnel"),
    Metric("tcp-1", "cpu_s_per_gb", "CPU-s per GB, 1 stream", "lower", "<= stunnel"),
    Metric("tcp-8", "gbps", "Throughput, 8 streams (Gbit/s)", "higher", ">= 1.0x stunnel"),
    Metric("tcp-8", "cpu_s_per_gb", "CPU-s per GB, 8 streams", "lower", "<= stunnel"),
    Metric("http-keepalive", "rate", "Keep-alive req/s (50 clients)", "higher", ">= 1.0x stunnel"),
    Metric("http-keepalive", "p50_ms", "Keep-alive p50 latency (ms)", "lower"),
    Metric("http-keepalive", "p99_ms", "Keep-alive p99 latency (ms)", "lower"),
    Metric("http-keepalive", "cpu_ms_per_req", "Keep-alive CPU-ms per request", "lower"),
    Metric(
        "http-close", "rate", "Connection: close req/s (new conns/s)", "higher", ">= 3x stunnel"
    ),
    Metric("http-close", "p50_ms", "Connection: close p50 latency (ms)", "lower"),
    Metric("http-close", "p99_ms", "Connection: close p99 latency (ms)", "lower", "< stunnel"),
    Metric("http-close", "cpu_ms_per_req", "Connection: close CPU-ms per connection", "lower"),
    Metric("idle", "kib_per_conn", "KiB per idle relayed connection", "lower", "<= 64 KiB"),
    Metric("rr-1", "p50_us", "Ping-pong p50 round trip (us)", "lower", "<= stunnel"),
    Metric("rr-1", "p99_us", "Ping-pong p99 round trip (us)", "lower", "<= stunnel"),
    Metric("rr-1", "cpu_us_per_rt", "Ping-pong CPU-us per round trip", "lower"),
]

BASELINE = "stunnel"
DASH = "\u2013"  # en dash, for ranges and empty cells


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{case: {variant: {metric: {median, min, max, n}}}} over the successful repetitions."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for rec in records:
        if "error" in rec:
            continue
        for key, value in rec.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and key != "rep":
                values.setdefault((rec["case"], rec["variant"], key), []).append(float(value))
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (case, variant, key), vals in values.items():
        out.setdefault(case, {}).setdefault(variant, {})[key] = {
            "median": statistics.median(vals),
            "min": min(vals),
            "max": max(vals),
            "n": len(vals),
        }
    return out


def median(summary: dict[str, Any], case: str, variant: str, key: str) -> float | None:
    try:
        return float(summary[case][variant][key]["median"])
    except KeyError:
        return None


def ratios(summary: dict[str, Any], variant: str) -> dict[str, dict[str, float | None]]:
    """For every metric: ``variant`` / stunnel and ``variant`` / direct (medians)."""
    out: dict[str, dict[str, float | None]] = {}
    for m in METRICS:
        mine = median(summary, m.case, variant, m.key)
        row: dict[str, float | None] = {}
        for base in (BASELINE, "direct"):
            other = median(summary, m.case, base, m.key)
            row[base] = mine / other if mine is not None and other else None
        out[f"{m.case}.{m.key}"] = row
    return out


def check_target(summary: dict[str, Any], metric: Metric, variant: str) -> bool | None:
    """The product target for ``metric``; None when not stated or not measured."""
    mine = median(summary, metric.case, variant, metric.key)
    base = median(summary, metric.case, BASELINE, metric.key)
    if not metric.target or mine is None:
        return None
    if metric.target == "<= 64 KiB":
        return mine <= 64
    if base is None:
        return None
    if metric.target == ">= 1.0x stunnel":
        return mine >= base
    if metric.target == "<= stunnel":
        return mine <= base
    if metric.target == ">= 3x stunnel":
        return mine >= 3 * base
    if metric.target == "< stunnel":
        return mine < base
    return None


def fmt(value: float | None) -> str:
    if value is None:
        return DASH
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def cell(summary: dict[str, Any], case: str, variant: str, key: str) -> str:
    try:
        stats = summary[case][variant][key]
    except KeyError:
        return DASH
    if stats["n"] == 1:
        return fmt(stats["median"])
    return f"{fmt(stats['median'])} ({fmt(stats['min'])}{DASH}{fmt(stats['max'])})"


def table(summary: dict[str, Any], variants: list[str]) -> str:
    gateways = [v for v in variants if v.startswith("gateway")]
    head = ["metric", *variants]
    for g in gateways:
        head += [f"{g}/stunnel", f"{g}/direct"]
    head.append("target (gateway)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in METRICS:
        if m.case not in summary:
            continue
        row = [m.label] + [cell(summary, m.case, v, m.key) for v in variants]
        for g in gateways:
            r = ratios(summary, g)[f"{m.case}.{m.key}"]
            row += [_ratio(r[BASELINE]), _ratio(r["direct"])]
        met = check_target(summary, m, "gateway") if "gateway" in variants else None
        row.append(f"{m.target}: {'**met**' if met else '**not met**'}" if met is not None else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}x"


def notes(records: list[dict[str, Any]]) -> list[str]:
    """Errors, failed measurements, capped or unfinished idle runs, wrk socket errors; the same
    note for several repetitions is given once."""
    found: dict[tuple[str, str, str], list[int]] = {}

    def note(rec: dict[str, Any], text: str) -> None:
        found.setdefault((rec["case"], rec["variant"], text), []).append(rec["rep"])

    for rec in records:
        if "error" in rec:
            note(rec, f"FAILED: {rec['error'].splitlines()[0][:300]}")
            continue
        if rec.get("error_count"):
            errs = {k: v for k, v in rec["errors"].items() if v}
            note(rec, f"wrk errors {errs} of {rec['requests']} requests")
        if rec["case"] == "idle" and rec["requested"] < rec["wanted"]:
            note(
                rec,
                f"{rec['requested']:,} connections instead of {rec['wanted']:,}: a process may "
                f"hold only {rec['fd_limit']:,} file descriptors here (RLIMIT_NOFILE hard "
                "limit) and this tunnel needs 2 per connection",
            )
        if rec["case"] == "idle" and rec["opened"] < rec["requested"]:
            note(
                rec,
                f"only {rec['opened']} of {rec['requested']} connections opened "
                f"({rec['failures']})",
            )
    return [
        f"{case} {variant} (rep {', '.join(map(str, reps))}): {text}"
        for (case, variant, text), reps in found.items()
    ]


def workers_findings(records: list[dict[str, Any]]) -> list[str]:
    out = []
    seen = set()
    for rec in records:
        info = rec.get("tunnel") or {}
        wanted = info.get("workers_requested", 1)
        if wanted <= 1 or rec["variant"] in seen:
            continue
        seen.add(rec["variant"])
        procs = list(info.get("processes", {}).values())
        listeners = info.get("import_listeners")
        implemented = all(p >= wanted for p in procs) and (listeners or 0) >= wanted
        out.append(
            f"{rec['variant']}: `workers: {wanted}` requested; processes per gateway {procs}, "
            f"listening sockets on the import port {listeners}: data-plane workers "
            + ("**present**" if implemented else "**not implemented** (one process serves all)")
        )
    return out


def added_latency(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """rr-1: microseconds each tunnel adds to a round trip over direct TCP, p50 and p99: per
    repetition against that repetition's direct run, then the median over repetitions."""
    direct = {
        r["rep"]: r
        for r in records
        if r["case"] == "rr-1" and r["variant"] == "direct" and "error" not in r
    }
    added: dict[str, dict[str, list[float]]] = {}
    for rec in records:
        base = direct.get(rec["rep"])
        if rec["case"] != "rr-1" or rec["variant"] == "direct" or "error" in rec or not base:
            continue
        for key in ("p50_us", "p99_us"):
            added.setdefault(rec["variant"], {}).setdefault(key, []).append(rec[key] - base[key])
    return {
        variant: {key: statistics.median(vals) for key, vals in keys.items()}
        for variant, keys in added.items()
    }


def added_latency_table(records: list[dict[str, Any]]) -> str:
    added = added_latency(records)
    if not added:
        return ""
    lines = [
        "| added per round trip vs direct (us) | p50 | p99 | p50 / stunnel's | p99 / stunnel's |",
        "|---|---|---|---|---|",
    ]
    ref = added.get(BASELINE, {})
    for variant, vals in added.items():
        row = [variant, fmt(vals.get("p50_us")), fmt(vals.get("p99_us"))]
        for key in ("p50_us", "p99_us"):
            base, mine = ref.get(key), vals.get(key)
            row.append(_ratio(mine / base) if base and mine is not None else DASH)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine_line(machine: dict[str, Any]) -> str:
    return (
        f"{machine['nproc']} CPUs ({machine['cpu_model']}), {machine['mem_gib']} GiB, "
        f"{machine['distro']}, kernel {machine['kernel']}; Python {machine['python']}, "
        f"uvloop {machine['uvloop']}, h2 {machine['h2']}, {machine['openssl_python']} "
        f"(Python); iperf3 {machine['iperf3']}, stunnel {machine['stunnel']} "
        f"({machine['stunnel_openssl']}), wrk {machine['wrk']}, nginx {machine['nginx']}"
    )


def _load_median(records: list[dict[str, Any]]) -> str:
    loads = [r["loadavg"][0] for r in records if "loadavg" in r]
    if not loads:
        return DASH
    return f"{statistics.median(loads):.1f} ({min(loads):.1f}{DASH}{max(loads):.1f})"


def markdown(result: dict[str, Any]) -> str:
    plan = result["plan"]
    la0, la1 = result["loadavg_start"], result["loadavg_end"]
    parts = [
        f"Run {result['started']} ({'quick' if result['quick'] else 'full'}): "
        f"{plan['reps']} repetition(s), {plan['seconds']:g} s per load, "
        f"{plan['idle_count']:,} idle connections; median (min{DASH}max).",
        "",
        f"Machine: {machine_line(result['machine'])}.",
        "",
        f"Gateway source: {result['gateway_source']}.",
        "",
        f"Load average (1/5/15 min) at start {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}, "
        f"at end {la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f}; 1-minute load average when each "
        f"measurement started: median {_load_median(result['records'])}. The machine is "
        "shared, so the CPU-per-GB and CPU-per-connection rows compare better than the rates.",
        "",
        f"Command: `{result['command']}`",
        "",
        table(result["summary"], plan["variants"]),
    ]
    added = added_latency_table(result["records"])
    if added:
        parts += ["", added]
    extra = workers_findings(result["records"]) + notes(result["records"])
    if extra:
        parts += ["", *[f"* {n}" for n in extra]]
    return "\n".join(parts) + "\n"


def update_docs(path: Path, body: str, block: str = "results") -> None:
    """Replace one generated block of docs/benchmarks.md; the rest of the file is kept."""
    start, end = f"<!-- bench:{block}:start -->", f"<!-- bench:{block}:end -->"
    generated = f"{start}\n{body}{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = re.sub(
            re.escape(start) + r".*?" + re.escape(end), lambda _: generated, text, flags=re.S
        )
    else:
        title = {"results": "Latest results", "profile": "Latest profile"}.get(block, block)
        text = text.rstrip() + f"\n\n## {title}\n\n{generated}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
