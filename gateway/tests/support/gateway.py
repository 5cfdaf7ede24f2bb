"""Run a real ``clusterlink-gateway`` process for tests, with its own config, certs and state."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from clusterlink_gateway.client import AdminClient

from .pki import Issued, TestCA

BIN = Path(sys.executable).parent


class GatewayProcess:
    """A gateway daemon in a temporary directory; ``client`` talks to its admin socket."""

    def __init__(
        self,
        root: Path,
        name: str,
        ca: TestCA,
        *,
        extra: dict[str, Any] | None = None,
        peer_name: str | None = None,
    ) -> None:
        self.root = root / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.peer_name = peer_name or name
        self.tls_dir = self.root / "tls"
        self.install_tls(ca.issue(self.peer_name), ca.ca_path.read_bytes())
        self.socket = self.root / "admin.sock"
        self.config: dict[str, Any] = {
            "peer_name": self.peer_name,
            "listen": {"address": "127.0.0.1", "port": free_port()},
            "tls": {
                "cert": str(self.tls_dir / "gateway.crt"),
                "key": str(self.tls_dir / "gateway.key"),
                "ca": str(self.tls_dir / "ca-bundle.pem"),
            },
            "admin": {"socket": str(self.socket), "socket_group": None},
            "state_dir": str(self.root / "state"),
            "imports": {"bind": "127.0.0.1", "port_range": [41000, 41999]},
            "log": {"level": "debug", "format": "json"},
        }
        _merge(self.config, extra or {})
        self.config_path = self.root / "gateway.yaml"
        self.log_path = self.root / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = AdminClient(str(self.socket), timeout=10)

    def install_tls(self, issued: Issued, bundle: bytes) -> None:
        """Put a certificate, key and CA bundle in place, each by an atomic rename."""
        self.tls_dir.mkdir(exist_ok=True)
        for target, data in (
            ("ca-bundle.pem", bundle),
            ("gateway.key", issued.key.read_bytes()),
            ("gateway.crt", issued.cert.read_bytes()),
        ):
            tmp = self.tls_dir / f".{target}.tmp"
            tmp.write_bytes(data)
            tmp.chmod(0o600)
            os.replace(tmp, self.tls_dir / target)

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))

    def start(
        self,
        wait: bool = True,
        *,
        prefix: list[str] | None = None,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> GatewayProcess:
        """Start the daemon (behind ``prefix``, e.g. a launcher, with extra ``env``)."""
        self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        argv = [str(BIN / "clusterlink-gateway"), "--config", str(self.config_path)]
        self.proc = subprocess.Popen(
            [*(prefix or []), *argv],
            stdout=log,
            stderr=log,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
            pass_fds=pass_fds,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway {self.name} exited: {self.log_tail()}")
            try:
                if self.client.raw("GET", "/readyz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"gateway {self.name} not ready: {self.log_tail()}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def stored(client: AdminClient, plural: str) -> list[dict[str, Any]]:
    """The objects of a kind without their live status: what the store holds."""
    return [{k: v for k, v in o.items() if k != "status"} for o in client.list(plural)]


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
