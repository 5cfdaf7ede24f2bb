"""The three ways from a client to a sink: direct, an stunnel pair, a clusterlink-gateway pair.

Each measurement starts a fresh pair (``with make_tunnel(...) as tunnel``) and stops it by PID
afterwards. ``tunnel.port`` is where the load generator connects; ``tunnel.pids`` are the two
tunnel processes whose CPU and memory are measured.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from .pki import Pki
from .proc import BenchError, Procs, descendants, listeners, wait_listening
from .sinks import Sinks, free_port
from .tools import venv_bin

STUNNEL_CLIENT = """\
foreground = yes
pid =
debug = 4
syslog = no
[imp]
client = yes
accept = 127.0.0.1:{accept}
connect = 127.0.0.1:{connect}
cert = {cert}
key = {key}
CAfile = {ca}
verifyChain = yes
checkHost = gw-b
sslVersionMin = TLSv1.3
"""

STUNNEL_SERVER = """\
foreground = yes
pid =
debug = 4
syslog = no
[exp]
accept = 127.0.0.1:{accept}
connect = 127.0.0.1:{connect}
cert = {cert}
key = {key}
CAfile = {ca}
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
"""

ALLOW_ALL = {"name": "allow-all", "spec": {"action": "allow", "from": [{}], "to": [{}]}}


@dataclass
class Context:
    """What every tunnel needs: process control, a scratch directory, certificates, sinks."""

    procs: Procs
    workdir: Path
    pki: Pki
    sinks: Sinks
    gateway_log_level: str = "info"
    gateway_env: dict[str, str] | None = None  # e.g. PYTHONPATH of another source tree
    base_env: dict[str, str] | None = None  # variant gateway-base: the --base-ref source tree
    serial: int = 0

    def next_name(self, variant: str) -> str:
        self.serial += 1
        return f"{self.serial:03d}-{variant}"


class Tunnel:
    """A tunnel in front of one sink (``kind``: iperf, http or hold)."""

    variant = "?"
    fds_per_conn = 1  # file descriptors one relayed connection takes in the busiest process

    def __init__(self, ctx: Context, kind: str) -> None:
        self.ctx = ctx
        self.kind = kind
        self.target = ctx.sinks.port(kind)
        self.port = self.target
        self.procs: list[subprocess.Popen[bytes]] = []
        self.roles: dict[str, int] = {}  # "gw-a"/"gw-b" (/"gw-r", a relay) -> pid
        self.info: dict[str, Any] = {}
        self.relay_cpu: float | None = None  # CPU-s of the relay alone in the last load

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> None:
        pass

    def check_alive(self) -> None:
        self.ctx.procs.check_alive(*self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            self.ctx.procs.stop(proc)

    def __enter__(self) -> Tunnel:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Direct(Tunnel):
    variant = "direct"


class StunnelPair(Tunnel):
    """stunnel4 client mode (gw-A) -> TLS 1.3 mTLS -> stunnel4 server mode (gw-B)."""

    variant = "stunnel"
    fds_per_conn = 2  # both ends of a connection live in each stunnel process

    def start(self) -> None:
        ctx = self.ctx
        name = ctx.next_name(self.variant)
        root = ctx.workdir / name
        root.mkdir(parents=True)
        server_port, client_port = free_port(), free_port()
        server_conf = root / "gw-b.conf"
        server_conf.write_text(
            STUNNEL_SERVER.format(
                accept=server_port,
                connect=self.target,
                cert=ctx.pki.cert("gw-b"),
                key=ctx.pki.key("gw-b"),
                ca=ctx.pki.ca,
            )
        )
        client_conf = root / "gw-a.conf"
        client_conf.write_text(
            STUNNEL_CLIENT.format(
                accept=client_port,
                connect=server_port,
                cert=ctx.pki.cert("gw-a"),
                key=ctx.pki.key("gw-a"),
                ca=ctx.pki.ca,
            )
        )
        server = ctx.procs.spawn(f"{name}-gw-b", ["stunnel4", str(server_conf)])
        self.procs.append(server)
        self.roles["gw-b"] = server.pid
        wait_listening(ctx.procs, [server_port], [server])
        client = ctx.procs.spawn(f"{name}-gw-a", ["stunnel4", str(client_conf)])
        self.procs.append(client)
        self.roles["gw-a"] = client.pid
        wait_listening(ctx.procs, [client_port], [client])
        self.port = client_port


class GatewayPair(Tunnel):
    """clusterlink-gateway gw-A (importer) -> HTTP/2 over TLS 1.3 mTLS -> gw-B (exporter).

    gw-B exports the sink as ``kind`` and the hold sink as ``probe``; gw-A has peer gw-b and
    imports both. Allow-all policies on both. Ready when a probe connection gets the hold
    sink's greeting through the pair. With ``reverse`` (variant ``gateway-reverse``), gw-B is
    an outbound-only site: gw-A holds it with ``dial: false`` and reaches it over the reverse
    links gw-B opens. With ``relay`` (variant ``gateway-relay``), gw-A and gw-B are both
    outbound-only and reach each other through a third gateway, gw-R (``relay.enabled``): each
    dials gw-R, holds the other with ``dial: false, via: [gw-r]``, and runs its own mTLS with
    the other inside the relayed stream; gw-R splices ciphertext (its CPU is also measured
    alone, ``relay_pid``).
    """

    variant = "gateway"

    def __init__(
        self,
        ctx: Context,
        kind: str,
        workers: int = 1,
        reverse: bool = False,
        *,
        relay: bool = False,
        base: bool = False,
        audit: str | None = None,
    ) -> None:
        super().__init__(ctx, kind)
        self.workers = workers
        self.reverse = reverse
        self.env = ctx.base_env if base else ctx.gateway_env
        self.audit = audit  # log.audit; None: not set (the default, and older sources lack it)
        if base:
            self.variant = "gateway-base"
        if audit is not None:
            self.variant = f"gateway-audit-{audit}"
        if workers > 1:
            self.variant = f"gateway-w{workers}"
        if reverse:
            self.variant = "gateway-reverse"
        self.relay = relay
        if relay:
            self.variant = "gateway-relay"

    @property
    def relay_pid(self) -> int | None:
        """The relay gateway's process (variant gateway-relay), None otherwise."""
        return self.roles.get("gw-r")

    def _config(self, root: Path, peer: str, listen_port: int) -> Path:
        config = {
            "peer_name": peer,
            "listen": {"address": "127.0.0.1", "port": listen_port},
            "tls": {
                "cert": str(self.ctx.pki.cert(peer)),
                "key": str(self.ctx.pki.key(peer)),
                "ca": str(self.ctx.pki.ca),
            },
            "admin": {"socket": str(root / f"{peer}.sock"), "socket_group": None},
            "state_dir": str(root / f"{peer}-state"),
            "imports": {"bind": "127.0.0.1"},
            "log": {"level": self.ctx.gateway_log_level, "format": "json"},
            "workers": self.workers,
        }
        if self.audit is not None:
            config["log"]["audit"] = self.audit
        if peer == "gw-r":
            config["relay"] = {
                "enabled": True,
                "policies": [
                    {
                        "name": "any-pair",
                        "action": "allow",
                        "from": [{}],
                        "to": [{}],
                    }
                ],
            }
        path = root / f"{peer}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _spawn(self, role: str, name: str, config: Path) -> tuple[subprocess.Popen[bytes], Any]:
        from clusterlink_gateway.client import AdminClient

        proc = self.ctx.procs.spawn(
            name,
            [str(venv_bin() / "clusterlink-gateway"), "--config", str(config)],
            env=self.env,
        )
        self.procs.append(proc)
        self.roles[role] = proc.pid
        data = yaml.safe_load(config.read_text())
        client = AdminClient(data["admin"]["socket"], timeout=10)
        deadline = time.monotonic() + 30
        while True:
            self.ctx.procs.check_alive(proc)
            try:
                if client.raw("GET", "/readyz").status == 200:
                    return proc, client
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{name} not ready after 30 s:\n{self.ctx.procs.log_tail(name)}")
            time.sleep(0.05)

    def start(self) -> None:
        if self.relay:
            self._start_relayed()
            return
        ctx = self.ctx
        name = ctx.next_name(self.variant)
        root = ctx.workdir / name
        root.mkdir(parents=True)
        b_port, a_port = free_port(), free_port()
        _, b = self._spawn("gw-b", f"{name}-gw-b", self._config(root, "gw-b", b_port))
        for export, port in ((self.kind, self.target), ("probe", ctx.sinks.hold)):
            b.create("exports", {"name": export, "spec": {"host": "127.0.0.1", "port": port}})
        b.create("policies", ALLOW_ALL)
        # gw-b admits gw-a on its peer port only with a Peer object for it
        b.create(
            "peers",
            {"name": "gw-a", "spec": {"gateways": [{"host": "127.0.0.1", "port": a_port}]}},
        )
        _, a = self._spawn("gw-a", f"{name}-gw-a", self._config(root, "gw-a", a_port))
        b_spec: dict[str, Any] = {"gateways": [{"host": "127.0.0.1", "port": b_port}]}
        a.create("peers", {"name": "gw-b", "spec": {"dial": False} if self.reverse else b_spec})
        a.create("policies", ALLOW_ALL)
        self._imports(a)

    def _imports(self, a: Any) -> None:
        """gw-a imports the sink and the probe from gw-b; then waits until traffic passes."""
        self.port = free_port()
        probe_port = free_port()
        for imp, port in ((self.kind, self.port), ("probe", probe_port)):
            a.create(
                "imports",
                {"name": imp, "spec": {"port": port, "sources": [{"peer": "gw-b", "export": imp}]}},
            )
        self._finish(a, probe_port)

    def _start_relayed(self) -> None:
        """gw-r (relay, accepts both), then gw-b and gw-a, each dialing gw-r only."""
        ctx = self.ctx
        name = ctx.next_name(self.variant)
        root = ctx.workdir / name
        root.mkdir(parents=True)
        r_port, b_port, a_port = free_port(), free_port(), free_port()
        _, r = self._spawn("gw-r", f"{name}-gw-r", self._config(root, "gw-r", r_port))
        for end in ("gw-a", "gw-b"):
            r.create("peers", {"name": end, "spec": {"dial": False}})
        hub = {"name": "gw-r", "spec": {"gateways": [{"host": "127.0.0.1", "port": r_port}]}}
        _, b = self._spawn("gw-b", f"{name}-gw-b", self._config(root, "gw-b", b_port))
        for export, port in ((self.kind, self.target), ("probe", ctx.sinks.hold)):
            b.create("exports", {"name": export, "spec": {"host": "127.0.0.1", "port": port}})
        b.create("policies", ALLOW_ALL)
        b.create("peers", hub)
        b.create("peers", {"name": "gw-a", "spec": {"dial": False, "via": ["gw-r"]}})
        _, a = self._spawn("gw-a", f"{name}-gw-a", self._config(root, "gw-a", a_port))
        a.create("peers", hub)
        a.create("peers", {"name": "gw-b", "spec": {"dial": False, "via": ["gw-r"]}})
        a.create("policies", ALLOW_ALL)
        self._imports(a)

    def _finish(self, a: Any, probe_port: int) -> None:
        """gw-a's imports listen and a probe connection gets through."""
        ctx = self.ctx
        wait_listening(ctx.procs, [self.port, probe_port], self.procs)
        self._wait_workers_listening()
        self._probe(probe_port)
        self.info = {
            "workers_requested": self.workers,
            "processes": {p.pid: len(descendants(p.pid)) for p in self.procs},
            "import_listeners": listeners(self.port),
        }

    def _wait_workers_listening(self, timeout: float = 10.0) -> None:
        """Workers bind an import's port shortly after the main process: wait for all of them
        (the count is reported as it is when the time runs out)."""
        deadline = time.monotonic() + timeout
        while self.workers > 1 and listeners(self.port) < self.workers:
            if time.monotonic() > deadline:
                return
            self.check_alive()
            time.sleep(0.05)

    def _probe(self, port: int, timeout: float = 30.0) -> None:
        """Wait until a connection through the pair reaches the hold sink."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    if sock.recv(1) == b"+":
                        return
                    last = "connection closed without the sink's greeting"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise BenchError(f"gateway pair carries no traffic after {timeout} s: {last}")


def make_tunnel(ctx: Context, variant: str, kind: str) -> Tunnel:
    if variant == "direct":
        return Direct(ctx, kind)
    if variant == "stunnel":
        return StunnelPair(ctx, kind)
    if variant == "gateway":
        return GatewayPair(ctx, kind)
    if variant == "gateway-base":
        if ctx.base_env is None:
            raise ValueError("variant gateway-base needs --base-ref")
        return GatewayPair(ctx, kind, base=True)
    if variant.startswith("gateway-audit-"):
        return GatewayPair(ctx, kind, audit=variant.removeprefix("gateway-audit-"))
    if variant == "gateway-reverse":
        return GatewayPair(ctx, kind, reverse=True)
    if variant == "gateway-relay":
        return GatewayPair(ctx, kind, relay=True)
    if variant.startswith("gateway-w"):
        return GatewayPair(ctx, kind, workers=int(variant.removeprefix("gateway-w")))
    raise ValueError(f"unknown variant {variant!r}")
