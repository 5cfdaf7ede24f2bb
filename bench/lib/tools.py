"""The external tools (Debian packages), their versions, and what machine this is."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .proc import BenchError

# Debian package -> the command it provides
PACKAGES = {
    "iperf3": "iperf3",
    "stunnel4": "stunnel4",
    "wrk": "wrk",
    "nginx-light": "nginx",
}
PY_SPY_REQUIREMENT = (Path(__file__).resolve().parent.parent / "requirements.txt").read_text()


def ensure_tools(install: bool = True) -> None:
    """Install the Debian packages whose command is missing (apt-get, as root)."""
    missing = [pkg for pkg, cmd in PACKAGES.items() if shutil.which(cmd) is None]
    if not missing:
        return
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(
            f"missing tools: {', '.join(missing)}; install them (apt-get install -y "
            f"{' '.join(missing)}) or run as root on Debian"
        )
    print(f"bench: installing {' '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    still = [pkg for pkg, cmd in PACKAGES.items() if shutil.which(cmd) is None]
    if still:
        raise BenchError(f"apt-get did not provide: {', '.join(still)}")


def venv_bin() -> Path:
    """The directory of the Python running the harness (the project's .venv)."""
    return Path(sys.executable).parent


def ensure_py_spy() -> Path:
    """py-spy in the harness's venv, at the version pinned in bench/requirements.txt."""
    exe = venv_bin() / "py-spy"
    pin = PY_SPY_REQUIREMENT.strip().split("==")[1]
    if exe.exists() and pin in _output([str(exe), "--version"]):
        return exe
    subprocess.run(
        [str(venv_bin() / "python"), "-m", "pip", "install", "-q", f"py-spy=={pin}"], check=True
    )
    return exe


def gateway_source(repo: Path, ref: str | None, workdir: Path) -> tuple[dict[str, str], str]:
    """Copy the gateway's source (the working tree, or git revision ``ref``) into ``workdir``
    and return the environment that runs the gateway from that copy, so that edits made while
    the benchmark runs do not change it halfway; plus a description for the report."""
    target = workdir / "gateway-src"
    head = _output(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    if ref is None:
        src = repo / "gateway" / "src"
        shutil.copytree(
            src, target / "gateway" / "src", ignore=shutil.ignore_patterns("__pycache__")
        )
        dirty = _output(["git", "-C", str(repo), "status", "--porcelain", "--", "gateway/src"])
        digest = hashlib.sha256()
        for path in sorted((target / "gateway" / "src").rglob("*.py")):
            digest.update(path.read_bytes())
        what = f"working tree at {head}" + (
            f" + uncommitted changes (sources sha256 {digest.hexdigest()[:12]})" if dirty else ""
        )
    else:
        commit = _output(["git", "-C", str(repo), "rev-parse", "--short", f"{ref}^{{commit}}"])
        if not commit or " " in commit:
            raise BenchError(f"--gateway-ref {ref!r}: {commit or 'unknown revision'}")
        target.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", commit, "gateway/src"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
        what = f"{ref} ({commit})"
    return {**os.environ, "PYTHONPATH": str(target / "gateway" / "src")}, what


def _output(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (proc.stdout + proc.stderr).strip()


def _first(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    return match.group(1) if match else "?"


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, memory, kernel, distribution, Python/uvloop/OpenSSL and tool versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    meminfo = Path("/proc/meminfo").read_text()
    gw_py = str(venv_bin() / "python")
    probe = _output(
        [
            gw_py,
            "-c",
            "import platform, ssl, uvloop, h2, clusterlink_gateway as g; "
            "print(platform.python_version(), uvloop.__version__, h2.__version__, "
            "getattr(g, '__version__', '?'), '|', ssl.OPENSSL_VERSION)",
        ]
    )
    head, _, openssl = probe.partition("|")
    versions = (head.split() + ["?"] * 4)[:4]
    try:
        distro = Path("/etc/debian_version").read_text().strip()
        distro = f"Debian {distro}"
    except OSError:
        distro = platform.platform()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _first(r"model name\s*:\s*(.+)", cpuinfo),
        "mem_gib": round(int(_first(r"MemTotal:\s*(\d+)", meminfo)) / 2**20, 1),
        "kernel": platform.release(),
        "distro": distro,
        "python": versions[0],
        "uvloop": versions[1],
        "h2": versions[2],
        "gateway": versions[3],
        "openssl_python": openssl.strip(),
        "openssl_cli": _output(["openssl", "version"]),
        "iperf3": _first(r"iperf (\S+)", _output(["iperf3", "--version"])),
        "stunnel": _first(r"stunnel (\S+)", _output(["stunnel4", "-version"])),
        "stunnel_openssl": _first(
            r"Compiled with (OpenSSL \S+)", _output(["stunnel4", "-version"])
        ),
        "wrk": _first(r"wrk (\S+)", _output(["wrk", "-v"])),
        "nginx": _first(r"nginx/(\S+)", _output(["nginx", "-v"])),
    }
