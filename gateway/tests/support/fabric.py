"""Several real gateway processes sharing one fabric CA, with echo services, on loopback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from clusterlink_gateway.client import AdminClient, APIError

from .gateway import GatewayProcess
from .pki import TestCA
from .traffic import EchoServer

FAST_HEARTBEAT = {
    "interval": 0.2,
    "unreachable_interval": 0.5,
    "timeout": 1.0,
    "failures_down": 5,
    "successes_up": 3,
}
ALLOW_ALL = {"name": "allow-all", "spec": {"action": "allow", "from": [{}], "to": [{}]}}


class Fabric:
    """``fabric["cl0"]`` starts gateway cl0 (and an echo service answering "cl0") on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = TestCA(root / "pki")
        self.gateways: dict[str, GatewayProcess] = {}
        self.echo: dict[str, EchoServer] = {}

    def start(
        self,
        name: str,
        extra: dict[str, Any] | None = None,
        launch: Callable[[GatewayProcess], None] | None = None,
        **kw: Any,
    ) -> GatewayProcess:
        """Start gateway ``name`` (with ``launch(gateway)`` instead of ``gateway.start()``)."""
        config = {"heartbeat": FAST_HEARTBEAT, "dataplane": {"connect_timeout": 2.0}}
        for key, value in (extra or {}).items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        gw = GatewayProcess(self.root, name, self.ca, extra=config, **kw)
        if launch is None:
            gw.start()
        else:
            launch(gw)
        self.gateways[name] = gw
        self.echo[name] = EchoServer(name)
        return gw

    def __getitem__(self, name: str) -> GatewayProcess:
        return self.gateways.get(name) or self.start(name)

    def client(self, name: str) -> AdminClient:
        return self[name].client

    def endpoint(self, name: str) -> dict[str, Any]:
        listen = self[name].config["listen"]
        return {"host": listen["address"], "port": listen["port"]}

    def add_peer(
        self,
        on: str,
        peer: str,
        labels: dict[str, str] | None = None,
        *,
        mutual: bool = True,
        **spec: Any,
    ) -> None:
        """Peer ``on`` with ``peer`` (replacing an existing Peer object of that name) and, with
        ``mutual``, make sure ``peer`` has a Peer object for ``on`` too: a peer port admits only
        the names of its Peer objects, and a real fabric (site.yml) is a full mesh."""
        if mutual:  # first, so that ``on``'s first dial is admitted
            self.ensure_peer(peer, on)
        body = {
            "name": peer,
            "labels": labels or {},
            "spec": {"gateways": [self.endpoint(peer)], **spec},
        }
        client = self.client(on)
        try:
            client.create("peers", body)
        except APIError as exc:
            if exc.status != 409:
                raise
            client.replace("peers", peer, body)

    def ensure_peer(self, on: str, peer: str) -> None:
        """``on`` has a Peer object named ``peer`` (created without labels if missing)."""
        body = {"name": peer, "spec": {"gateways": [self.endpoint(peer)]}}
        try:
            self.client(on).create("peers", body)
        except APIError as exc:
            if exc.status != 409:
                raise

    def export_echo(self, on: str, name: str = "http-echo", **spec: Any) -> None:
        gateway = self[on]  # started with its echo service on first use
        body = {"host": "127.0.0.1", "port": self.echo[gateway.name].port, **spec}
        self.client(on).create("exports", {"name": name, "spec": body})

    def allow_all(self, *names: str) -> None:
        for name in names:
            self.client(name).create("policies", ALLOW_ALL)

    def echo_port(self, name: str) -> int:
        return self.echo[self[name].name].port

    def import_port(self, on: str, name: str) -> int:
        return int(self.client(on).get("imports", name)["status"]["port"])

    def link_service(self, exporter: str, importer: str, name: str, port: int) -> int:
        """``exporter`` exports 127.0.0.1:``port`` as ``name``, both allow all, ``importer``
        peers with it and imports ``name``; returns the import's port."""
        self.client(exporter).create("exports", {"name": name, "spec": {"port": port}})
        self.allow_all(exporter, importer)
        self.add_peer(importer, exporter)
        self.client(importer).create(
            "imports", {"name": name, "spec": {"sources": [{"peer": exporter}]}}
        )
        return self.import_port(importer, name)

    def close(self) -> None:
        for gw in self.gateways.values():
            gw.stop()
        for echo in self.echo.values():
            echo.close()
