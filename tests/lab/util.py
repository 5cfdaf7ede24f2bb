"""Small helpers shared by the lab modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path


class LabError(RuntimeError):
    """A lab operation failed."""


def log(msg: str) -> None:
    """Progress message on stderr (stdout is kept for machine-readable output)."""
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(
    cmd: list[str], *, check: bool = True, input: str | None = None, timeout: float | None = 60
) -> subprocess.CompletedProcess[str]:
    """Run a local command, capturing text output; raise LabError on failure if ``check``."""
    try:
        proc = subprocess.run(
            cmd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(cmd)}") from exc
    if check and proc.returncode != 0:
        raise LabError(
            f"command failed (rc={proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}"
        )
    return proc


def mountpoints() -> list[str]:
    """Every mount point of this mount namespace."""
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4].replace("\\040", " ") for line in f]


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    prefix = str(path).rstrip("/") + "/"
    found = [p for p in mountpoints() if p == str(path) or p.startswith(prefix)]
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """``rm -rf`` that first unmounts whatever is mounted below ``path`` and never crosses a mount.

    (debootstrap mounts /proc and /sys into its target; an interrupted build leaves them.)
    """
    for point in mounts_under(path):
        if run(["umount", point], check=False).returncode != 0:
            run(["umount", "--lazy", point])
    if mounts_under(path):
        raise LabError(f"mounts remain under {path}; not deleting it")
    if path.exists():
        shutil.rmtree(path)
