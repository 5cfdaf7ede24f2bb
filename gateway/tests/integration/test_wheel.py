"""The gateway builds as a wheel and its commands work from a fresh virtualenv."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_wheel_installs_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT / "gateway")],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheels = list(dist.glob("clusterlink_gateway-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = env_dir / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", str(wheels[0])], check=True, timeout=600)
    version = subprocess.run(
        [str(env_dir / "bin" / "clusterlink-gateway"), "--version"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "clusterlink-gateway 0.1.0" in version.stdout
    helptext = subprocess.run(
        [str(env_dir / "bin" / "gwctl"), "--help"], check=True, capture_output=True, text=True
    )
    for command in ("get", "create", "update", "delete", "apply", "status"):
        assert command in helptext.stdout
    # the fabric page's files are package data: in the wheel, read from the installed package
    page = (
        "from clusterlink_gateway.telemetry.listener import ASSETS, load_assets;"
        "assets = load_assets(); assert set(assets) == set(ASSETS), assets;"
        "assert all(body for body, _ in assets.values());"
        "assert b'fabric.json' in assets['/app.js'][0]"
    )
    subprocess.run([str(env_dir / "bin" / "python"), "-c", page], check=True, cwd=tmp_path)
    # uvloop is a real dependency of the installed daemon, not just of the dev venv
    subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import uvloop, h2, aiohttp"], check=True
    )
