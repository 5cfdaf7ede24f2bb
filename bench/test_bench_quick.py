"""The benchmark harness in quick mode: every case produced a number and traffic flowed.

No assertion on how fast anything is (the machine is shared; see docs/benchmarks.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
NUMBERS = {
    "tcp-1": ["gbps", "bytes"],
    "tcp-8": ["gbps", "bytes"],
    "http-keepalive": ["rate", "requests", "p50_ms", "p99_ms"],
    "http-close": ["rate", "requests", "p50_ms", "p99_ms"],
    "idle": ["opened", "kib_per_conn"],
    "rr-1": ["round_trips", "p50_us", "p99_us"],
}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_mode(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [out] = tmp_path.glob("*.json")
    result = json.loads(out.read_text())
    assert result["ok"] and not result["fatal"]
    seen = set()
    for rec in result["records"]:
        assert "error" not in rec, rec
        seen.add((rec["case"], rec["variant"]))
        for key in NUMBERS[rec["case"]]:
            assert rec[key] > 0, (rec["case"], rec["variant"], key, rec[key])
        if rec["variant"] != "direct":
            assert rec.get("cpu_s", 1) >= 0
        if rec["case"] == "idle":
            assert rec["opened"] == rec["requested"], rec
        if rec["case"].startswith("http"):
            assert rec["errors"]["status"] == 0, rec
    expected = {(c, v) for c in NUMBERS for v in ("direct", "stunnel", "gateway")}
    expected.discard(("idle", "direct"))
    assert seen == expected
    assert "| metric |" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mesh_case_reports_every_figure(tmp_path: Path) -> None:
    """Three gateways in a full mesh: every pair reachable, and each figure measured."""
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "mesh.py"),
            "--sizes",
            "3",
            "--idle-seconds",
            "3",
            "--results-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = tmp_path.glob("mesh-*.json")
    (record,) = json.loads(result.read_text())["records"]
    assert record["pairs_reachable"] == record["pairs"] == 6, record
    for key in ("reachable_after_last_s", "apply_one_s", "idle_run_ms_per_peer_s"):
        assert record[key] >= 0, record
    assert record["rss_idle_mib"]["median"] > 0 and record["links"] >= 2, record
