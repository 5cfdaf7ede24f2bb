"""The daemon's configuration file (``/etc/clusterlink/gateway.yaml``).

Objects (peers, exports, imports, policies) are not configured here: they live in the store and
are managed through the admin API.
"""

from __future__ import annotations

import grp
import ssl
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from .model.common import IPAddress, Labels, Name, Port, Strict
from .model.errors import format_validation_error
from .peering.gate import MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE

DEFAULT_CONFIG_PATH = Path("/etc/clusterlink/gateway.yaml")


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid."""


class TLSFiles(Strict):
    cert: Path = Path("/etc/clusterlink/tls/gateway.crt")
    key: Path = Path("/etc/clusterlink/tls/gateway.key")
    ca: Path = Path("/etc/clusterlink/tls/ca-bundle.pem")


class PeerListener(Strict):
    address: IPAddress = "0.0.0.0"
    port: Port = 443
    handshake_timeout: float = Field(
        default=5.0, gt=0, le=300, description="from TCP accept to a completed TLS handshake"
    )
    max_handshakes: int = Field(
        default=MAX_HANDSHAKES,
        ge=1,
        le=65536,
        description="unauthenticated connections at once; further ones are reset at accept",
    )
    max_handshakes_per_source: int = Field(
        default=MAX_HANDSHAKES_PER_SOURCE,
        ge=1,
        le=65536,
        description="unauthenticated connections at once from one IPv4 address or IPv6 /64",
    )

    @model_validator(mode="after")
    def _per_source_within_total(self) -> PeerListener:
        if self.max_handshakes_per_source > self.max_handshakes:
            raise ValueError(
                "max_handshakes_per_source must not exceed max_handshakes "
                f"({self.max_handshakes_per_source} > {self.max_handshakes})"
            )
        return self


class AdminTCP(Strict):
    """Optional admin listener over TLS; clients need a certificate from the admin CA."""

    address: IPAddress = "127.0.0.1"
    port: Port = 9443
    cert: Path
    key: Path
    client_ca: Path = Field(description="admin CA bundle; never the fabric CA")


class Admin(Strict):
    socket: Path = Path("/run/clusterlink/admin.sock")
    socket_mode: int = Field(default=0o660, ge=0, le=0o777)
    socket_group: str | None = "clusterlink"
    tcp: AdminTCP | None = None
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)


class Imports(Strict):
    bind: IPAddress = "0.0.0.0"
    port_range: tuple[Port, Port] = (30000, 32767)

    @model_validator(mode="after")
    def _range_ordered(self) -> Imports:
        if self.port_range[0] > self.port_range[1]:
            raise ValueError("port_range: first port must not exceed the second")
        return self


class Heartbeat(Strict):
    interval: float = Field(default=1.0, gt=0, le=3600)
    unreachable_interval: float = Field(default=10.0, gt=0, le=3600)
    timeout: float = Field(default=3.0, gt=0, le=60)
    failures_down: int = Field(default=5, ge=1, le=100)
    successes_up: int = Field(default=3, ge=1, le=100)


class Dataplane(Strict):
    links_per_peer: int = Field(default=2, ge=1, le=16, description="long-lived links per peer")
    connect_timeout: float = Field(
        default=3.0, gt=0, le=60, description="per source: dial a link and get the CONNECT answer"
    )
    handshake_timeout: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="new link: TLS handshake once TCP connected (waits out a peer's restart)",
    )
    dial_timeout: float = Field(default=3.0, gt=0, le=60, description="exporter -> export target")
    drain_timeout: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="at stop: how long relayed connections may finish before they are reset",
    )
    max_connections_per_import: int = Field(
        default=0, ge=0, description="open client connections per import; 0 = no limit"
    )
    idle_timeout: float = Field(
        default=0, ge=0, description="reset a relayed connection idle this long; 0 = never"
    )


class Logging(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class Config(Strict):
    peer_name: Name
    labels: Labels = Field(default_factory=dict)
    listen: PeerListener = Field(default_factory=PeerListener)
    tls: TLSFiles = Field(default_factory=TLSFiles)
    admin: Admin = Field(default_factory=Admin)
    state_dir: Path = Path("/var/lib/clusterlink")
    imports: Imports = Field(default_factory=Imports)
    heartbeat: Heartbeat = Field(default_factory=Heartbeat)
    dataplane: Dataplane = Field(default_factory=Dataplane)
    log: Logging = Field(default_factory=Logging)
    workers: int = Field(default=1, ge=1, le=64)


def load_config(path: Path) -> Config:
    """Read and validate a config file; ConfigError names the failing field."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a YAML mapping of settings")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from exc


def admin_tls_context(tcp: AdminTCP) -> ssl.SSLContext:
    """Server context for the admin TCP listener: client certificates from the admin CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(tcp.cert, tcp.key)
    ctx.load_verify_locations(cafile=str(tcp.client_ca))
    return ctx


def check_runtime(config: Config) -> list[str]:
    """Problems that only show on this host: unusable TLS files, a name the certificate
    does not carry, an unknown group."""
    from .peering.tls import TLSContexts, TLSError

    problems: list[str] = []
    try:
        name = TLSContexts(config.tls.cert, config.tls.key, config.tls.ca).local_name
    except TLSError as exc:
        problems.append(f"tls: cannot load certificate, key or CA bundle: {exc}")
    else:
        if name != config.peer_name:
            problems.append(
                f"peer_name: {config.peer_name!r} is not the name in the gateway certificate "
                f"({name!r})"
            )
    if config.admin.tcp is not None:
        try:
            admin_tls_context(config.admin.tcp)
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"admin.tcp: cannot load certificate, key or client CA: {exc}")
    group = config.admin.socket_group
    if group is not None:
        try:
            grp.getgrnam(group)
        except KeyError:
            problems.append(f"admin.socket_group: no such group {group!r}")
    return problems
