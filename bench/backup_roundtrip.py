"""Time ``gwctl export`` and ``gwctl apply`` of a 300-object gateway onto a fresh one.

Run: ``.venv/bin/python bench/backup_roundtrip.py`` (real gateway processes on loopback).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway" / "tests"))

from support.gateway import BIN, GatewayProcess
from support.pki import TestCA


def gwctl(gw: GatewayProcess, *args: str) -> str:
    cmd = [str(BIN / "gwctl"), "--socket", str(gw.socket), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def main() -> None:
    root = Path(tempfile.mkdtemp())
    ca = TestCA(root / "pki")
    quiet = {"log": {"level": "warning"}}
    old = GatewayProcess(root / "old", "cl0", ca, extra=quiet).start()
    new = GatewayProcess(root / "new", "cl0", ca, extra=quiet)
    backup = root / "backup.yaml"
    try:
        gateways = [{"host": "127.0.0.1", "port": 9}]
        for i in range(50):
            old.client.create("peers", {"name": f"p{i}", "spec": {"gateways": gateways}})
        for i in range(200):
            spec = {"sources": [{"peer": f"p{i % 50}"}]}  # port 0: allocated
            old.client.create("imports", {"name": f"i{i}", "spec": spec})
        for i in range(50):
            spec = {"action": "allow", "from": [{}], "to": [{}]}
            old.client.create("policies", {"name": f"a{i}", "spec": spec})
        ports = {i["name"]: i["status"]["port"] for i in old.client.list("imports")}
        t0 = time.monotonic()
        gwctl(old, "export", "-f", str(backup))
        t_export = time.monotonic() - t0
        t0 = time.monotonic()
        for _ in range(20):
            old.client.status()
        t_status = (time.monotonic() - t0) / 20
        old.stop()
        new.start()
        t0 = time.monotonic()
        gwctl(new, "apply", "-f", str(backup))
        t_apply = time.monotonic() - t0
        t0 = time.monotonic()
        again = json.loads(gwctl(new, "-o", "json", "apply", "-f", str(backup)))
        t_again = time.monotonic() - t0
        restored = {i["name"]: i["status"]["port"] for i in new.client.list("imports")}
        print(
            f"300 objects ({backup.stat().st_size} bytes): export {t_export:.2f} s, "
            f"apply on an empty gateway {t_apply:.2f} s, again {t_again:.2f} s "
            f"({'all unchanged' if {r['result'] for r in again} == {'unchanged'} else 'CHANGED'}), "
            f"GET /v1/status {t_status * 1000:.1f} ms; import ports kept: {restored == ports}"
        )
    finally:
        old.stop()
        new.stop()


if __name__ == "__main__":
    main()
